"""An automatic starting label for a latent, from n-gram counts over its top contexts (offline: no language
model). It says what the contexts share at the peak token; it is marked automatic wherever it is shown."""

import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple, Protocol


class _Context(Protocol):
    tokens: Sequence[str]
    center: int | None


class AutoLabel(NamedTuple):
    """The label text and how many of the contexts it describes."""

    text: str
    support: int
    """Contexts whose peak matches the label."""
    n_contexts: int


def auto_label(contexts: Sequence[_Context], min_share: float = 0.5) -> AutoLabel | None:
    """The most common bigram ending at the peak token if it covers at least `min_share` of the contexts, else the
    most common peak token if it does; None when nothing is shared by that many (or there are no contexts)."""
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
