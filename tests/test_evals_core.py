"""Core SAE metrics: splicing, CE recovered, reconstruction metrics against direct computation."""

import math

import pytest
import torch

from saelab.activations import HookSite, collect
from saelab.evals.core import CoreEvalConfig, core_metric_rows, evaluate_core, keep_mask
from saelab.evals.splice import flat_acts, run_with_replacement
from saelab.sae import SAE, SAEConfig
from saelab.sae.types import InitialState


def identity_sae(d: int, site: str) -> SAE:
    """relu(x) − relu(−x) = x: an exact identity as a ReLU SAE with 2·d latents."""
    eye = torch.eye(d)
    params = {"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d),
              "W_dec": torch.cat([eye, -eye], 0), "b_dec": torch.zeros(d)}
    return SAE(SAEConfig("relu_l1", d, 2 * d, k=1, hook_site=site), InitialState(params, {}))


def zero_sae(d: int, site: str) -> SAE:
    params = {
        "W_enc": torch.randn(d, 8),
        "b_enc": torch.full((8,), -1e6),
        "W_dec": torch.zeros(8, d),
        "b_dec": torch.zeros(d),
    }
    return SAE(SAEConfig("relu_l1", d, 8, k=1, hook_site=site), InitialState(params, {}))


@pytest.fixture(scope="module")
def tokens(random_tokens):
    return random_tokens


CFG = CoreEvalConfig(batch_size=2)


@pytest.mark.parametrize("site", ["1.resid_post", "0.attn_z", "1.mlp_post"])
def test_identity_sae_recovers_everything(random_model, tokens, site):
    width = HookSite.parse(site).width(random_model.cfg)
    m = evaluate_core(random_model, identity_sae(width, site), tokens, CFG)
    assert m.fvu < 1e-10 and m.mse < 1e-10 and m.cosine == pytest.approx(1.0)
    assert m.ce_loss_score == pytest.approx(1.0, abs=1e-6)
    assert m.ce_recovered_mean == pytest.approx(1.0, abs=1e-6)
    assert abs(m.kl_div) < 1e-6
    assert m.ce_zero_ablation != pytest.approx(m.ce_clean)  # the ablation really changes the model


@pytest.mark.parametrize("site", ["1.resid_post", "0.attn_z"])
def test_zero_sae_recovers_nothing(random_model, tokens, site):
    width = HookSite.parse(site).width(random_model.cfg)
    m = evaluate_core(random_model, zero_sae(width, site), tokens, CFG)
    assert m.ce_spliced == pytest.approx(m.ce_zero_ablation)
    assert m.ce_loss_score == pytest.approx(0.0, abs=1e-6)
    assert m.fvu > 0.99 and m.l0 == 0 and m.dead_fraction == 1.0


@pytest.mark.parametrize("site", ["1.resid_mid", "0.attn_z", "0.mlp_post"])
def test_splicing_with_error_term_reproduces_logits(random_model, tokens, site):
    width = HookSite.parse(site).width(random_model.cfg)
    sae = SAE(SAEConfig("topk", width, 32, k=4, hook_site=site))
    parsed = HookSite.parse(site)
    x = collect(random_model, tokens, [parsed])[parsed].reshape(*tokens.shape, -1)
    x_hat = sae.decode(sae.encode(x.flatten(0, 1))).view_as(x).detach()
    with torch.no_grad():
        clean = random_model(tokens)
    restored = run_with_replacement(random_model, tokens, parsed, x_hat + (x - x_hat))
    spliced = run_with_replacement(random_model, tokens, parsed, x_hat)
    torch.testing.assert_close(restored, clean, atol=1e-4, rtol=1e-4)
    assert (spliced - clean).abs().max() > 1e-2  # the SAE alone does change the logits
    m = evaluate_core(random_model, sae, tokens, CFG)
    assert m.ce_with_error == pytest.approx(m.ce_clean, abs=1e-5)
    assert abs(m.kl_with_error) < 1e-6 and m.kl_div > 1e-4


def test_reconstruction_metrics_match_direct_computation(random_model, tokens):
    site = HookSite.parse("1.resid_post")
    sae = SAE(SAEConfig("relu_l1", 64, 48, hook_site="1.resid_post", seed=3))
    x = collect(random_model, tokens, [site])[site]
    x = x[keep_mask(tokens, random_model.tokenizer.bos_token_id, True)]
    latents = sae.encode(x).detach()
    x_hat = sae.decode(latents).detach()
    m = evaluate_core(random_model, sae, tokens, CoreEvalConfig(batch_size=3, splice=False))
    assert (
        m.n_tokens == x.shape[0] == 4 * 15 - int((tokens[:, 1:] == random_model.tokenizer.bos_token_id).sum())
    )
    assert m.mse == pytest.approx(float((x_hat - x).pow(2).sum(-1).mean()), rel=1e-4)
    assert m.fvu == pytest.approx(float((x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), rel=1e-4)
    l0 = (latents > 0).sum(-1)
    assert m.l0 == pytest.approx(float(l0.float().mean()))
    assert m.l0_histogram.sum() == x.shape[0] and int(m.l0_histogram.argmax()) == int(l0.mode().values)
    assert m.dead_fraction == pytest.approx(float(((latents > 0).sum(0) == 0).float().mean()))
    assert m.dense_fraction == pytest.approx(float(((latents > 0).float().mean(0) > 0.1).float().mean()))
    assert math.isnan(m.ce_spliced) and m.splice_skipped


def test_head_result_sae_skips_splice_with_reason(random_model, tokens):
    width = HookSite.parse("0.head_result").width(random_model.cfg)
    m = evaluate_core(
        random_model, SAE(SAEConfig("topk", width, 16, k=2, hook_site="0.head_result")), tokens, CFG
    )
    assert "head_result" in m.splice_skipped and math.isnan(m.kl_div) and not math.isnan(m.fvu)
    names = {r["metric"] for r in core_metric_rows(m, "sae", "run")}
    assert "fvu" in names and "kl_div" not in names


def test_rows_and_validation(random_model, tokens):
    m = evaluate_core(random_model, identity_sae(64, "0.resid_pre"), tokens, CFG)
    rows = core_metric_rows(m, "my-sae", "run-1")
    by_name = {r["metric"]: r["value"] for r in rows}
    assert {"fvu", "l0", "mse", "dead_fraction", "ce_loss_score", "kl_div", "l0_p50"} <= set(by_name)
    assert all(r["eval_kind"] == "core" and r["sae_id"] == "my-sae" for r in rows)
    with pytest.raises(ValueError, match="d_in"):
        evaluate_core(random_model, identity_sae(64, "0.mlp_post"), tokens, CFG)
    with pytest.raises(ValueError, match="dense_threshold"):
        CoreEvalConfig(dense_threshold=0.0)


def test_flat_acts_concatenates_heads(random_model, tokens):
    site = HookSite.parse("0.attn_z")
    z = torch.randn(2, 3, random_model.cfg.n_heads, random_model.cfg.d_head)
    flat = flat_acts(site, z, random_model)
    assert flat.shape == (2, 3, 64) and torch.equal(flat[..., 16:32], z[:, :, 1])
