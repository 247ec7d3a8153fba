"""ROC curves and AUCs of circuit scores against a ground-truth circuit (pure functions over numbers).

Two areas are reported: the trapezoid AUC over all score thresholds (ties handled as scikit-learn does, so it
equals `roc_auc_score`), and ACDC's pessimistic staircase over the Pareto points of discrete circuits (for
ACDC's τ sweep, or for thresholded scores), which credits a TPR only from the FPR where it is reached.
"""

from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class ROC(NamedTuple):
    """Points of a ROC curve, from (0, 0) to (1, 1), FPR non-decreasing."""

    fpr: list[float]
    tpr: list[float]


def _arrays(scores: Sequence[float], labels: Sequence[bool]) -> tuple[Tensor, Tensor]:
    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(
            f"scores {tuple(s.shape)} and labels {tuple(y.shape)} must be 1-d and of equal length"
        )
    if not bool(y.any()) or bool(y.all()):
        raise ValueError("a ROC curve needs at least one positive and one negative label")
    if bool(s.isnan().any()):
        raise ValueError("scores contain NaN")
    return s, y


def roc_curve(scores: Sequence[float], labels: Sequence[bool]) -> ROC:
    """The ROC curve over every distinct score threshold (tied scores move together)."""
    s, y = _arrays(scores, labels)
    order = torch.argsort(-s, stable=True)
    s, y = s[order], y[order]
    last_of_tie = torch.cat([torch.nonzero(s.diff())[:, 0], torch.tensor([len(s) - 1])])
    tp = torch.cumsum(y, 0)[last_of_tie].double()
    fp = torch.cumsum(~y, 0)[last_of_tie].double()
    zero = torch.zeros(1, dtype=torch.float64)
    fpr = torch.cat([zero, fp / (~y).sum()])
    tpr = torch.cat([zero, tp / y.sum()])
    return ROC(fpr.tolist(), tpr.tolist())


def trapezoid_auc(roc: ROC) -> float:
    fpr, tpr = torch.tensor(roc.fpr, dtype=torch.float64), torch.tensor(roc.tpr, dtype=torch.float64)
    return float((fpr.diff() * (tpr[1:] + tpr[:-1]) / 2).sum())


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Trapezoid area under the ROC curve; equals sklearn.metrics.roc_auc_score."""
    return trapezoid_auc(roc_curve(scores, labels))


def pareto_points(points: Sequence[tuple[float, float]]) -> ROC:
    """The Pareto frontier (low FPR, high TPR) of (fpr, tpr) points, with (0, 0) and (1, 1) added."""
    pts = sorted({(float(f), float(t)) for f, t in points} | {(0.0, 0.0)}, key=lambda p: (p[0], -p[1]))
    frontier: list[tuple[float, float]] = []
    for f, t in pts:
        if frontier and t <= frontier[-1][1]:
            continue
        frontier.append((f, t))
    if frontier[-1][0] < 1.0:
        frontier.append((1.0, 1.0))
    return ROC([f for f, _ in frontier], [t for _, t in frontier])


def staircase_auc(roc: ROC) -> float:
    """ACDC's pessimistic area: each TPR counts only from its own FPR to the next point's."""
    fpr, tpr = torch.tensor(roc.fpr, dtype=torch.float64), torch.tensor(roc.tpr, dtype=torch.float64)
    return float((fpr.diff() * tpr[:-1]).sum())


def circuit_rates(selected: set, positives: set, universe: Sequence[Hashable]) -> tuple[float, float]:
    """(FPR, TPR) of a discrete circuit `selected` against `positives`, both within `universe`."""
    universe_set = set(universe)
    selected, positives = selected & universe_set, positives & universe_set
    n_neg = len(universe_set) - len(positives)
    if not positives or n_neg == 0:
        raise ValueError("rates need at least one positive and one negative in the universe")
    return len(selected - positives) / n_neg, len(selected & positives) / len(positives)


def threshold_points(scores: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, float]]:
    """(FPR, TPR) of the discrete circuits {score ≥ t} for every distinct t."""
    roc = roc_curve(scores, labels)
    return list(zip(roc.fpr, roc.tpr, strict=True))


class Ranked(NamedTuple):
    """Scores and labels aligned over one universe of items (nodes or edges)."""

    items: list
    scores: list[float]
    labels: list[bool]


def align(scores: Mapping, positives: set, universe: Sequence) -> Ranked:
    """Line up a method's scores (missing items score 0) with ground-truth membership over `universe`."""
    items = list(universe)
    return Ranked(items, [float(scores.get(i, 0.0)) for i in items], [i in positives for i in items])


def precision_recall_at(ranked: Ranked, k: int) -> tuple[float, float]:
    """Precision and recall of the k top-scored items (ties broken by universe order)."""
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    order = torch.argsort(-torch.tensor(ranked.scores, dtype=torch.float64), stable=True)[:k]
    hits = int(torch.tensor(ranked.labels, dtype=torch.bool)[order].sum())
    return hits / k, hits / max(sum(ranked.labels), 1)


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Σ over distinct thresholds of (recall gained) × (precision there), tied scores moving together;
    equals sklearn.metrics.average_precision_score."""
    s, y = _arrays(scores, labels)
    order = torch.argsort(-s, stable=True)
    s, y = s[order], y[order]
    last_of_tie = torch.cat([torch.nonzero(s.diff())[:, 0], torch.tensor([len(s) - 1])])
    tp = torch.cumsum(y, 0)[last_of_tie].double()
    precision = tp / (last_of_tie + 1).double()
    recall_gain = torch.cat([tp[:1], tp.diff()]) / y.sum()
    return float((recall_gain * precision).sum())


def precision_at_size(ranked: Ranked) -> float:
    """Precision of the top-k items, k = |circuit| (the number of positives). Items tied at the k-th score
    count by their expected share (ties broken at random), so a method cannot gain from item order."""
    k = sum(ranked.labels)
    if k < 1:
        raise ValueError("precision at the circuit's size needs at least one positive")
    s = torch.tensor(ranked.scores, dtype=torch.float64)
    y = torch.tensor(ranked.labels, dtype=torch.bool)
    cut = s.sort(descending=True).values[k - 1]
    above, tied = s > cut, s == cut
    need = k - int(above.sum())
    hits = float(y[above].sum()) + need * float(y[tied].sum()) / int(tied.sum())
    return hits / k


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; std 0 for a single value."""
    arr = torch.tensor(list(values), dtype=torch.float64)
    if arr.numel() == 0:
        raise ValueError("mean_std needs at least one value")
    return float(arr.mean()), float(arr.std(correction=0))
