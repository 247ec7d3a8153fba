"""Attribution graphs (saelab.feature_circuits.attribution) against an independent, hand-written frozen linear
model: every edge equals the change in the target's pre-activation when its source is removed; edges plus the
constant part reproduce each pre-activation; the replacement reproduces the logits; pruning and scores follow
circuit-tracer's definitions."""

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.feature_circuits.attribution import (
    AttributionConfig,
    attribute,
    attribution_graph,
    frozen_forward,
    graph_scores,
    influence,
    normalized_adjacency,
    prune,
    replacement_state,
)
from saelab.feature_circuits.types import node_id
from saelab.sae import SAEConfig
from saelab.sae.model import SAE
from saelab.sae.types import InitialState

D_MODEL, N_LAYERS, D_SAE, K, N_POS, D_VOCAB = 16, 2, 24, 5, 6, 40


def tiny_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=D_MODEL, n_heads=2, d_head=8, d_mlp=32, d_vocab=D_VOCAB, n_ctx=16,
        act_fn="gelu", normalization_type="LN", seed=3, dtype=torch.float64,
    )
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial LayerNorm weights and biases everywhere
        for name, p in model.named_parameters():
            if name.endswith((".w", ".b", "b_V", "b_O", "b_U", "b_in", "b_out")):
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def random_transcoder(layer: int, skip: bool, seed: int) -> SAE:
    cfg = SAEConfig(architecture="topk", d_in=D_MODEL, d_sae=D_SAE, k=K, hook_site=f"{layer}.resid_mid",
                    output_site=f"{layer}.mlp_out", skip_connection=skip, dtype="float64", seed=seed)
    g = torch.Generator().manual_seed(seed)
    params = {
        "W_enc": torch.randn(D_MODEL, D_SAE, generator=g) / D_MODEL**0.5,
        "b_enc": 0.5 + 0.1 * torch.randn(D_SAE, generator=g),  # most top-k pre-activations positive
        "W_dec": torch.randn(D_SAE, D_MODEL, generator=g) / D_SAE**0.5,
        "b_dec": 0.3 * torch.randn(D_MODEL, generator=g),
    }
    if skip:
        params["W_skip"] = 0.2 * torch.randn(D_MODEL, D_MODEL, generator=g)
    return SAE(cfg, InitialState(params, {}))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tiny_model()
    transcoders = [random_transcoder(0, skip=False, seed=1), random_transcoder(1, skip=True, seed=2)]
    tokens = torch.tensor([0, 5, 17, 3, 29, 11])
    return model, transcoders, tokens


def hand_frozen(model, transcoders, tokens, cache, keep):
    """The replacement model written out by hand: attention patterns and LN scales from `cache` (the clean
    run), MLP outputs = sum of kept latents' a*W_dec + b_dec + kept error + skip(x); `keep` says which sources
    are present: keep["token"][p], keep["latent"][(layer, p, i)], keep["error"][(layer, p)]. Returns the
    pre-activation of every latent of every layer [layer][pos, d_sae] and the demeaned logits at the last
    position."""
    state = keep["state"]
    x = model.W_E[tokens] * keep["token"][:, None] + model.W_pos[: len(tokens)]
    pre_all = []
    for layer, block in enumerate(model.blocks):
        x = x + frozen_attention(block, x, cache, layer)
        sae = transcoders[layer]
        # a transcoder's encoder reads x; an SAE's topk encoder reads x - b_dec
        W, b = sae.W_enc, sae.b_enc - (sae.b_dec @ sae.W_enc if sae.subtracts_b_dec else 0)
        pre_all.append(x @ W + b)
        acts = state.acts[layer] * keep["latent"][layer]
        out = acts @ sae.W_dec + sae.b_dec + state.errors[layer] * keep["error"][layer][:, None]
        out = out + (x @ sae.W_skip if sae.cfg.skip_connection else 0)
        if state.zero_first_position:  # no nodes at position 0: its true output, but with a live skip term
            clean_x = state.inputs[layer][0]
            skip = (x[0] - clean_x) @ sae.W_skip if sae.cfg.skip_connection else 0
            out[0] = cache[f"blocks.{layer}.hook_mlp_out"][0, 0] + skip
        x = x + out
    final = frozen_ln(x, cache["ln_final.hook_scale"][0], model.ln_final)
    logits = final @ model.W_U + model.b_U
    return pre_all, logits[-1] - logits[-1].mean()


def frozen_ln(x, scale, ln):
    return (x - x.mean(-1, keepdim=True)) / scale * ln.w + ln.b


def frozen_attention(block, x, cache, layer):
    h = frozen_ln(x, cache[f"blocks.{layer}.ln1.hook_scale"][0], block.ln1)
    v = torch.einsum("pd,hde->phe", h, block.attn.W_V) + block.attn.b_V
    z = torch.einsum("hqk,khe->qhe", cache[f"blocks.{layer}.attn.hook_pattern"][0], v)
    return torch.einsum("qhe,hed->qd", z, block.attn.W_O) + block.attn.b_O


def all_kept(state):
    return {
        "state": state,
        "token": torch.ones(N_POS, dtype=torch.float64),
        "latent": [torch.ones(N_POS, D_SAE, dtype=torch.float64) for _ in range(N_LAYERS)],
        "error": [torch.ones(N_POS, dtype=torch.float64) for _ in range(N_LAYERS)],
    }


def target_values(pre_all, demeaned, graph):
    """Each target row's pre-activation from the hand model: latents (in node order), then logits."""
    latents = torch.stack([pre_all[layer][pos, i] for layer, pos, i in graph.features.tolist()])
    return torch.cat([latents, demeaned[graph.logit_tokens]])


def brute_force_columns(model, transcoders, tokens, graph, state, cache):
    """Column s of the adjacency by removing source s from the hand model (exact: the model is affine)."""
    with torch.no_grad():
        base = target_values(*hand_frozen(model, transcoders, tokens, cache, all_kept(state)), graph)
        n_features = len(graph.features)
        columns = []
        for s in range(n_features + (N_LAYERS + 1) * N_POS):
            keep = all_kept(state)
            if s < n_features:
                layer, pos, i = graph.features[s].tolist()
                keep["latent"][layer][pos, i] = 0
            elif s < n_features + N_LAYERS * N_POS:
                layer, pos = divmod(s - n_features, N_POS)
                keep["error"][layer][pos] = 0
            else:
                keep["token"][s - n_features - N_LAYERS * N_POS] = 0
            columns.append(base - target_values(*hand_frozen(model, transcoders, tokens, cache, keep), graph))
    return base, torch.stack(columns, 1)


def target_rows(graph):
    n = len(graph.adjacency)
    n_logits = len(graph.logit_tokens)
    return torch.cat([torch.arange(len(graph.features)), torch.arange(n - n_logits, n)])


@pytest.mark.parametrize("zero_first", [False, True])
def test_every_edge_equals_brute_force_in_the_frozen_model(setup, zero_first):
    model, transcoders, tokens = setup
    config = AttributionConfig(zero_first_position=zero_first, max_n_logits=4, desired_logit_prob=0.99,
                               batch_size=7)
    graph = attribute(model, tokens, transcoders, config)
    state = replacement_state(model, tokens, transcoders, zero_first)
    _, cache = model.run_with_cache(tokens[None])
    _, expected = brute_force_columns(model, transcoders, tokens, graph, state, cache)
    got = graph.adjacency[target_rows(graph), : expected.shape[1]]
    assert len(graph.features) > 10 and len(graph.logit_tokens) >= 2
    assert got.abs().max() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # rows of error and token nodes are empty (they have no inputs); no edge runs backwards in layers or time
    assert graph.adjacency[len(graph.features) : -len(graph.logit_tokens)].abs().sum() == 0


def test_edges_plus_constants_reproduce_each_pre_activation(setup):
    model, transcoders, tokens = setup
    config = AttributionConfig(zero_first_position=True, max_n_logits=4, desired_logit_prob=0.99)
    graph = attribute(model, tokens, transcoders, config)
    state = replacement_state(model, tokens, transcoders, True)
    _, cache = model.run_with_cache(tokens[None])
    nothing = all_kept(state)
    nothing["token"].zero_()
    for layer in range(N_LAYERS):
        nothing["latent"][layer].zero_()
        nothing["error"][layer].zero_()
    with torch.no_grad():
        constant = target_values(*hand_frozen(model, transcoders, tokens, cache, nothing), graph)
    rows = graph.adjacency[target_rows(graph)].sum(1)
    # the true values: latent pre-activations equal their activations; logits demeaned from the clean run
    logits = state.logits[-1]
    true = torch.cat([graph.activations, (logits - logits.mean())[graph.logit_tokens]])
    torch.testing.assert_close(rows + constant, true, rtol=1e-9, atol=1e-9)


def test_the_frozen_replacement_reproduces_the_logits(setup):
    model, transcoders, tokens = setup
    for zero_first in (False, True):
        state = replacement_state(model, tokens, transcoders, zero_first)
        frozen = frozen_forward(model, state, transcoders, batch=2)
        logits = model.unembed(frozen.final)
        torch.testing.assert_close(logits[1], state.logits, rtol=1e-10, atol=1e-10)
        # and the transcoders really are imperfect: the error nodes carry something
        assert state.errors.abs().max() > 0.1


def test_influence_is_the_neumann_series_and_pruning_keeps_tokens_and_logits(setup):
    model, transcoders, tokens = setup
    graph = attribute(model, tokens, transcoders, AttributionConfig(max_n_logits=3, desired_logit_prob=0.99))
    A = normalized_adjacency(graph.adjacency)
    w = torch.zeros(len(A), dtype=A.dtype)
    w[-len(graph.logit_tokens) :] = graph.logit_probs
    eye = torch.eye(len(A), dtype=A.dtype)
    closed_form = w @ (torch.linalg.inv(eye - A) - eye)
    torch.testing.assert_close(influence(A, w), closed_form, rtol=1e-9, atol=1e-12)
    kept = prune(graph, 0.8, 0.98)
    n_always = len(graph.logit_tokens) + N_POS
    assert kept.node_mask[-n_always:].all() and 0 < kept.node_mask.sum() < len(A)
    assert not kept.edge_mask[~kept.node_mask].any() and not kept.edge_mask[:, ~kept.node_mask].any()
    full = prune(graph, 1.0, 1.0)
    assert full.node_mask.sum() >= kept.node_mask.sum()


def test_graph_scores_by_hand_on_a_three_node_chain():
    """token -> error -> logit with weights 1 and 3 and token -> logit with weight 1: the logit's input is
    3/4 error, so the token's influence is 1/4 + 3/4 * 1 = 1 and the error's 3/4."""
    from saelab.feature_circuits.attribution import Attribution

    # order: [no latents], error (1 layer x 1 pos), token (1 pos), logit
    # error <- token; logit <- both
    adjacency = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 0.0]])
    graph = Attribution(adjacency, torch.zeros(0, 3, dtype=torch.long), torch.zeros(0), torch.tensor([7]),
                        torch.tensor([2]), torch.tensor([1.0]), 1)
    scores = graph_scores(graph)
    assert scores.replacement_score == pytest.approx(1.0 / (1.0 + 0.75))
    # completeness: error node's input all from token (1), logit's 1/4 non-error; weights 0.75 and 1
    assert scores.completeness_score == pytest.approx((0.75 * 1 + 1 * 0.25 + 1.0 * 1) / (0.75 + 1 + 1))


def test_attribution_graph_returns_a_feature_graph(setup):
    model, transcoders, tokens = setup
    named = {"tc0": transcoders[0], "tc1": transcoders[1]}
    graph = attribution_graph(model, tokens, named,
                              AttributionConfig(max_n_logits=3, desired_logit_prob=0.99))
    assert graph.kind == "attribution_graph" and graph.dictionaries == ("tc0", "tc1")
    ids = {n.id for n in graph.nodes}
    assert {node_id("token", position=p) for p in range(N_POS)} <= ids
    assert all(n.dictionary in ("tc0", "tc1") for n in graph.nodes if n.kind in ("latent", "error"))
    assert graph.edges and all(e.weight != 0 for e in graph.edges)
    assert 0 <= graph.metrics["replacement_score"] <= 1 and 0 <= graph.metrics["completeness_score"] <= 1


def test_bad_transcoder_sets_are_refused(setup):
    model, transcoders, tokens = setup
    with pytest.raises(ValueError, match="one per MLP"):
        attribute(model, tokens, transcoders[:1], AttributionConfig())
    with pytest.raises(ValueError, match="expected '0.mlp_out'"):
        attribute(model, tokens, transcoders[::-1], AttributionConfig())
    with pytest.raises(ValueError, match="node_threshold"):
        AttributionConfig(node_threshold=1.5)


def test_a_dictionary_whose_activations_are_not_affine_is_refused(setup):
    """A gated transcoder's active latents carry the magnitude path, not the gate's pre-activation that the
    edges would sum to: attribution refuses it in one line instead of returning edges that do not add up."""
    model, transcoders, tokens = setup
    cfg = SAEConfig(architecture="gated", d_in=D_MODEL, d_sae=D_SAE, hook_site="0.resid_mid",
                    output_site="0.mlp_out", dtype="float64", seed=3)
    gated = SAE(cfg)
    with torch.no_grad():
        for name, value in gated.named_parameters():
            if name.startswith("b_"):
                value.fill_(0.5)  # most gates open, magnitudes positive
            if name == "r_mag":
                value.fill_(0.7)  # magnitude path scaled away from the gate's pre-activation
    with pytest.raises(ValueError, match="'gated' dictionary at '0.resid_mid'.*need one of .*topk"):
        attribute(model, tokens, [gated, transcoders[1]], AttributionConfig())
