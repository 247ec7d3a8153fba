"""The whole loop on the bundled model, as `saelab demo` runs it. Returns what it did; printing is the CLI's."""

import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from saelab.db import ResultsStore
from saelab.models import load_model
from saelab.workspace import Workspace


@dataclass(frozen=True)
class DemoConfig:
    """What `saelab demo` runs."""

    model: str
    """Model name or directory (default: the bundled model)."""
    n_tokens: int = 512
    """Tokens of held-out Python source to run through the model."""
    seed: int = 0
    """Seed for everything random in the demo."""

    def __post_init__(self) -> None:
        if self.n_tokens <= 0:
            raise ValueError(f"n_tokens must be positive, got {self.n_tokens}")


class DemoStep(NamedTuple):
    name: str
    seconds: float
    detail: str


class DemoResult(NamedTuple):
    run_id: str
    db_path: Path
    steps: list[DemoStep]


def run_demo(workspace: Workspace, cfg: DemoConfig) -> DemoResult:
    """Load the model, run it on a few hundred tokens, record the run in the workspace's store."""
    steps: list[DemoStep] = []
    start = time.perf_counter()
    model = load_model(cfg.model)  # before the workspace is touched: a bad name changes nothing
    steps.append(
        DemoStep(
            "load model",
            time.perf_counter() - start,
            f"{cfg.model}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}",
        )
    )
    workspace.create()
    store = ResultsStore(workspace.db_path).initialize()
    run_id = store.start_run("demo", name=cfg.model, config=asdict(cfg))
    try:
        start = time.perf_counter()
        loss, n_tokens = _next_token_loss(model, cfg.n_tokens)
        steps.append(DemoStep("forward pass", time.perf_counter() - start,
                              f"next-token loss {loss:.3f} on {n_tokens} tokens of Python source"))
    except Exception as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done", "; ".join(f"{s.name}: {s.detail}" for s in steps))
    return DemoResult(run_id, workspace.db_path, steps)


def _next_token_loss(model, n_tokens: int) -> tuple[float, int]:
    text = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text(encoding="utf-8")
    tokens = model.to_tokens(text)[:, : min(n_tokens, model.cfg.n_ctx)]
    with torch.inference_mode():
        loss = model(tokens, return_type="loss")
    return float(loss), int(tokens.shape[1])
