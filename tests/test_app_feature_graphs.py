"""The Feature graphs page's logic without the app: pruning, layout (layers left to right), edge widths, hover
text, feature-page links, and ablating/steering a latent (checked against the same edit computed by hand from
a cached run)."""

import pytest
import torch
from synthetic_graphs import synthetic_graph

from saelab.app_support.feature_graphs import (
    edge_widths,
    feature_page_params,
    hover_text,
    latent_nodes,
    layout,
    prune,
    readable_edge_threshold,
    top_tokens_by_node,
)
from saelab.app_support.steering import LatentEdit, edit_latent
from saelab.errors import SaelabError
from saelab.feature_circuits.types import FeatureEdge, FeatureGraph, FeatureNode, node_id
from saelab.sae import SAE, SAEConfig


def _tiny() -> FeatureGraph:
    t = FeatureNode(node_id("token", position=0), "token", None, index=5, position=0, label="a")
    t2 = FeatureNode(node_id("token", position=1), "token", None, index=6, position=1, label="b")
    a = FeatureNode(node_id("latent", "0.resid_post", 1, 1), "latent", 0, "0.resid_post", "d0", 1, 1, 2.0,
                    0.5)
    b = FeatureNode(node_id("latent", "0.mlp_out", 2, 1), "latent", 0, "0.mlp_out", "d1", 2, 1, 1.0, -0.05)
    c = FeatureNode(node_id("latent", "1.attn_out", 3, 1), "latent", 1, "1.attn_out", "d2", 3, 1, 1.0, 0.3)
    e = FeatureNode(node_id("error", "1.attn_out", position=1), "error", 1, "1.attn_out", "d2", None, 1, 0.0,
                    0.01)
    out = FeatureNode(node_id("logit", index=9), "logit", 2, index=9, effect=1.0, label="z")
    edges = (FeatureEdge(t.id, a.id, 1.0), FeatureEdge(t2.id, b.id, -0.2), FeatureEdge(a.id, c.id, -0.8),
             FeatureEdge(b.id, c.id, 0.1), FeatureEdge(c.id, out.id, 2.0), FeatureEdge(e.id, out.id, 0.05))
    return FeatureGraph("attribution_graph", "m", ("d0", "d1", "d2"), (t, t2, a, b, c, e, out), edges)


def test_prune_by_edge_weight_keeps_nodes_and_drops_weak_edges_and_untouched_tokens():
    graph = _tiny()
    pruned = prune(graph, min_edge_weight=0.5)
    assert [(e.source, e.target) for e in pruned.edges] == [(graph.nodes[0].id, graph.nodes[2].id),
                                                            (graph.nodes[2].id, graph.nodes[4].id),
                                                            (graph.nodes[4].id, graph.nodes[6].id)]
    assert "token@1" not in {n.id for n in pruned.nodes}  # its only edge (-0.2) is gone
    assert {n.kind for n in pruned.nodes} == {"token", "latent", "error", "logit"}
    assert prune(graph).edges == graph.edges and prune(graph).nodes == graph.nodes


def test_prune_by_node_effect_uses_magnitudes_and_drops_their_edges():
    graph = _tiny()
    pruned = prune(graph, min_node_effect=0.1)
    ids = {n.id for n in pruned.nodes}
    assert "latent:0.resid_post:1@1" in ids and "latent:1.attn_out:3@1" in ids  # 0.5 and 0.3
    assert "latent:0.mlp_out:2@1" not in ids  # |-0.05| < 0.1
    assert "error:1.attn_out@1" not in ids and "logit:9" in ids
    assert all(e.source in ids and e.target in ids for e in pruned.edges)
    assert len(pruned.edges) == 3
    with pytest.raises(ValueError, match="must be >= 0"):
        prune(graph, min_edge_weight=-1)


def test_layout_puts_tokens_left_logits_right_and_sites_in_model_order():
    graph = _tiny()
    placed = layout(graph)
    x = {n: xy[0] for n, xy in placed.xy.items()}
    assert placed.columns == ["tokens", "0.mlp_out", "0.resid_post", "1.attn_out", "logits"]
    assert x["token@0"] == x["token@1"] == 0 and x["logit:9"] == 4
    assert x["latent:0.mlp_out:2@1"] < x["latent:0.resid_post:1@1"] < x["latent:1.attn_out:3@1"]
    y = {n: xy[1] for n, xy in placed.xy.items()}
    assert y["token@0"] < y["token@1"]  # by position, top to bottom
    assert y["latent:1.attn_out:3@1"] < y["error:1.attn_out@1"]  # same position: larger |effect| first
    assert all(0 < v < 1 for v in y.values())


def test_layout_of_a_graph_without_positions():
    graph = synthetic_graph(kind="feature_circuit", positions=False)
    placed = layout(graph)
    assert placed.columns == ["tokens", "0.attn_z", "1.resid_post", "logits"]
    assert len(placed.xy) == len(graph.nodes)


def test_readable_edge_threshold_keeps_at_most_the_strongest_edges():
    graph = _tiny()  # |weights| 2, 1, 0.8, 0.2, 0.1, 0.05
    assert readable_edge_threshold(graph, max_edges=10) == 0.0
    for n in (1, 3, 5):
        threshold = readable_edge_threshold(graph, max_edges=n)
        assert len(prune(graph, min_edge_weight=threshold).edges) == n
    with pytest.raises(ValueError, match="max_edges"):
        readable_edge_threshold(graph, 0)


def test_edge_widths_follow_magnitude():
    assert edge_widths([1.0, -2.0, 0.0], thinnest=0.5, widest=6.0) == [3.0, 6.0, 0.5]
    assert edge_widths([0.0]) == [0.5] and edge_widths([]) == []


def test_hover_text_names_the_latent_its_numbers_and_top_tokens_escaped():
    node = _tiny().nodes[2]
    text = hover_text(node, ["<b>", "\n"])
    assert "latent 1 @1" in text and "d0 (0.resid_post)" in text
    assert "activation 2" in text and "effect 0.5" in text
    assert "&lt;b&gt;" in text and "<b>" not in text and "↵" in text
    assert "no dashboard" in hover_text(node, [])
    assert "top activating" not in hover_text(_tiny().nodes[0])


def test_feature_links_and_pickers():
    graph = _tiny()
    assert feature_page_params(graph.nodes[2]) == {"sae": "d0", "latent": "1"}
    assert feature_page_params(graph.nodes[0]) is None and feature_page_params(graph.nodes[5]) is None
    assert [n.index for n in latent_nodes(graph)] == [1, 3, 2]  # |effect| 0.5, 0.3, 0.05
    tops = top_tokens_by_node(graph, {("d0", 1): ["x", "y"], ("d1", 9): ["no"]})
    assert tops["latent:0.resid_post:1@1"] == ["x", "y"] and tops["latent:0.mlp_out:2@1"] == []


# ---------------------------------------------------------------- ablate / steer

def _sae(random_model, site: str, output_site: str = "", seed: int = 0) -> SAE:
    cfg = SAEConfig("topk", d_in=64, d_sae=32, k=8, hook_site=site, output_site=output_site,
                    model_name="saelab-random", normalize_activations=False, seed=seed)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_dec.mul_(20.0)  # random init decodes small vectors; make an edit move the logits visibly
    return sae


TEXT = "When Mary and John went to the store"


def _strongest_at_last(model, sae, site_hook) -> int:
    _, cache = model.run_with_cache(model.to_tokens(TEXT))
    return int(sae.encode(cache[site_hook][0, -1:])[0].argmax())


def test_scale_one_changes_nothing(random_model):
    sae = _sae(random_model, "1.resid_post")
    result = edit_latent(random_model, sae, TEXT, LatentEdit(3, scale=1.0))
    assert result.logit_diff.abs().max() < 1e-5
    assert [t.token_id for t in result.before] == [t.token_id for t in result.after]


@pytest.mark.parametrize("scale", [0.0, 3.0, -1.0])
def test_edit_of_a_final_layer_sae_matches_the_hand_computation(random_model, scale):
    model, hook = random_model, "blocks.1.hook_resid_post"
    sae = _sae(model, "1.resid_post")
    latent = _strongest_at_last(model, sae, hook)
    result = edit_latent(model, sae, TEXT, LatentEdit(latent, scale=scale))
    _, cache = model.run_with_cache(model.to_tokens(TEXT))
    resid = cache[hook][0]
    f = sae.encode(resid)[:, latent]
    assert torch.allclose(result.latent_acts, f, atol=1e-5) and f[-1] > 0
    edited = resid + (scale - 1) * f[:, None] * sae.W_dec[latent]
    expected = model.unembed(model.ln_final(edited[None]))[0, -1]
    assert torch.allclose(result.logit_diff, (expected - model(model.to_tokens(TEXT))[0, -1]).detach(),
                          atol=1e-4)
    assert result.logit_diff.abs().max() > 1e-2  # the edit did something
    assert result.after[0].logit == pytest.approx(float(expected.detach().max()), abs=1e-4)
    assert result.before[0].prob >= result.before[1].prob and len(result.before) == 10


def test_an_edit_at_one_position_only_touches_that_position(random_model):
    model, hook = random_model, "blocks.1.hook_resid_post"
    sae = _sae(model, "1.resid_post")
    latent = _strongest_at_last(model, sae, hook)
    last = len(model.to_str_tokens(TEXT)) - 1
    assert edit_latent(model, sae, TEXT, LatentEdit(latent, 0.0, position=1)).logit_diff.abs().max() < 1e-5
    assert edit_latent(model, sae, TEXT, LatentEdit(latent, 0.0, position=last)).logit_diff.abs().max() > 1e-2


def test_transcoder_reads_its_input_site_and_edits_its_output_site(random_model):
    model = random_model
    sae = _sae(model, "0.resid_mid", output_site="0.mlp_out", seed=1)
    tokens = model.to_tokens(TEXT)
    _, cache = model.run_with_cache(tokens)
    f = sae.encode(cache["blocks.0.hook_resid_mid"][0])
    latent = int(f[-1].argmax())
    result = edit_latent(model, sae, TEXT, LatentEdit(latent, scale=0.0))
    assert torch.allclose(result.latent_acts, f[:, latent], atol=1e-5)
    edited = cache["blocks.0.hook_mlp_out"] - f[:, latent][None, :, None] * sae.W_dec[latent]
    hooks = [("blocks.0.hook_mlp_out", lambda t, hook: edited)]
    expected = model.run_with_hooks(tokens, fwd_hooks=hooks)[0, -1]
    assert torch.allclose(result.logit_diff, (expected - model(tokens)[0, -1]).detach(), atol=1e-4)
    assert result.logit_diff.abs().max() > 1e-3


def test_bad_edits_are_one_line_errors(random_model):
    sae = _sae(random_model, "1.resid_post")
    with pytest.raises(SaelabError, match="latent 32 is out of range"):
        edit_latent(random_model, sae, TEXT, LatentEdit(32))
    with pytest.raises(SaelabError, match="prompt is empty"):
        edit_latent(random_model, sae, "  ", LatentEdit(1))
    with pytest.raises(SaelabError, match="position 99 is out of range"):
        edit_latent(random_model, sae, TEXT, LatentEdit(1, position=99))
    with pytest.raises(ValueError, match="scale must be between"):
        LatentEdit(1, scale=1e6)
