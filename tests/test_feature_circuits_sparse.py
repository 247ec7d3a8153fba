"""Sparse feature circuits (Marks et al. 2024) on a tiny random float64 model with random dictionaries:
the spliced forward, node effects against finite differences and exact patching, edges against the chain
rule, faithfulness at its two ends."""

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits.problem import PromptBatch, make_problem
from saelab.feature_circuits import sparse
from saelab.feature_circuits.sparse import FeatureCircuitConfig, State
from saelab.sae import SAE, SAEConfig

D_MODEL, N_VOCAB, SEQ = 16, 12, 6


def tiny_model(normalization: str | None = "LN", n_layers: int = 2) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=D_MODEL, n_ctx=SEQ, d_head=4, n_heads=4,
                                  d_mlp=32,
                                  d_vocab=N_VOCAB, act_fn="gelu", normalization_type=normalization, seed=3,
                                  dtype=torch.float64, init_weights=True)
    model = HookedTransformer(cfg)
    model.eval()
    return model


def dictionary(site: str, d_sae: int = 24, seed: int = 0, output_site: str = "",
               arch: str = "relu_l1") -> SAE:
    cfg = SAEConfig(architecture=arch, d_in=D_MODEL, d_sae=d_sae, k=6, hook_site=site,
                    output_site=output_site, dtype="float64", seed=seed)
    sae = SAE(cfg)
    with torch.no_grad():  # biases off zero so that some latents are active and some not
        sae.b_enc.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
        sae.W_enc.mul_(2.0)
    return sae


def tiny_problem(n: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.randint(2, N_VOCAB, (n, SEQ), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(2, N_VOCAB, (n,), generator=generator)
    end = torch.full((n,), SEQ - 1)
    end[0] = SEQ - 2  # one shorter prompt: its last position is padding
    answer, wrong = torch.tensor(0), torch.tensor(1)

    def metric(end_logits):
        return end_logits[:, answer] - end_logits[:, wrong]

    return make_problem("tiny", [PromptBatch(clean[:3], corrupted[:3], end[:3], metric),
                                 PromptBatch(clean[3:], corrupted[3:], end[3:], metric)])


DICTS = {"r0": ("0.resid_post", ""), "a1": ("1.attn_out", ""), "m1": ("1.mlp_out", ""),
         "t1": ("1.resid_mid", "1.mlp_out")}


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    dicts = {"r0": dictionary("0.resid_post", seed=1), "a1": dictionary("1.attn_out", seed=2),
             "m1": dictionary("1.mlp_out", seed=3)}
    return model, dicts, sparse.place(model, dicts), tiny_problem()


def test_spliced_forward_reproduces_the_clean_logits(setup):
    model, _, placed, problem = setup
    transcoder = {"t1": dictionary("1.resid_mid", output_site="1.mlp_out", seed=4, arch="topk"),
                  "r0": dictionary("0.resid_post", seed=1)}
    for placed_here in (placed, sparse.place(model, transcoder)):
        for batch in problem.batches:
            with torch.no_grad():
                plain = model(batch.clean)[torch.arange(len(batch.end)), batch.end]

            def splice(i, x, y, placed_here=placed_here):
                state = sparse.state_of(placed_here[i].sae, x, y)
                return sparse.decode(placed_here[i].sae, state.acts, x) + state.error

            spliced = sparse.spliced_end_logits(model, placed_here, batch.clean, batch.end, splice)
            assert torch.allclose(spliced, plain, atol=1e-10, rtol=0)
            reconstruction_only = sparse.spliced_end_logits(
                model, placed_here, batch.clean, batch.end,
                lambda i, x, y, p=placed_here: p[i].sae.reconstruct(x.reshape(-1, D_MODEL)).reshape(y.shape))
            assert not torch.allclose(reconstruction_only, plain, atol=1e-3)  # the error terms matter here


def test_place_orders_and_checks_dictionaries(setup):
    model, dicts, placed, _ = setup
    assert [p.name for p in placed] == ["r0", "a1", "m1"]
    with pytest.raises(ValueError, match="no dictionaries"):
        sparse.place(model, {})
    with pytest.raises(ValueError, match="same site"):
        sparse.place(model, {"a": dicts["m1"], "b": dictionary("1.resid_mid", output_site="1.mlp_out")})


def _node_effects(model, placed, batch, config):
    clean, _ = sparse.recorded_states(model, placed, batch.clean, batch.end)
    corrupt, _ = sparse.recorded_states(model, placed, batch.corrupted, batch.end)
    grads = sparse.attribution_gradients(model, placed, batch, clean, corrupt, config)
    effects = [sparse.position_effects(g, c, x) for g, c, x in zip(grads, clean, corrupt, strict=True)]
    return clean, corrupt, grads, effects


def _metric_with(model, placed, batch, k, clean_k: State, acts, error) -> float:
    """Σ prompts m with dictionary k's latents and error term set to `acts`, `error` (the rest clean)."""
    def site_fn(i, x, y):
        return sparse.decode(placed[k].sae, acts, x) + error if i == k else y

    with torch.no_grad():
        logits = sparse.spliced_end_logits(model, placed, batch.clean, batch.end, site_fn)
    return float(batch.metric(logits).sum())


def test_attribution_patching_matches_finite_differences(setup):
    model, _, placed, problem = setup
    batch = problem.batches[0]
    clean, corrupt, _, effects = _node_effects(model, placed, batch,
                                               FeatureCircuitConfig(node_method="attrib"))
    eps = 1e-5
    checked = 0
    for k in range(len(placed)):
        delta_acts = corrupt[k].acts - clean[k].acts
        for pos in (2, 4):
            active = (delta_acts[:, pos].abs().sum(0) > 1e-3).nonzero().flatten().tolist()
            for j in active[:2]:
                step = torch.zeros_like(delta_acts)
                step[:, pos, j] = eps * delta_acts[:, pos, j]
                up = _metric_with(model, placed, batch, k, clean[k], clean[k].acts + step, clean[k].error)
                down = _metric_with(model, placed, batch, k, clean[k], clean[k].acts - step, clean[k].error)
                expected = (up - down) / (2 * eps)
                assert float(effects[k].acts[:, pos, j].sum()) == pytest.approx(expected, rel=1e-5, abs=1e-9)
                checked += 1
        step = torch.zeros_like(clean[k].error)
        step[:, 3] = eps * (corrupt[k].error - clean[k].error)[:, 3]
        up = _metric_with(model, placed, batch, k, clean[k], clean[k].acts, clean[k].error + step)
        down = _metric_with(model, placed, batch, k, clean[k], clean[k].acts, clean[k].error - step)
        assert float(effects[k].error[:, 3].sum()) == pytest.approx((up - down) / (2 * eps), rel=1e-5,
                                                                    abs=1e-9)
    assert checked >= 6


def test_integrated_gradients_add_up_to_patching_the_whole_dictionary(setup):
    """IG's completeness: a dictionary's latent and error effects sum to the exact effect of patching all of
    it to the corrupted run (the left Riemann sum's error shrinks like 1/steps; attribution patching is
    off)."""
    model, _, placed, problem = setup
    batch = problem.batches[1]
    _, _, _, ig = _node_effects(model, placed, batch, FeatureCircuitConfig(node_method="ig", ig_steps=100))
    clean, corrupt, _, attrib = _node_effects(model, placed, batch,
                                              FeatureCircuitConfig(node_method="attrib"))
    for k in range(len(placed)):
        exact = (_metric_with(model, placed, batch, k, clean[k], corrupt[k].acts, corrupt[k].error)
                 - _metric_with(model, placed, batch, k, clean[k], clean[k].acts, clean[k].error))
        total_ig = float(ig[k].acts.sum() + ig[k].error.sum())
        total_attrib = float(attrib[k].acts.sum() + attrib[k].error.sum())
        assert total_ig == pytest.approx(exact, rel=0.02, abs=1e-3)
        assert abs(total_ig - exact) < abs(total_attrib - exact)


def test_integrated_gradients_equal_patching_one_latent_where_the_metric_is_linear():
    """No layer norm and a dictionary on the last residual stream: the metric is linear in each latent, so
    IG with many steps gives exactly the effect of patching that one latent."""
    model = tiny_model(normalization=None)
    placed = sparse.place(model, {"r1": dictionary("1.resid_post", seed=5)})
    batch = tiny_problem().batches[0]
    clean, corrupt, _, ig = _node_effects(model, placed, batch, FeatureCircuitConfig(ig_steps=50))
    delta = corrupt[0].acts - clean[0].acts
    moved = (delta[:, 4].abs().sum(0) > 1e-3).nonzero().flatten().tolist()
    assert moved
    for j in moved[:4]:
        patched = clean[0].acts.clone()
        patched[:, 4, j] = corrupt[0].acts[:, 4, j]
        exact = (_metric_with(model, placed, batch, 0, clean[0], patched, clean[0].error)
                 - _metric_with(model, placed, batch, 0, clean[0], clean[0].acts, clean[0].error))
        assert float(ig[0].acts[:, 4, j].sum()) == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert abs(exact) > 1e-6


def test_edges_into_the_next_residual_dictionary_follow_the_chain_rule():
    """With two residual-stream dictionaries every path from the first to the metric runs through the second,
    so the edges out of an upstream node, summed over all downstream nodes (error included), equal its
    attribution-patching node effect."""
    model = tiny_model()
    placed = sparse.place(model,
                          {"r0": dictionary("0.resid_post", seed=1),
                           "r1": dictionary("1.resid_post", seed=6)})
    batch = tiny_problem().batches[0]
    clean, corrupt, grads, effects = _node_effects(model, placed, batch,
                                                   FeatureCircuitConfig(node_method="attrib"))
    edges: sparse.EdgeSums = {}
    sparse.batch_edges(model, placed, batch, clean, corrupt, grads, effects, -1.0, edges)
    total = sum(w for (u, d, _), w in edges.items() if (u, d) == (0, 1))
    node = torch.cat([effects[0].acts.sum(dim=(0, 1)), effects[0].error.sum()[None]])
    assert node.abs().max() > 1e-3
    assert torch.allclose(total, node, atol=1e-9, rtol=1e-7)


def test_faithfulness_is_one_for_the_model_and_zero_for_the_empty_circuit(setup):
    model, _, placed, problem = setup
    means = sparse.corrupted_means(model, placed, problem)
    full = sparse.everything(placed, True)
    m_model = sparse.ablated_metric(model, placed, problem, full, means)
    with torch.no_grad():
        direct = torch.cat([b.metric(model(b.clean)[torch.arange(len(b.end)), b.end])
                            for b in problem.batches])
    assert m_model == pytest.approx(float(direct.mean()), abs=1e-10)
    metrics = sparse.ablation_metrics(model, placed, problem, full)
    assert metrics["faithfulness"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["completeness"] == pytest.approx(0.0, abs=1e-9)
    empty = sparse.ablation_metrics(model, placed, problem, sparse.everything(placed, False))
    assert empty["faithfulness"] == pytest.approx(0.0, abs=1e-9)
    assert abs(empty["m_model"] - empty["m_empty"]) > 1e-2  # the ablation does something


def test_mean_ablation_uses_the_corrupted_mean_per_position(setup):
    model, _, placed, problem = setup
    means = sparse.corrupted_means(model, placed, problem)
    states = [sparse.recorded_states(model, placed, b.corrupted, b.end)[0] for b in problem.batches]
    # position SEQ-1 exists in 5 of the 6 prompts (the first ends one earlier)
    last = torch.cat([states[0][0].acts[1:, -1], states[1][0].acts[:, -1]])
    assert torch.allclose(means[0].acts[-1], last.mean(0))
    assert torch.allclose(means[0].acts[2], torch.cat([s[0].acts[:, 2] for s in states]).mean(0))


def test_feature_circuit_returns_a_graph_with_its_measurements(setup):
    model, dicts, _, problem = setup
    graph = sparse.feature_circuit(model, problem, dicts, FeatureCircuitConfig(node_threshold=0.01,
                                                                               edge_threshold=0.001))
    assert graph.kind == "feature_circuit" and graph.task == "tiny"
    assert graph.dictionaries == ("r0", "a1", "m1")
    assert 0 < graph.metrics["n_nodes"] < graph.metrics["n_candidate_nodes"]
    assert graph.edges and all(abs(e.weight) > 0.001 for e in graph.edges)
    assert all(abs(n.effect) > 0.01 for n in graph.nodes)
    layers = {n.id: (n.layer, n.site) for n in graph.nodes}
    assert all(layers[e.source] <= layers[e.target] for e in graph.edges)
    for name in ("faithfulness", "completeness", "m_model", "m_empty", "m_circuit", "m_complement"):
        assert graph.metrics[name] == graph.metrics[name]  # not NaN


def test_config_validation():
    # under pytest jaxtyping's runtime checks may refuse the Literal first, with a TypeError
    with pytest.raises((ValueError, TypeError), match="node_method|exact"):
        FeatureCircuitConfig(node_method="exact")
    with pytest.raises(ValueError, match="ig_steps"):
        FeatureCircuitConfig(ig_steps=0)
    with pytest.raises(ValueError, match="thresholds"):
        FeatureCircuitConfig(node_threshold=-1)


def test_component_shares_map_latents_to_heads_and_mlps(setup):
    from saelab.feature_circuits.components import component_shares

    model, _, placed, _ = setup
    z = dictionary("1.attn_z", d_sae=8, seed=7)
    with torch.no_grad():
        z.W_dec.zero_()
        z.W_dec[0, 4:8] = 1.0  # latent 0 writes head 1's block only
        z.W_dec[1, :] = 1.0  # latent 1 all heads alike
    nodes, shares = component_shares(model, sparse.place(model, {"z": z})[0])
    assert [n.name for n in nodes] == ["1.0", "1.1", "1.2", "1.3"]
    assert torch.allclose(shares[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(shares[1], torch.full((4,), 0.25))
    nodes, shares = component_shares(model, placed[2])  # 1.mlp_out
    assert [n.name for n in nodes] == ["mlp1"] and torch.all(shares == 1)
    nodes, shares = component_shares(model, placed[1])  # 1.attn_out: shares over heads sum to 1
    assert len(nodes) == 4 and torch.allclose(shares.sum(-1), torch.ones(shares.shape[0]))
    W_O = model.blocks[1].attn.W_O.detach()
    in_head_2 = dictionary("1.attn_out", d_sae=2, seed=8)
    with torch.no_grad():
        in_head_2.W_dec[0] = W_O[2, 0]  # a direction head 2 writes: its largest share is head 2
    _, shares = component_shares(model, sparse.place(model, {"a": in_head_2})[0])
    assert int(shares[0].argmax()) == 2
    nodes, shares = component_shares(model, placed[0])  # residual stream: no component
    assert nodes == [] and shares.shape[1] == 0


def test_output_head_shares_weigh_each_heads_block_by_what_its_W_O_writes(setup):
    """head_share="output" (ours): ‖d_h W_O^h‖ normalised over heads, by hand; a head whose W_O writes nothing
    gets no share however large its block of the decoder."""
    from saelab.feature_circuits.components import FeatureComponentsConfig, component_shares

    model, _, _, _ = setup
    z = dictionary("1.attn_z", d_sae=3, seed=9)
    placed = sparse.place(model, {"z": z})[0]
    W_O = model.blocks[1].attn.W_O.detach()
    _, shares = component_shares(model, placed, "output")
    blocks = z.W_dec.detach().reshape(3, model.cfg.n_heads, model.cfg.d_head)
    written = torch.stack([(blocks[:, h] @ W_O[h]).norm(dim=-1) for h in range(model.cfg.n_heads)], dim=-1)
    expected = (written / written.sum(-1, keepdim=True)).float()
    torch.testing.assert_close(shares, expected, rtol=1e-5, atol=1e-6)
    _, decoder = component_shares(model, placed)
    assert not torch.allclose(shares, decoder)
    with torch.no_grad():
        saved = model.blocks[1].attn.W_O[3].clone()
        model.blocks[1].attn.W_O[3].zero_()
    try:
        _, shares = component_shares(model, placed, "output")
        assert torch.all(shares[:, 3] == 0) and torch.all(decoder[:, 3] > 0)
    finally:
        with torch.no_grad():
            model.blocks[1].attn.W_O[3] = saved
    with torch.no_grad():
        z.W_dec[0].zero_()  # a latent that writes nothing: uniform shares, not a division by zero
    for share in ("output", "decoder"):
        _, zeroed = component_shares(model, sparse.place(model, {"z": z})[0], share)
        assert torch.equal(zeroed[0], torch.full((model.cfg.n_heads,), 1 / model.cfg.n_heads)), share
    from jaxtyping import TypeCheckError

    with pytest.raises((ValueError, TypeCheckError), match="head_share"):  # pytest runs the type checker
        FeatureComponentsConfig(head_share="both")
