"""Presentation helpers of the feature dashboard: token shading as escaped HTML, logit tables, histograms.

The JSON shapes read here are the ones `saelab.evals` writes into `features` (see /work/notes/app-formats.md);
older or foreign shapes (pairs instead of objects) are accepted too.
"""

import html
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍", "\x7f": "␡"}
_SHADE = "255, 106, 0"  # orange, as in the usual feature dashboards
_CENTER = " font-weight: bold; outline: 2px solid #b00; border-bottom: 3px solid #b00;"


def visible_token(token: str) -> str:
    """A token with its invisible characters drawn (newline, tab, other control characters as Unicode control
    pictures) so contexts read on one line."""
    return "".join(_VISIBLE.get(ch, chr(0x2400 + ord(ch)) if ord(ch) < 32 else ch) for ch in token)


def _alpha(value: float, scale: float) -> float:
    if scale <= 0 or not math.isfinite(value):
        return 0.0
    return max(0.0, min(1.0, value / scale))


def token_spans_html(tokens: Sequence[str], activations: Sequence[float], scale: float,
                     center: int | None = None) -> str:
    """One context as HTML: each token a <span> shaded by activation / scale; the `center` token underlined.

    Every token is HTML-escaped (text and tooltip), so a context containing markup shows as text.
    """
    if len(tokens) != len(activations):
        raise ValueError(f"{len(tokens)} tokens but {len(activations)} activations in one context")
    spans = []
    for i, (token, act) in enumerate(zip(tokens, activations, strict=True)):
        style = f"background-color: rgba({_SHADE}, {_alpha(float(act), scale):.2f});"
        if i == center:  # the token the example was ranked by: bold, boxed, underlined
            style += _CENTER
        tip = html.escape(f"{token!r}: {float(act):.3f}", quote=True)
        spans.append(f'<span style="{style}" title="{tip}">{html.escape(visible_token(token))}</span>')
    return (
        '<div style="font-family: monospace; white-space: pre-wrap; line-height: 1.7;">'
        + "".join(spans)
        + "</div>"
    )


def context_html(
    tokens: Sequence[str],
    activations: Sequence[float],
    scale: float,
    center: int | None,
    before: int = 16,
    after: int = 6,
) -> str:
    """A dashboard line: the context's activation at `center`, then the tokens from `before` tokens before
    the center to `after` tokens after it, shaded (the whole context when there is no center)."""
    if center is None or not 0 <= center < len(tokens):
        start, stop, peak = 0, len(tokens), max(activations, default=0.0)
    else:
        start, stop, peak = max(0, center - before), min(len(tokens), center + after + 1), activations[center]
    spans = token_spans_html(
        tokens[start:stop], activations[start:stop], scale, None if center is None else center - start
    )
    return (
        f'<div style="display: flex; gap: 0.8em; border-bottom: 1px solid #eee; padding: 0.15em 0;">'
        f'<div style="font-family: monospace; color: #888; min-width: 3.5em; text-align: right;">'
        f"{float(peak):.2f}</div>{spans}</div>"
    )


class LogitEntry(NamedTuple):
    token: str
    value: float


def logit_entries(raw: Any) -> list[LogitEntry]:
    """Top/bottom logit effects as (token, value): from [{"token", "value"}] or [[token, value]] JSON."""
    entries = []
    for item in raw or []:
        if isinstance(item, dict):
            token, value = item.get("token", ""), item.get("value", item.get("logit"))
        elif isinstance(item, (list, tuple)) and len(item) >= 2:
            token, value = item[0], item[1]
        else:
            raise ValueError(f"logit entry {item!r} is neither {{'token', 'value'}} nor [token, value]")
        entries.append(LogitEntry(str(token), float(value)))
    return entries


class HistogramBars(NamedTuple):
    """An activation histogram: bin edges, counts per bin, and whether the bins are log-spaced."""

    edges: list[float]
    counts: list[float]
    log_scale: bool


def histogram_bars(raw: Any) -> HistogramBars | None:
    """{"edges": [n+1], "counts": [n], "scale": "log"|"linear"} (or "bin_edges") as bars; None when absent."""
    if not raw:
        return None
    edges = raw.get("edges", raw.get("bin_edges")) if isinstance(raw, dict) else None
    counts = raw.get("counts") if isinstance(raw, dict) else None
    if edges is None or counts is None or len(edges) != len(counts) + 1:
        raise ValueError("histogram must be {'edges': [n+1 numbers], 'counts': [n numbers]}")
    log_scale = raw.get("scale") == "log" and all(e > 0 for e in edges)
    return HistogramBars([float(e) for e in edges], [float(c) for c in counts], log_scale)


def strongest_heads(attribution: Any, top: int = 2) -> str:
    """"h2 0.61, h0 0.20": the heads a latent's decoder writes most through (attn_z SAEs)."""
    if not attribution:
        return ""
    ranked = sorted(enumerate(float(a) for a in attribution), key=lambda p: -p[1])[:top]
    return ", ".join(f"h{h} {a:.2f}" for h, a in ranked)


@runtime_checkable
class TokenContext(Protocol):
    """A window of tokens around a peak (a stored top example, or a context row)."""

    tokens: Sequence[str]
    center: int | None


def _shifted_copy(a: TokenContext, b: TokenContext, min_overlap: float = 0.5) -> bool:
    """Whether `b` is `a` seen through a shifted window: at some offset the two token lists agree on an
    overlap of at least `min_overlap` of the shorter one (the same text around another peak of the same
    document)."""
    short = min(len(a.tokens), len(b.tokens))
    need = max(2, math.ceil(min_overlap * short))
    for shift in range(-len(b.tokens) + need, len(a.tokens) - need + 1):
        lo, hi = max(0, shift), min(len(a.tokens), shift + len(b.tokens))
        if hi - lo >= need and list(a.tokens[lo:hi]) == list(b.tokens[lo - shift:hi - shift]):
            return True
    return False


def distinct_contexts(examples: Sequence[TokenContext]) -> list:
    """The examples, strongest first as given, one per document: by their document ids when every example
    has one (dashboards store them since schema version 7), else without shifted copies of a context already
    kept (the same text around another peak of the same document), as Neuronpedia and SAEDashboard show
    them."""
    documents = [getattr(example, "document", None) for example in examples]
    if examples and None not in documents:
        first = {document: i for i, document in reversed(list(enumerate(documents)))}
        return [example for i, example in enumerate(examples) if first[documents[i]] == i]
    kept: list = []
    for example in examples:
        if not any(_shifted_copy(k, example) for k in kept):
            kept.append(example)
    return kept


class QuantileGroup(NamedTuple):
    """One quantile group of a latent's firing activations, as the dashboard labels it."""

    index: int
    """0 = weakest group (its examples are kind "quantile_{index}")."""
    low: float
    """Smallest activation in the group (exact) or among its examples (`exact` False)."""
    high: float
    """Largest activation in the group (exact) or among its examples (`exact` False)."""
    share_of_firing: float
    """Fraction of the latent's firing tokens in the group (`exact` False: 1 / number of groups, assumed)."""
    count: int | None
    """Firing tokens in the group (None when not exact)."""
    exact: bool
    """True: range, share and count are over every firing token of the dashboard's tokens (stored
    quantiles); False: read from the examples shown (a store from before schema version 7)."""


def quantile_groups(stored: Any, activations_by_kind: dict[str, list[float]]) -> list[QuantileGroup]:
    """A latent's quantile groups, strongest first: from its stored `quantiles` ([{"index", "low", "high",
    "count"}], exact) when present, else from `{"quantile_0": [activations of its examples], ...}` (a uniform
    sample of the firing tokens split into equal counts, so each is taken to hold 1/n of them)."""
    if stored:
        total = sum(int(g["count"]) for g in stored)
        return [QuantileGroup(int(g["index"]), float(g["low"]), float(g["high"]), int(g["count"]) / total,
                              int(g["count"]), True) for g in reversed(stored)]
    indices = sorted(int(kind.rsplit("_", 1)[1]) for kind in activations_by_kind)
    n = len(indices)
    return [QuantileGroup(q, min(acts), max(acts), 1 / n, None, False)
            for q in reversed(indices) if (acts := activations_by_kind[f"quantile_{q}"])]
