"""Circuit methods on a planted model (known answer) and consistency checks on saelab-random."""

import math

import pytest
import torch

from saelab.circuits import ACDCConfig, EAPIGConfig, SAECodesConfig, get_method, list_methods, run_method
from saelab.circuits.acdc import prune
from saelab.circuits.eap import attribution_scores
from saelab.circuits.evaluate import evaluate_scores
from saelab.circuits.forward import cache_batches, clean_run, patched_end_logits
from saelab.circuits.graph import Graph, head_node
from saelab.circuits.ground_truth import compute_ground_truth, from_json, to_json
from saelab.circuits.patching import node_effects
from saelab.testing.planted_circuit import PLANTED_EDGES, PLANTED_NODES, planted_model, planted_problem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted():
    model = planted_model(with_mlps=True)
    problem = planted_problem(16, batch_size=16)
    return model, problem, compute_ground_truth(model, problem, "planted")


def test_planted_ground_truth_is_the_planted_circuit(planted):
    model, _, truth = planted
    assert {n.name for n in truth.nodes} == set(PLANTED_NODES)
    assert {e.name for e in truth.edges} == set(PLANTED_EDGES)
    assert truth.gap > 0.5
    again = from_json(to_json(truth), Graph.from_config(model.cfg))
    assert again.nodes == truth.nodes and again.edges == truth.edges


_FAST_CONFIGS = {"acdc": ACDCConfig(thresholds=(1e-3, 0.1)), "sae_codes_saelab": SAECodesConfig(steps=150),
                 "sae_codes_topk": SAECodesConfig(codes="topk", steps=150),
                 "sae_codes_vq": SAECodesConfig(codes="vq", k=1, steps=150)}


def identity_attn_z_dictionaries(model, directory) -> tuple[str, ...]:
    """Lossless attn_z "SAEs" (latents ±each coordinate of z), so each latent lies in exactly one head."""
    from saelab.sae import SAE, SAEConfig, save_sae
    from saelab.sae.types import InitialState

    width = model.cfg.n_heads * model.cfg.d_head
    eye = torch.eye(width)
    W_dec = torch.cat([eye, -eye])
    state = InitialState({"W_enc": W_dec.T.clone(), "b_enc": torch.zeros(2 * width), "W_dec": W_dec,
                          "b_dec": torch.zeros(width)}, {})
    out = []
    for layer in range(model.cfg.n_layers):
        cfg = SAEConfig("relu_l1", width, 2 * width, hook_site=f"{layer}.attn_z", normalize_activations=False)
        out.append(str(save_sae(SAE(cfg, state), directory / f"z{layer}").directory))
    return tuple(out)


@pytest.mark.parametrize("method", [m for m in list_methods() if get_method(m).kind == "method"])
def test_every_method_recovers_the_planted_circuit(planted, method, tmp_path):
    from saelab.feature_circuits.components import FeatureComponentsConfig

    model, problem, truth = planted
    config = _FAST_CONFIGS.get(method)
    if method == "feature_circuit_components":
        config = FeatureComponentsConfig(dictionaries=identity_attn_z_dictionaries(model, tmp_path))
    scores = run_method(method, model, problem, config)
    values = evaluate_scores(scores, truth, Graph.from_config(model.cfg), node_scope="all").values
    assert values["node_auc"] == 1.0, values
    if method in ("eap", "eap_ig", "acdc"):
        assert values["edge_auc"] == 1.0, values
    assert scores.seconds > 0 and scores.peak_memory_mb >= 0


@pytest.mark.parametrize("head_share", ["decoder", "output"])
def test_feature_components_share_latents_as_configured(planted, tmp_path, monkeypatch, head_share):
    """The method hands its head_share to the latent → head shares, and still recovers the planted circuit."""
    import saelab.feature_circuits.components as components
    from saelab.feature_circuits.components import FeatureComponentsConfig

    model, problem, truth = planted
    seen, real = [], components.component_shares
    monkeypatch.setattr(components, "component_shares",
                        lambda model, p, share="decoder": seen.append(share) or real(model, p, share))
    config = FeatureComponentsConfig(dictionaries=identity_attn_z_dictionaries(model, tmp_path), head_share=head_share)
    scores = run_method("feature_circuit_components", model, problem, config)
    assert seen and set(seen) == {head_share}
    assert evaluate_scores(scores, truth, Graph.from_config(model.cfg), node_scope="all").values["node_auc"] == 1.0


def test_patched_run_without_ablation_is_the_clean_run_and_full_ablation_the_corrupted(random_model, random_problem):
    graph = Graph.from_config(random_model.cfg)
    batch = random_problem.batches[0]
    clean, corrupted = (clean_run(random_model, graph, t, batch.end) for t in (batch.clean, batch.corrupted))
    none = torch.zeros_like(graph.edge_mask)
    torch.testing.assert_close(patched_end_logits(random_model, graph, clean, corrupted.senders, none, batch.end),
                               clean.end_logits)
    torch.testing.assert_close(patched_end_logits(random_model, graph, clean, corrupted.senders, graph.edge_mask,
                                                  batch.end), corrupted.end_logits, atol=1e-5, rtol=1e-5)


def test_ablating_a_nodes_out_edges_equals_patching_the_node(random_model, random_problem):
    graph = Graph.from_config(random_model.cfg)
    batch = random_problem.batches[0]
    clean, corrupted = (clean_run(random_model, graph, t, batch.end) for t in (batch.clean, batch.corrupted))
    for node in (head_node(0, 2), head_node(1, 1), graph.nodes[-1]):
        via_edges = patched_end_logits(random_model, graph, clean, corrupted.senders, graph.out_edges(node), batch.end)
        effect = float((batch.metric(via_edges) - batch.metric(clean.end_logits)).mean())
        assert effect == pytest.approx(node_effects(random_model, random_problem, nodes=[node])[node], abs=1e-5)
        # A node named twice (a head aligned at two positions) is measured once, not summed.
        twice = node_effects(random_model, random_problem, nodes=[node, node])[node]
        assert twice == pytest.approx(effect, abs=1e-5)


def test_starting_at_the_receiver_layer_changes_nothing(random_model, random_problem):
    graph = Graph.from_config(random_model.cfg)
    batch = random_problem.batches[0]
    clean, corrupted = (clean_run(random_model, graph, t, batch.end) for t in (batch.clean, batch.corrupted))
    mask = torch.zeros_like(graph.edge_mask)
    mask[graph.sender_index[head_node(0, 1)], graph.head_receivers(1, "k")] = True
    full = patched_end_logits(random_model, graph, clean, corrupted.senders, mask, batch.end, start_layer=0)
    late = patched_end_logits(random_model, graph, clean, corrupted.senders, mask, batch.end, start_layer=1)
    torch.testing.assert_close(full, late)
    assert not torch.allclose(full, clean.end_logits)
    with pytest.raises(ValueError, match="cannot start"):
        mask[0, graph.head_receivers(0, "q")] = True
        patched_end_logits(random_model, graph, clean, corrupted.senders, mask, batch.end, start_layer=1)


def test_eap_matches_finite_differences_of_edge_patching(random_problem):
    from saelab.models import load_model

    model = load_model("saelab-random").double()  # a float64 copy: finite differences need the precision
    model.cfg.dtype = torch.float64
    graph = Graph.from_config(model.cfg)
    scores = attribution_scores(model, random_problem)
    (cached,) = cache_batches(model, graph, random_problem)
    eps = 1e-5
    nudged = cached.clean.senders + eps * (cached.corrupted - cached.clean.senders)
    base = cached.clean_metric.mean()
    for s, r in graph.edge_mask.nonzero().tolist()[::7]:
        mask = torch.zeros_like(graph.edge_mask)
        mask[s, r] = True
        logits = patched_end_logits(model, graph, cached.clean, nudged, mask, cached.batch.end)
        finite = float((cached.batch.metric(logits).mean() - base) / eps)
        assert finite == pytest.approx(float(scores[s, r]), abs=1e-4 + 1e-3 * abs(finite))
    assert float(scores.abs().max()) > 1e-2


def test_eap_ig_with_one_step_is_eap_and_many_steps_approach_completeness(random_model, random_problem):
    eap = attribution_scores(random_model, random_problem)
    torch.testing.assert_close(attribution_scores(random_model, random_problem, [1.0]), eap, atol=1e-6, rtol=1e-5)
    graph = Graph.from_config(random_model.cfg)
    (cached,) = cache_batches(random_model, graph, random_problem)
    corrupted_metric = float(cached.batch.metric(clean_run(random_model, graph, cached.batch.corrupted,
                                                           cached.batch.end).end_logits).mean())
    total_change = corrupted_metric - float(cached.clean_metric.mean())
    ig = attribution_scores(random_model, random_problem, [(k + 1) / 32 for k in range(32)])
    # all of the input's influence flows through its out-edges: IG over the input is (nearly) complete
    assert float(ig[0].sum()) == pytest.approx(total_change, rel=0.1, abs=1e-3)


@pytest.mark.slow
def test_acdc_keeps_everything_at_zero_and_nothing_at_infinity(random_model, random_problem):
    graph = Graph.from_config(random_model.cfg)
    cached = cache_batches(random_model, graph, random_problem)
    assert not bool(prune(random_model, graph, cached, 0.0, "kl").any())
    assert torch.equal(prune(random_model, graph, cached, math.inf, "kl"), graph.edge_mask)
    sweep = run_method("acdc", random_model, random_problem, ACDCConfig(thresholds=(0.0, math.inf))).sweep
    assert len(sweep[0].edges) == graph.n_edges and not sweep[1].edges


def test_method_configs_validate():
    # the library's ValueError; under pytest the Literal annotation (beartype) refuses it first
    with pytest.raises((ValueError, TypeError), match="codes"):
        SAECodesConfig(codes="median")
    with pytest.raises(ValueError, match="steps"):
        EAPIGConfig(steps=0)
    with pytest.raises(ValueError, match="thresholds"):
        ACDCConfig(thresholds=())
    with pytest.raises(ValueError, match="unknown circuit method"):
        get_method("nope")  # run_method looks the name up first
