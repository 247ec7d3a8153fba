"""Baselines, the distractor toy (where "varies under corruption" is not "in the circuit"), and the maths of
EAP-IG's interpolation and ACDC's objective against computations done by hand."""

import pytest
import torch
import torch.nn.functional as F

from saelab.circuits import ACDCConfig, EAPIGConfig, run_method
from saelab.circuits.acdc import _objective
from saelab.circuits.eap import ig_alphas, run_eap_ig
from saelab.circuits.evaluate import evaluate_scores
from saelab.circuits.forward import (
    cache_batches,
    end_logits,
    graph_hooks_enabled,
    head_outputs,
    patched_end_logits,
)
from saelab.circuits.graph import Graph, Node, head_node
from saelab.circuits.ground_truth import compute_ground_truth
from saelab.circuits.problem import make_problem
from saelab.testing.planted_circuit import (
    DISTRACTOR,
    DISTRACTOR_CIRCUIT_NODES,
    GATE,
    PLANTED_NODES,
    VARIES_ALIKE,
    planted_model,
    planted_problem,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def distractor():
    model = planted_model(with_mlps=True, distractors=True)
    problem = planted_problem(16, batch_size=16, distractors=True)
    return model, problem, compute_ground_truth(model, problem, "distractor")


@torch.no_grad()
def _z(model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    _, cache = model.run_with_cache(tokens, names_filter=f"blocks.{layer}.attn.hook_z")
    return head_outputs(model, layer, cache[f"blocks.{layer}.attn.hook_z"])


def test_distractor_toy_heads_do_what_they_are_built_to(distractor):
    model, problem, truth = distractor
    batch = problem.batches[0]
    clean, corrupted = _z(model, batch.clean, 0), _z(model, batch.corrupted, 0)
    gate, alike, decoy = (Node.parse(n, 2).head for n in (GATE, VARIES_ALIKE, DISTRACTOR))
    torch.testing.assert_close(clean[:, :, gate], corrupted[:, :, gate])  # the gate never changes
    torch.testing.assert_close(clean[:, :, alike], corrupted[:, :, alike])  # same on each pair ...
    assert float(clean[:, -1, alike].std(dim=0).sum()) > 1.0  # ... but varies across prompts
    assert float((clean[:, -1, decoy] - corrupted[:, -1, decoy]).norm(dim=-1).min()) > 1.0  # reads the letter
    # resample ablation cannot see the gate: the patching ground truth is the planted circuit ...
    assert {n.name for n in truth.nodes} == set(PLANTED_NODES)
    # ... but zero-ablating it loses most of the answer: it is in the circuit by construction
    def zero_gate(z, hook):
        z[:, :, gate] = 0.0
        return z

    with torch.no_grad():
        metric = batch.metric(model(batch.clean)[:, -1]).mean()
        gated = batch.metric(model.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.attn.hook_z", zero_gate)])[:, -1])
    assert float(gated.mean()) < 0.5 * float(metric)
    assert GATE in DISTRACTOR_CIRCUIT_NODES


@pytest.mark.parametrize("method", ["patching", "eap", "eap_ig", "acdc"])
def test_effect_methods_see_through_the_distractors(distractor, method):
    model, problem, truth = distractor
    config = ACDCConfig(thresholds=(1e-3, 0.1)) if method == "acdc" else None
    values = evaluate_scores(run_method(method, model, problem, config), truth, Graph.from_config(model.cfg),
                             node_scope="all").values
    assert values["node_auc"] == 1.0, values


def test_output_change_is_fooled_by_the_distractor_and_misses_the_gate(distractor):
    model, problem, truth = distractor
    graph = Graph.from_config(model.cfg)
    scores = run_method("output_change", model, problem)
    decoy = Node.parse(DISTRACTOR, 2)
    assert scores.node_scores[decoy] > max(scores.node_scores[Node.parse(n, 2)] for n in PLANTED_NODES)
    assert scores.node_scores[Node.parse(GATE, 2)] == 0.0
    assert scores.node_scores[Node.parse(VARIES_ALIKE, 2)] == pytest.approx(0.0, abs=1e-6)
    assert evaluate_scores(scores, truth, graph, node_scope="all").values["node_auc"] < 1.0


def test_output_change_by_hand(distractor):
    """Mean over prompts of the mean over positions ≤ end of ‖z·W_O(clean) − z·W_O(corrupted)‖, for every
    layer-0 head; half the prompts end one position early (what follows is padding and must not count)."""
    model, problem, _ = distractor
    batch = problem.batches[0]
    end = torch.tensor([5, 4] * (len(batch.end) // 2))
    short = make_problem("short", [batch._replace(end=end)])
    norms = (_z(model, batch.clean, 0) - _z(model, batch.corrupted, 0)).norm(dim=-1)  # [batch, pos, head]
    by_hand = torch.stack([norms[i, : int(e) + 1].mean(0) for i, e in enumerate(end)]).mean(0)
    scores = run_method("output_change", model, short).node_scores
    got = torch.tensor([scores[head_node(0, h)] for h in range(model.cfg.n_heads)], dtype=by_hand.dtype)
    torch.testing.assert_close(got, by_hand)


def test_sae_codes_count_nothing_for_a_head_that_varies_alike(distractor):
    """Identical vectors on each pair give identical codes: no code is positive-only (ignoring the
    negatives would count every letter's code)."""
    model, problem, _ = distractor
    for method in ("sae_codes", "sae_codes_saelab"):
        scores = run_method(method, model, problem)
        assert scores.node_scores[Node.parse(VARIES_ALIKE, 2)] == 0.0, method
        assert scores.node_scores[Node.parse("1.2", 2)] > 0.0, method


def test_random_baseline_is_seeded_and_near_one_half_on_average():
    from saelab.circuits.baselines import RandomConfig, run_random
    from saelab.circuits.scoring import roc_auc

    model, problem = planted_model(), planted_problem(4, batch_size=4)
    first = run_random(model, problem, RandomConfig(seed=3))
    assert first.node_scores == run_random(model, problem, RandomConfig(seed=3)).node_scores
    assert first.node_scores != run_random(model, problem, RandomConfig(seed=4)).node_scores
    heads = Graph.from_config(model.cfg).heads
    labels = [h.name in PLANTED_NODES for h in heads]
    aucs = [roc_auc([run_random(model, problem, RandomConfig(seed=s)).node_scores[h] for h in heads], labels)
            for s in range(300)]
    assert sum(aucs) / len(aucs) == pytest.approx(0.5, abs=0.04)


def test_layer_order_ranks_lower_layers_and_earlier_edges_first():
    model = planted_model(with_mlps=True)
    graph = Graph.from_config(model.cfg)
    scores = run_method("layer_order", model, planted_problem(4, batch_size=4))
    assert all(scores.node_scores[n] == -n.layer for n in graph.nodes)
    e = scores.edge_scores
    assert e[graph.edge("input->1.2.v")] > e[graph.edge("0.1->1.2.v")] > e[graph.edge("0.1->logits")]
    assert e[graph.edge("0.1->1.2.v")] > e[graph.edge("1.2->logits")]


def test_eap_ig_interpolates_at_k_over_m_as_hanna_et_al(random_model, random_problem):
    """EAP-IG's score of input → (last layer, head 0).v, computed by hand: (corrupted − clean embedding) ·
    mean over α = k/m (k = 0..m−1) of ∂metric/∂(that head's value input) on a run whose embeddings are
    interpolated from corrupted (α = 0) to clean (α = 1)."""
    assert ig_alphas(5) == [0.0, 0.2, 0.4, 0.6, 0.8]
    m = 3
    batch = random_problem.batches[0]
    graph = Graph.from_config(random_model.cfg)
    last = graph.n_layers - 1
    (cached,) = cache_batches(random_model, graph, random_problem)
    clean_in, corrupted_in = cached.clean.senders[:, :, 0], cached.corrupted[:, :, 0]

    def by_hand(alphas):
        total = 0.0
        for a in alphas:
            leaf = torch.zeros_like(clean_in, requires_grad=True)

            def add_leaf(x, hook, leaf=leaf):
                x = x.clone()
                x[:, :, 0] = x[:, :, 0] + leaf
                return x

            hooks = [("blocks.0.hook_resid_pre", lambda x, hook, a=a: corrupted_in + a * (clean_in - corrupted_in)),
                     (f"blocks.{last}.hook_v_input", add_leaf)]
            with graph_hooks_enabled(random_model), torch.enable_grad():
                resid = random_model.run_with_hooks(batch.clean, fwd_hooks=hooks, stop_at_layer=graph.n_layers)
                value = batch.metric(end_logits(random_model, resid, batch.end)).sum() / len(batch.end)
                (grad,) = torch.autograd.grad(value, [leaf])
            total += float(((corrupted_in - clean_in) * grad).sum()) / len(alphas)
        return abs(total)

    edge = graph.edge(f"input->{last}.0.v")
    got = run_eap_ig(random_model, random_problem, EAPIGConfig(steps=m)).edge_scores[edge]
    assert got > 1e-4
    assert got == pytest.approx(by_hand([k / m for k in range(m)]), rel=1e-4, abs=1e-7)
    assert got != pytest.approx(by_hand([(k + 1) / m for k in range(m)]), rel=1e-3)


def test_acdc_objective_is_kl_of_clean_from_pruned(random_model, random_problem):
    """ACDC's "kl" objective is KL(clean ‖ pruned) = Σ p_clean (log p_clean − log p_pruned), as F.kl_div."""
    graph = Graph.from_config(random_model.cfg)
    cached = cache_batches(random_model, graph, random_problem)
    ablate = graph.edge_mask.clone()  # every edge: far enough from clean for the two directions to differ
    (c,) = cached
    pruned = patched_end_logits(random_model, graph, c.clean, c.corrupted, ablate, c.batch.end).double()
    expected = F.kl_div(pruned.log_softmax(-1), c.clean_logprobs, log_target=True, reduction="batchmean")
    reverse = F.kl_div(c.clean_logprobs, pruned.log_softmax(-1), log_target=True, reduction="batchmean")
    got = _objective(random_model, graph, cached, ablate, 0, "kl")
    assert got == pytest.approx(float(expected), rel=1e-6)
    assert got != pytest.approx(float(reverse), rel=5e-3)  # the two directions differ by ~1% here


def test_weight_norm_by_hand_reads_only_the_weights(distractor):
    """‖W_V^h W_O^h‖_F per head and ‖W_in‖_F·‖W_out‖_F per MLP (computed with numpy here), the same on any
    prompts; an edge scores the product of its ends over the largest node score (input and logits: 1)."""
    import numpy as np

    model, problem, _ = distractor
    graph = Graph.from_config(model.cfg)
    saved = {name: p.detach().clone() for name, p in model.named_parameters() if ".mlp." in name}
    generator = torch.Generator().manual_seed(0)
    expected = {}
    with torch.no_grad():  # the planted model's MLPs are zero: give them weights of different sizes
        for i, (name, p) in enumerate(model.named_parameters()):
            if name in saved:
                p.copy_((1 + i % 3) * torch.randn(p.shape, generator=generator))
    try:
        scores = run_method("weight_norm", model, problem)
        other = make_problem("other", [problem.batches[0]._replace(clean=problem.batches[0].corrupted)])
        assert run_method("weight_norm", model, other).node_scores == scores.node_scores
        for node in graph.nodes:
            if node.kind == "head":
                ov = (model.W_V[node.layer, node.head].detach().numpy()
                      @ model.W_O[node.layer, node.head].detach().numpy())
                expected[node] = np.linalg.norm(ov)
            else:
                mlp = model.blocks[node.layer].mlp
                expected[node] = np.linalg.norm(mlp.W_in.detach().numpy()) * np.linalg.norm(mlp.W_out.detach().numpy())
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in saved:
                    p.copy_(saved[name])
    assert len({round(expected[n], 3) for n in graph.nodes if n.kind == "mlp"}) > 1
    for node in graph.nodes:
        assert scores.node_scores[node] == pytest.approx(float(expected[node]), rel=1e-5), node.name
    top = max(scores.node_scores.values())
    for edge in list(graph.edges)[:40]:
        ends = [scores.node_scores.get(n, top) / top for n in (edge.sender, edge.receiver.node)]
        assert scores.edge_scores[edge] == pytest.approx(ends[0] * ends[1]), edge.name


def test_visible_ov_norms_equal_transformer_lens_folded_and_centred_weights_and_ignore_what_no_reader_sees(
        random_problem):
    """Ours (`ov_norms(visible=True)`, weight_norm's `visible`): on saelab-random with uneven LayerNorm weights
    and a mean-direction component added to every head's W_O and W_V input rows, the visible norms equal the raw
    ‖W_V W_O‖_F of the same weights after TransformerLens's fold_ln + center_writing_weights (an independent
    computation); those added components change the raw norms but neither the visible norms nor the model's
    logits (every reader's LayerNorm removes them). A model without LayerNorm is refused."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saelab.circuits.baselines import WeightNormConfig, ov_norms, run_weight_norm
    from saelab.models import load_model

    model = load_model("saelab-random")
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 12), generator=generator)
    with torch.no_grad():
        for block in model.blocks:
            block.ln1.w.copy_(0.5 + torch.rand(block.ln1.w.shape, generator=generator))
        before = model(tokens)
        visible_before = ov_norms(model, visible=True).clone()
        raw_before = ov_norms(model).clone()
        for block in model.blocks:
            block.attn.W_O += torch.randn(*block.attn.W_O.shape[:2], 1, generator=generator)  # the mean direction
            block.attn.W_V += torch.randn(block.attn.W_V.shape[0], 1, block.attn.W_V.shape[2],
                                          generator=generator) / block.ln1.w[None, :, None]
        after = model(tokens)
        visible = ov_norms(model, visible=True)
        assert torch.allclose(after, before, atol=1e-4)
        assert (ov_norms(model) - raw_before).abs().max() > 1.0
        assert torch.allclose(visible, visible_before, rtol=1e-4)
        scores = run_weight_norm(model, random_problem, WeightNormConfig(visible=True)).node_scores
        assert scores[head_node(1, 2)] == pytest.approx(float(visible[1, 2]), rel=1e-6)
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False,
                               refactor_factored_attn_matrices=False)
        assert torch.allclose(ov_norms(model), visible, rtol=1e-4)
    bare = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=8,
                                                     d_vocab=10, attn_only=True, normalization_type=None))
    with pytest.raises(ValueError, match="normalization_type is None"):
        ov_norms(bare, visible=True)
