"""The no-cleverness baselines beside a sparse feature circuit (same size per dictionary, chosen at random or
by mean activation, scored by the same ablation code) and the latent → head split against aligned heads."""

import pytest
import torch
from test_feature_circuits_sparse import dictionary, tiny_model, tiny_problem

from saelab.feature_circuits import sparse
from saelab.feature_circuits.baselines import (
    CircuitSize,
    baseline_scores,
    circuit_with_baselines,
    errors_only,
    random_latents,
    top_activation_latents,
)
from saelab.feature_circuits.components import head_split, top_components
from saelab.feature_circuits.sparse import FeatureCircuitConfig, Keep


@pytest.fixture(scope="module")
def measured():
    model = tiny_model()
    dicts = {"r0": dictionary("0.resid_post", seed=1), "a1": dictionary("1.attn_out", seed=2),
             "m1": dictionary("1.mlp_out", seed=3)}
    placed, problem = sparse.place(model, dicts), tiny_problem()
    config = FeatureCircuitConfig(node_method="attrib", node_threshold=0.01, edges=False)
    found = sparse.measure(model, placed, problem, config)
    return model, placed, problem, found, sparse.circuit_nodes(found.effects, 0.01)


def test_random_baseline_draws_the_requested_count_per_dictionary_uniformly():
    size = CircuitSize((3, 0, 5), (True, False, True))
    generator = torch.Generator().manual_seed(0)
    draws = [random_latents(size, [24, 24, 10], generator) for _ in range(3000)]
    for keep in draws:
        assert [int(k.acts.sum()) for k in keep] == [3, 0, 5]
        assert [k.error for k in keep] == [True, False, True]
    frequency = torch.stack([keep[0].acts for keep in draws]).double().mean(0)
    assert torch.allclose(frequency, torch.full((24,), 3 / 24, dtype=torch.float64), atol=0.035)  # uniform
    assert len({tuple(keep[2].acts.nonzero().flatten().tolist()) for keep in draws[:20]}) > 1
    with pytest.raises(ValueError, match="do not fit"):
        random_latents(CircuitSize((30,), (False,)), [24], generator)


def test_baselines_do_not_use_the_circuits_node_scores(measured):
    model, placed, _, found, keep = measured
    size = CircuitSize.of(keep)
    assert sum(size.latents) > 0
    # the circuit is the latents of largest |effect|; the random draws overlap it only by chance (n²/width)
    generator = torch.Generator().manual_seed(1)
    widths = [p.sae.cfg.d_sae for p in placed]
    overlap = torch.zeros(len(placed), dtype=torch.float64)
    for _ in range(400):
        for i, (r, k) in enumerate(zip(random_latents(size, widths, generator), keep, strict=True)):
            overlap[i] += int((r.acts & k.acts).sum()) / 400
    expected = torch.tensor([n * n / w for n, w in zip(size.latents, widths, strict=True)],
                            dtype=torch.float64)
    assert torch.allclose(overlap, expected, atol=0.25)
    assert any(n - e > 0.5 for n, e in zip(size.latents, expected.tolist(), strict=True))  # a test with teeth
    # top activation: the largest mean activations, whatever the effects say
    top = top_activation_latents(size, found.effects.activation)
    for t, a, n in zip(top, found.effects.activation, size.latents, strict=True):
        assert int(t.acts.sum()) == n
        assert not n or float(a[t.acts].min()) >= float(a[~t.acts].max())
    assert any(bool((t.acts != k.acts).any()) for t, k in zip(top, keep, strict=True))
    # a circuit of the same size but other latents gets the very same baselines
    shuffled = [Keep(k.acts[torch.randperm(len(k.acts), generator=generator)], k.error) for k in keep]
    assert CircuitSize.of(shuffled) == size
    assert all(bool((s.acts != k.acts).any())
               for s, k in zip(shuffled, keep, strict=True) if 0 < k.acts.sum())


def test_baseline_scores_use_the_circuits_ablation_code(measured):
    model, placed, problem, found, keep = measured
    size = CircuitSize.of(keep)
    scores = baseline_scores(model, placed, problem, size, found.effects.activation, draws=3, seed=5)
    reference = sparse.ablation_reference(model, placed, problem)
    generator = torch.Generator().manual_seed(5)
    widths = [p.sae.cfg.d_sae for p in placed]
    by_hand = [sparse.ablation_metrics(model, placed, problem, random_latents(size, widths, generator),
                                       reference) for _ in range(3)]
    f = torch.tensor([m["faithfulness"] for m in by_hand], dtype=torch.float64)
    assert scores["random"].faithfulness == pytest.approx(float(f.mean()), abs=1e-12)
    assert scores["random"].faithfulness_std == pytest.approx(float(f.std()), abs=1e-12)
    assert scores["random"].draws == 3
    top = sparse.ablation_metrics(model, placed, problem,
                                  top_activation_latents(size, found.effects.activation))
    assert scores["top_activation"].faithfulness == pytest.approx(top["faithfulness"], abs=1e-12)
    assert scores["top_activation"].completeness == pytest.approx(top["completeness"], abs=1e-12)
    errors = sparse.ablation_metrics(model, placed, problem, errors_only(size, widths))
    assert scores["errors_only"].faithfulness == pytest.approx(errors["faithfulness"], abs=1e-12)
    # at full size every baseline is the whole model: faithfulness 1, completeness 0
    full = baseline_scores(model, placed, problem, CircuitSize(tuple(widths), (True,) * len(placed)),
                           found.effects.activation, draws=2)
    for name in ("random", "top_activation"):
        assert full[name].faithfulness == pytest.approx(1.0, abs=1e-9)
        assert full[name].completeness == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="draws"):
        baseline_scores(model, placed, problem, size, found.effects.activation, draws=0)


def test_circuit_with_baselines_scores_the_circuit_as_feature_circuit_does_and_baselines_by_activation(
        measured):
    model, placed, problem, found, keep = measured
    config = FeatureCircuitConfig(node_method="attrib", node_threshold=0.01, edges=False)
    result = circuit_with_baselines(model, placed, problem, config, draws=2, seed=3)
    plain = sparse.feature_circuit(model, problem, {p.name: p.sae for p in placed}, config)
    assert result.graph.metrics == pytest.approx(plain.metrics, abs=1e-12)
    assert [bool((a.acts == b.acts).all()) and a.error == b.error
            for a, b in zip(result.keep, keep, strict=True)] == [True] * len(keep)
    # the baselines see the circuit's size and the mean activations, nothing of its node scores
    hand = baseline_scores(model, placed, problem, CircuitSize.of(keep), found.effects.activation, 2, 3)
    for name, score in hand.items():
        assert result.baselines[name]._asdict() == pytest.approx(score._asdict(), abs=1e-12), name
    by_effect = [e.abs() for e in (found.effects.aggregated(i)[0] for i in range(len(placed)))]
    scored_by_effect = baseline_scores(model, placed, problem, CircuitSize.of(keep), by_effect, 2, 3)
    assert scored_by_effect["top_activation"].faithfulness != pytest.approx(
        result.baselines["top_activation"].faithfulness, abs=1e-3)  # the check above can tell them apart


def test_head_split_counts_latents_at_the_head_their_decoder_writes():
    """An attn_z SAE (4 heads × d_head 4) whose decoder rows sit in known heads and whose encoder columns
    point at other heads: the split must follow the decoder, blocks of d_head consecutive values per head."""
    model = tiny_model()
    z = dictionary("1.attn_z", d_sae=6, seed=7)
    m = dictionary("1.mlp_out", d_sae=4, seed=8)
    head_of = [1, 2, 3, 0, 1, 1]  # where each latent's decoder row writes
    with torch.no_grad():
        z.W_dec.zero_()
        z.W_enc.zero_()
        for j, h in enumerate(head_of):
            z.W_dec[j, 4 * h:4 * h + 4] = torch.tensor([1.0, -2.0, 0.5, 1.0])
            z.W_enc[4 * ((h + 2) % 4):4 * ((h + 2) % 4) + 4, j] = 3.0  # the encoder reads another head
        z.W_dec[1, 0:4] = 0.2  # latent 1: mostly head 2, a little head 0
    placed = sparse.place(model, {"z": z, "m": m})
    assert top_components(model, placed[0]) == [f"1.{h}" for h in head_of]
    assert top_components(model, placed[1]) == ["mlp1"] * 4
    keep = [Keep(torch.tensor([True, True, False, False, True, False]), True),
            Keep(torch.tensor([True, False, True, False]), False)]
    effects = [torch.tensor([0.5, -0.25, 9.0, 9.0, 1.0, 9.0]), torch.tensor([0.125, 9.0, -2.0, 9.0])]
    activation = [torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0]), torch.ones(4)]
    split = head_split(model, placed, keep, effects, {"1.1"}, activation)
    assert split.counts == {"1.1": 2, "1.2": 1, "mlp1": 2}
    assert split.effect == pytest.approx({"1.1": 1.5, "1.2": 0.25, "mlp1": 2.125})
    assert (split.aligned, split.total) == (2, 5)
    assert split.even == pytest.approx(3 * 1 / 4)  # 3 head latents, 1 aligned head of 4
    assert split.random == pytest.approx(3 * 3 / 6)  # latents 0, 4, 5 of 6 sit in head 1; MLP latents never
    assert split.random_std == pytest.approx((3 * 0.5 * 0.5 * (6 - 3) / (6 - 1)) ** 0.5)  # hypergeometric
    assert split.random_active == pytest.approx(3 * 3 / 4)  # active: 0, 1, 4, 5
    assert head_split(model, placed, keep, effects, {"1.1"}).random_active != split.random_active  # nan


def test_a_circuit_in_one_dictionary_has_no_edges_however_strong_the_weights_into_it(measured):
    """Why two dictionaries can give 0 edges: edges join circuit nodes only, so with no upstream node above
    T_N the strong weights into the downstream nodes are dropped; one upstream latent in the circuit brings
    its edge."""
    model, placed, _, found, _ = measured
    config = FeatureCircuitConfig(node_method="attrib", node_threshold=0.01, edge_threshold=0.01)
    weights = torch.zeros(placed[0].sae.cfg.d_sae + 1)
    weights[3] = 5.0 * found.n_prompts  # latent 3 of the first dictionary → latent 0 of the second: mean 5
    strong = found._replace(edges={(0, 1, 0): weights})
    nothing_upstream = [Keep(torch.zeros(placed[0].sae.cfg.d_sae, dtype=torch.bool), False),
                        Keep(torch.arange(placed[1].sae.cfg.d_sae) == 0, False),
                        Keep(torch.zeros(placed[2].sae.cfg.d_sae, dtype=torch.bool), False)]
    assert sparse.graph_of(model, placed, strong, nothing_upstream, config, "tiny", {}).edges == ()
    with_upstream = [Keep(torch.arange(placed[0].sae.cfg.d_sae) == 3, False), *nothing_upstream[1:]]
    edges = sparse.graph_of(model, placed, strong, with_upstream, config, "tiny", {}).edges
    assert len(edges) == 1 and edges[0].weight == pytest.approx(5.0)
