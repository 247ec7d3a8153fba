"""Labels of latents. A researcher's own label and note, saved from the feature page into the workspace store
(the one write the app makes); and an automatic starting label from n-gram counts over the top contexts
(offline: no language model), which says what the contexts share at the peak token and is marked automatic
wherever shown."""

import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from saelab.app_support.render import TokenContext
from saelab.db import ResultsStore

MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 5000


class AutoLabel(NamedTuple):
    """The label text and how many of the contexts it describes."""

    text: str
    support: int
    """Contexts whose peak matches the label."""
    n_contexts: int


def auto_label(contexts: Sequence[TokenContext], min_share: float = 0.5) -> AutoLabel | None:
    """The most common bigram ending at the peak token if it covers at least `min_share` of the contexts, else
    the most common peak token if it does; None when nothing is shared by that many (or there are no
    contexts)."""
    peaks = [c for c in contexts if c.center is not None and 0 <= c.center < len(c.tokens)]
    if not peaks:
        return None
    need = max(2, math.ceil(min_share * len(peaks)))
    bigrams = Counter(tuple(c.tokens[c.center - 1:c.center + 1]) for c in peaks if c.center > 0)
    if bigrams:
        (before, peak), count = bigrams.most_common(1)[0]
        if count >= need:
            return AutoLabel(f"{peak!r} after {before!r}", count, len(peaks))
    token, count = Counter(c.tokens[c.center] for c in peaks).most_common(1)[0]
    return AutoLabel(f"{token!r}", count, len(peaks)) if count >= need else None


def save_label(store: ResultsStore, sae_id: str, latent: int, label: str, note: str = "") -> bool:
    """Store a researcher's `label` and `note` for one latent, replacing any earlier one, in one short
    transaction; with both empty, remove it. A store from before labels existed is migrated forward first.
    Returns whether a label is stored now. Bad text raises ValueError naming it; nothing stored changes
    then."""
    label, note = label.strip(), note.strip()
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"a label is at most {MAX_LABEL_CHARS} characters, this one has {len(label)}: "
                         "shorten it and put the rest in the note")
    if len(note) > MAX_NOTE_CHARS:
        raise ValueError(
            f"a note is at most {MAX_NOTE_CHARS} characters, this one has {len(note)}: shorten it"
        )
    if note and not label:
        raise ValueError(
            "a note needs a label (a few words naming the latent): write one, or clear the note too "
            "to remove the label"
        )
    if latent < 0:
        raise ValueError(f"latent must be a non-negative index, got {latent}")
    rows = [{"sae_id": sae_id, "latent": int(latent), "label": label, "note": note or None}] if label else []
    store.initialize().replace_rows("feature_labels", {"sae_id": sae_id, "latent": int(latent)}, rows)
    return bool(rows)
