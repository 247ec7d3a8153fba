"""Feature dashboards: streaming top-k and samples against brute force, statistics, logit effects, rows."""

import pytest
import torch

from saelab.activations import HookSite, collect
from saelab.evals.core import keep_mask
from saelab.evals.dashboard_rows import example_rows, feature_rows, quantile_picks, vocab_strings
from saelab.evals.features import DashboardConfig, compute_dashboards, unembed_directions
from saelab.sae import SAE, SAEConfig

SITE = "1.resid_post"
CFG = DashboardConfig(
    batch_size=2, n_top=5, window=3, sample_size=6, n_quantiles=3, per_quantile=2, n_logits=4
)


@pytest.fixture(scope="module")
def tokens(random_model):
    generator = torch.Generator().manual_seed(1)
    t = torch.randint(1, random_model.cfg.d_vocab - 1, (5, 12), generator=generator)
    t[:, 0] = random_model.tokenizer.bos_token_id
    return t


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig("relu_l1", 64, 40, hook_site=SITE, seed=2))


@pytest.fixture(scope="module")
def dense(random_model, tokens, sae):
    """Every latent on every token, BOS zeroed: [d_sae, n_contexts * pos]."""
    site = HookSite.parse(SITE)
    x = collect(random_model, tokens, [site])[site]
    latents = sae.encode(x.flatten(0, 1)).detach()
    latents = latents * keep_mask(tokens, random_model.tokenizer.bos_token_id, True).flatten()[:, None]
    return latents.t()


@pytest.fixture(scope="module")
def dash(random_model, tokens, sae):
    return compute_dashboards(random_model, sae, tokens, CFG)


def test_streaming_top_k_equals_brute_force(dash, dense):
    values, index = dense.topk(CFG.n_top, dim=1)
    torch.testing.assert_close(dash.top.activation, values)
    firing = values > 0
    assert torch.equal(dash.top.token_index[firing], index[firing])
    assert firing.any()


def test_windows_hold_neighbouring_activations(dash, dense, tokens):
    context_len = tokens.shape[1]
    for latent in range(0, dense.shape[0], 7):
        for rank in range(CFG.n_top):
            index = int(dash.top.token_index[latent, rank])
            position = index % context_len
            for offset in range(-CFG.window, CFG.window + 1):
                expected = (
                    float(dense[latent, index + offset]) if 0 <= position + offset < context_len else 0.0
                )
                assert float(dash.top.window[latent, rank, offset + CFG.window]) == pytest.approx(expected)


def test_statistics_match_dense(dash, dense):
    fires = (dense > 0).sum(1)
    assert dash.n_tokens == dense.shape[1]
    torch.testing.assert_close(dash.density, fires.float() / dense.shape[1])
    torch.testing.assert_close(dash.max_act, dense.max(1).values)
    alive = fires > 0
    torch.testing.assert_close(dash.mean_act[alive], (dense.sum(1) / fires)[alive])
    assert torch.equal(dash.histogram.sum(1), fires)


def test_sample_is_firing_tokens_without_repeats(dash, dense):
    fires = (dense > 0).sum(1)
    kept = dash.sample.score >= 0
    assert torch.equal(kept.sum(1), fires.clamp(max=CFG.sample_size))
    for latent in range(dense.shape[0]):
        index = dash.sample.token_index[latent][kept[latent]]
        assert len(set(index.tolist())) == index.numel()
        torch.testing.assert_close(dash.sample.activation[latent][kept[latent]], dense[latent, index])


def test_batch_size_does_not_change_top_examples(random_model, tokens, sae, dash):
    other = compute_dashboards(
        random_model, sae, tokens, DashboardConfig(**{**CFG.__dict__, "batch_size": 5})
    )
    torch.testing.assert_close(other.top.activation, dash.top.activation)
    torch.testing.assert_close(other.top.window, dash.top.window)


def test_logit_effects_match_direct_product(random_model, sae, dash):
    ln = random_model.ln_final
    directions = sae.W_dec.detach()
    directions = directions - directions.mean(-1, keepdim=True)
    if hasattr(ln, "w"):
        directions = directions * ln.w
    effects = directions @ random_model.W_U
    torch.testing.assert_close(unembed_directions(random_model, sae.W_dec.detach()), effects)
    top = effects.topk(CFG.n_logits, dim=1)
    assert torch.equal(dash.logits.top_ids, top.indices)
    assert torch.equal(dash.logits.bottom_ids, effects.topk(CFG.n_logits, dim=1, largest=False).indices)


def test_attn_z_dashboards_have_head_attribution(random_model, tokens):
    sae = SAE(SAEConfig("topk", 64, 24, k=4, hook_site="0.attn_z"))
    d = compute_dashboards(random_model, sae, tokens, CFG)
    assert d.head_attribution.shape == (24, 4) and d.logits is not None
    torch.testing.assert_close(d.head_attribution.sum(1), torch.ones(24))


def test_rows(random_model, dash, tokens):
    strings = vocab_strings(random_model.tokenizer, random_model.cfg.d_vocab)
    rows = feature_rows(dash, "s", strings)
    assert len(rows) == 40 and set(rows[0]) >= {"density", "histogram", "top_logits", "head_attribution"}
    alive = [r for r in rows if r["density"] > 0]
    assert all(sum(r["histogram"]["counts"]) == round(r["density"] * dash.n_tokens) for r in alive)
    examples = example_rows(dash, "s", strings, CFG)
    tops = [r for r in examples if r["kind"] == "top"]
    assert tops and all(
        r["activations"][r["center"]] == pytest.approx(r["activation"], abs=1e-4) for r in tops
    )
    assert all(len(r["tokens"]) == len(r["activations"]) <= 2 * CFG.window + 1 for r in examples)
    first = next(r for r in tops if r["latent"] == tops[0]["latent"] and r["rank"] == 0)
    index = int(dash.top.token_index[first["latent"], 0])
    context, position = divmod(index, tokens.shape[1])
    assert first["tokens"][first["center"]] == strings[int(tokens[context, position])]
    assert {r["kind"] for r in examples} > {"top", "quantile_0"}


def test_quantile_picks_are_ordered_groups():
    picks = quantile_picks([5.0, 1.0, 3.0, 2.0, 4.0, 6.0], 3, 2)
    assert picks == [[3, 1], [4, 2], [5, 0]]
    assert quantile_picks([1.0], 3, 2) == [[0], [], []]
    assert quantile_picks([float(i) for i in range(10)], 2, 3) == [[4, 2, 0], [9, 7, 5]]


def test_config_validation():
    with pytest.raises(ValueError, match="n_top"):
        DashboardConfig(n_top=0)
    with pytest.raises(ValueError, match="histogram_range"):
        DashboardConfig(histogram_range=(1.0, 0.5))
