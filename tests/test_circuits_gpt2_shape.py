"""The GPT-2-small path on a randomly initialised GPT-2-small-shaped model (12 layers × 12 heads)."""

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits import EAPConfig, SAECodesConfig, run_method
from saelab.circuits.graph import Graph
from saelab.circuits.problem import PromptBatch, make_problem


@pytest.fixture(scope="module")
def gpt2_shaped():
    # GPT-2 small's shape; a short context and a small vocabulary keep the test quick (the graph is the same).
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=32,
                                  d_vocab=512, act_fn="gelu_new", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg, move_to_device=False).eval()
    torch.manual_seed(0)
    clean = torch.randint(0, 512, (2, 6))
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1) % 512
    problem = make_problem("gpt2-shaped", [PromptBatch(clean, corrupted, torch.tensor([5, 4]),
                                                       lambda logits: logits[:, 7] - logits[:, 8])])
    return model, problem


@pytest.mark.slow
def test_eap_scores_the_full_32k_edge_graph(gpt2_shaped):
    model, problem = gpt2_shaped
    graph = Graph.from_config(model.cfg)
    assert len(graph.heads) == 144 and graph.n_edges == 32491
    scores = run_method("eap", model, problem, EAPConfig())
    assert len(scores.edge_scores) == 32491 and len(scores.node_scores) == 144 + 12
    assert {e.name for e in list(scores.edge_scores)[:3]} == {"input->0.0.q", "input->0.1.q", "input->0.2.q"}
    values = torch.tensor(list(scores.edge_scores.values()))
    assert bool(torch.isfinite(values).all()) and float(values.max()) > 0
    assert not model.cfg.use_split_qkv_input and not model.cfg.use_hook_mlp_in  # hooks restored


@pytest.mark.slow
def test_discrete_sae_codes_cover_all_144_heads(gpt2_shaped):
    model, problem = gpt2_shaped
    scores = run_method("sae_codes", model, problem, SAECodesConfig(steps=30))
    assert len(scores.node_scores) == 144
    head_pairs = sum(
        1 for e, v in scores.edge_scores.items() if e.receiver.node.kind == "head" and e.sender.kind == "head"
    )
    assert head_pairs == 3 * sum(12 * 12 * layer for layer in range(12))
