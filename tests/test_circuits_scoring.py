"""ROC/AUC and friends against scikit-learn and hand-computed answers."""

import random

import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from saelab.circuits.scoring import (
    align,
    average_precision,
    mean_std,
    pareto_points,
    precision_at_size,
    precision_recall_at,
    roc_auc,
    roc_curve,
    staircase_auc,
    threshold_points,
)


def test_trapezoid_auc_equals_sklearn_on_random_scores_with_ties():
    rng = random.Random(0)
    for _ in range(100):
        n = rng.randint(2, 60)
        labels = [rng.random() < 0.3 for _ in range(n)]
        labels[0], labels[1] = True, False
        scores = [rng.choice([0.0, 1.0, 2.5, rng.random()]) for _ in range(n)]
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_curve_groups_ties():
    roc = roc_curve([1.0, 1.0, 0.0], [True, False, False])
    assert roc.fpr == [0.0, 0.5, 1.0] and roc.tpr == [0.0, 1.0, 1.0]


def test_pessimistic_staircase_over_pareto_points():
    pareto = pareto_points([(0.2, 0.5), (0.1, 0.6), (0.5, 0.9), (0.6, 0.8)])
    assert pareto.fpr == [0.0, 0.1, 0.5, 1.0] and pareto.tpr == [0.0, 0.6, 0.9, 1.0]
    assert staircase_auc(pareto) == pytest.approx(0.1 * 0 + 0.4 * 0.6 + 0.5 * 0.9)
    # thresholding a strict ranking gives the same area as the trapezoid
    scores, labels = [3, 2, 1, 0], [True, False, True, False]
    assert staircase_auc(pareto_points(threshold_points(scores, labels))) == pytest.approx(
        roc_auc(scores, labels)
    )


def test_auc_rejects_single_class_and_nan():
    with pytest.raises(ValueError, match="one positive and one negative"):
        roc_auc([1, 2], [True, True])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([float("nan"), 1], [True, False])


def test_precision_recall_at_k_and_alignment():
    ranked = align({"a": 3.0, "b": 2.0, "c": 1.0}, {"a", "c"}, ["a", "b", "c", "d"])
    assert ranked.scores == [3.0, 2.0, 1.0, 0.0] and ranked.labels == [True, False, True, False]
    assert precision_recall_at(ranked, 2) == (0.5, 0.5)
    assert precision_recall_at(ranked, 3) == (pytest.approx(2 / 3), 1.0)


def test_mean_std():
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_average_precision_equals_sklearn_on_random_scores_with_ties():
    rng = random.Random(1)
    for _ in range(100):
        n = rng.randint(2, 60)
        labels = [rng.random() < 0.2 for _ in range(n)]
        labels[0], labels[1] = True, False
        scores = [rng.choice([0.0, 1.0, 2.5, rng.random()]) for _ in range(n)]
        assert average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )
    # by hand: ranks 1..4 = T F T F -> precision at the two hits 1 and 2/3, each half the recall
    assert average_precision([4, 3, 2, 1], [True, False, True, False]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_precision_at_size_shares_ties_by_expectation():
    # 2 positives; top-2: "a" (hit) above, then 3 items tied at 1.0 of which 1 is a hit -> 1 + 1/3 of a hit
    ranked = align({"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a", "c"}, ["a", "b", "c", "d", "e"])
    assert precision_at_size(ranked) == pytest.approx((1 + 1 / 3) / 2)
    # item order does not matter
    reordered = align({"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a", "c"}, ["c", "e", "d", "b", "a"])
    assert precision_at_size(reordered) == pytest.approx(precision_at_size(ranked))
    assert precision_at_size(align({"a": 2.0, "c": 1.0}, {"a", "c"}, ["a", "b", "c"])) == 1.0
