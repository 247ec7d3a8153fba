"""The two dead-latent fractions the store holds, each named with its window.

Training logs `dead_fraction` as the share of latents idle for the trainer's dead window (the last
min(1M, a quarter of the run) training tokens); `saelab eval` stores `dead_fraction` as the share that never
fired on its held-out tokens. Different windows give different numbers for the same SAE, so the app always
shows them with their windows.
"""

import json
from collections.abc import Iterable
from typing import Any


def training_dead_window(run_config: Any) -> int | None:
    """Tokens a latent must stay idle during training to count as dead, from a `saelab train` run's config
    (None when the config does not say how many tokens and rows per step the run had)."""
    config = json.loads(run_config) if isinstance(run_config, str) else run_config
    if not isinstance(config, dict) or not config.get("tokens") or not config.get("batch_size"):
        return None
    from saelab.workflows.train import scheduled_trainer_config  # the schedule saelab train used

    return scheduled_trainer_config(int(config["tokens"]), int(config["batch_size"])).dead_window_tokens


def tokens_text(values: Iterable[float | None]) -> str:
    """Distinct token counts as '65,536 / 1,000,000' ('unknown' when none is known)."""
    known = sorted({int(v) for v in values if v is not None and v == v})
    return " / ".join(f"{v:,}" for v in known) if known else "unknown"


def dead_fraction_note(training_windows: Iterable[int | None], eval_tokens: Iterable[float | None]) -> str:
    """One paragraph naming both definitions with the windows of the SAEs shown."""
    return (
        "**dead_fraction** has two windows. In the training curves: the share of latents that have not "
        "fired "
        f"in the last {tokens_text(training_windows)} training tokens (the trainer's dead window: a quarter "
        "of the "
        "run, at most 1M). In the core metrics: the share that never fired on the "
        f"{tokens_text(eval_tokens)} "
        f"held-out tokens `saelab eval` read (n_tokens). The windows differ, so the numbers differ."
    )
