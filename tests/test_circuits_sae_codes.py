"""The discrete-SAE circuit method's counting, checked against counts done by hand, and its two protocols."""

import pytest
import torch

from saelab.circuits import SAECodesConfig
from saelab.circuits.graph import Graph
from saelab.circuits.methods import PAPER_SAE_CODES
from saelab.circuits.sae_codes import (
    HeadCodes,
    code_scores,
    heads_from_pairs,
    node_counts,
    ordered_pairs,
    pair_counts,
)

# 3 positive and 3 negative prompts, 3 heads (columns). By hand, per head:
#   head 0: positive codes {1, 2}, negative {2, 5}     -> positive-only {1}        = 1; negative-only {5}
#   head 1: positive codes {7},    negative {7}        -> positive-only {}         = 0
#   head 2: positive codes {3,4,6}, negative {9}       -> positive-only {3, 4, 6}  = 3; negative-only {9}
CODES = HeadCodes(
    positive=torch.tensor([[1, 7, 3], [2, 7, 4], [1, 7, 6]]),
    negative=torch.tensor([[2, 7, 9], [5, 7, 9], [5, 7, 9]]),
)


def test_node_counts_by_hand():
    only, distinct = node_counts(CODES)
    assert only == [1.0, 0.0, 3.0]
    assert distinct == [2.0, 1.0, 3.0]


def test_pair_counts_by_hand():
    # code pairs per prompt (positives | negatives):
    #   (0,1): (1,7) (2,7) (1,7) | (2,7) (5,7) (5,7)  -> positive-only {(1,7)}                 = 1
    #   (1,0): (7,1) (7,2) (7,1) | (7,2) (7,5) (7,5)  -> {(7,1)}                               = 1
    #   (0,2): (1,3) (2,4) (1,6) | (2,9) (5,9) (5,9)  -> all three                             = 3
    #   (2,0): (3,1) (4,2) (6,1) | ...                 -> 3
    #   (1,2): (7,3) (7,4) (7,6) | (7,9)               -> 3
    #   (2,1): (3,7) (4,7) (6,7) | (9,7)               -> 3
    pairs = ordered_pairs(3)
    assert pairs == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert pair_counts(CODES, pairs) == [1.0, 3.0, 1.0, 3.0, 3.0, 3.0]
    # a pair whose positive code pairs all occur on negatives counts 0
    same = HeadCodes(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[3, 4], [1, 2]]))
    assert pair_counts(same, [(0, 1)]) == [0.0]


def test_head_score_from_pairs_by_hand():
    # 3 heads: N²//2 = 4 endpoints. Counts matrix (row a, column b) from the test above:
    #   [[0, 1, 3], [1, 0, 3], [3, 3, 0]]; sorted from the top, ties later flat index first:
    #   (2,1)=3, (2,0)=3, (1,2)=3, (0,2)=3, ... -> endpoints 2,1, 2,0 | 1,2, ... -> first 4: 2,1,2,0
    pairs = ordered_pairs(3)
    assert heads_from_pairs(3, pairs, [1.0, 3.0, 1.0, 3.0, 3.0, 3.0]) == [1.0, 1.0, 2.0]
    # a clear top pair: (0, 1) = 5, all else 0 -> endpoints 0, 1, then the zero pairs from the highest flat
    # index down: (2,2) 2, 2 ... first 4 endpoints: 0, 1, 2, 2
    assert heads_from_pairs(3, pairs, [5.0, 0, 0, 0, 0, 0]) == [1.0, 1.0, 2.0]


def test_paper_protocol_scores_all_ordered_pairs_and_ours_only_forward_pairs():
    graph = Graph(n_layers=3, n_heads=1, has_mlps=False)  # heads 0.0, 1.0, 2.0: one per layer
    paper = code_scores(graph, CODES, SAECodesConfig(**PAPER_SAE_CODES))
    ours = code_scores(graph, CODES, SAECodesConfig())
    heads = graph.heads
    assert [paper.node_scores[h] for h in heads] == [1.0, 0.0, 3.0]
    assert [paper.extra_node_scores["from_pairs"][h] for h in heads] == [1.0, 1.0, 2.0]
    # ours sums the forward pairs (0,1)=1, (0,2)=3, (1,2)=3 onto both ends
    assert [ours.extra_node_scores["from_edges"][h] for h in heads] == [4.0, 4.0, 6.0]
    for out in (paper, ours):  # both write each forward pair's count onto the q, k and v edges
        assert out.edge_scores[graph.edge("0.0->1.0.k")] == 1.0
        assert out.edge_scores[graph.edge("1.0->2.0.v")] == 3.0
        assert out.edge_scores[graph.edge("input->0.0.q")] == 0.0


def test_paper_protocol_settings_are_fixed_and_its_l1_is_the_references():
    paper = SAECodesConfig(**PAPER_SAE_CODES)
    assert (paper.position, paper.scale, paper.train_examples, paper.steps, paper.lr) == ("mean", "none", 10, 500, 1e-3)
    # the reference averages the squared error over features: λ · d_in in saelab's summed loss
    assert paper.l1_for("ioi", 256) == pytest.approx(0.02 * 256)
    assert paper.l1_for("docstring", 256) == pytest.approx(0.05 * 256)
    assert SAECodesConfig(l1_coefficient=0.03).l1_for("docstring", 256) == 0.03
    with pytest.raises(ValueError, match="position='mean'"):
        SAECodesConfig(**{**PAPER_SAE_CODES, "position": "end"})
    # the library's ValueError; under pytest the Literal annotation (beartype) refuses it first
    with pytest.raises((ValueError, TypeError), match="protocol"):
        SAECodesConfig(protocol="mine")


def test_paper_protocol_trains_on_train_examples_prompts_only(monkeypatch):
    """The SAE sees the vectors of `train_examples` prompts (all heads of each); every prompt is coded."""
    from saelab.circuits import sae_codes
    from saelab.testing.planted_circuit import planted_model, planted_problem

    seen = []
    real = sae_codes.train_shared_sae
    monkeypatch.setattr(sae_codes, "train_shared_sae", lambda x, c, l1: seen.append(x.shape) or real(x, c, l1))
    model, problem = planted_model(), planted_problem(12, batch_size=12)
    codes = sae_codes.discrete_codes(model, problem, SAECodesConfig(**{**PAPER_SAE_CODES, "steps": 20}))
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    assert seen == [torch.Size([10 * n_heads, model.cfg.d_model])]
    assert codes.positive.shape == codes.negative.shape == (12, n_heads)
