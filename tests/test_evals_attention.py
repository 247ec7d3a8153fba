"""Attention SAEs: head attribution, DFA against the pre-activation, per-head summary."""

import pytest
import torch

from saelab.activations import HookSite, collect
from saelab.evals.attention import (
    HeadSummaryConfig,
    dfa,
    dfa_bias,
    head_attribution,
    head_summary,
    latent_dfa,
    pre_activation,
)
from saelab.sae import SAE, SAEConfig


def test_head_attribution_sums_to_one_and_finds_the_head():
    W_dec = torch.randn(10, 4 * 16)
    attribution = head_attribution(W_dec, 4)
    torch.testing.assert_close(attribution.sum(1), torch.ones(10))
    planted = torch.zeros(3, 64)
    planted[0, 32:48] = torch.randn(16)  # head 2 only
    planted[1, :16], planted[1, 48:] = 1.0, 1.0  # heads 0 and 3 equally
    attribution = head_attribution(planted, 4)
    torch.testing.assert_close(attribution[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(attribution[1], torch.tensor([0.5, 0.0, 0.0, 0.5]))
    torch.testing.assert_close(attribution[2], torch.full((4,), 0.25))  # an all-zero row
    with pytest.raises(ValueError, match="multiple"):
        head_attribution(torch.randn(2, 10), 4)


@pytest.mark.parametrize("architecture", ["relu_l1", "jumprelu", "topk", "gated"])
def test_dfa_sums_to_pre_activation_minus_bias(random_model, architecture):
    sae = SAE(SAEConfig(architecture, 64, 32, k=4, hook_site="1.attn_z", seed=5))
    with torch.no_grad():
        sae.b_dec.normal_()  # a non-zero b_dec makes the bias term matter
        (sae.b_gate if architecture == "gated" else sae.b_enc).normal_()
    tokens = torch.randint(0, 256, (3, 10), generator=torch.Generator().manual_seed(0))
    destination = torch.tensor([9, 4, 6])
    site = HookSite.parse("1.attn_z")
    z = collect(random_model, tokens, [site])[site][torch.arange(3), destination]
    for latent in (0, 7, 31):
        result = latent_dfa(random_model, sae, 1, tokens, latent, destination)
        assert result.contributions.shape == (3, 4, 10)
        torch.testing.assert_close(result.contributions.sum((1, 2)), result.pre_activation - result.bias,
                                   atol=1e-4, rtol=1e-4)
        # sources after the destination get no attention, hence no contribution
        assert result.contributions[1, :, 5:].abs().max() < 1e-6
        x = z - sae.b_dec if sae.architecture.apply_b_dec_to_input else z
        bias = sae.b_gate if architecture == "gated" else sae.b_enc
        torch.testing.assert_close(result.pre_activation, (x @ sae.W_enc[:, latent] + bias[latent]).detach(),
                                   atol=1e-4, rtol=1e-4)
        assert result.bias == pytest.approx(float(dfa_bias(sae, latent).detach()))
        torch.testing.assert_close(pre_activation(sae, z, latent).detach(), result.pre_activation.detach())


def test_dfa_single_token_closed_form():
    pattern = torch.tensor([[0.25, 0.75], [1.0, 0.0]])  # 2 heads, 2 sources
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 3.0]]])  # source, head, d_head
    w = torch.tensor([1.0, 1.0, 1.0, 1.0])
    expected = torch.tensor([[0.25 * 1.0, 0.75 * 2.0], [1.0 * 1.0, 0.0]])
    torch.testing.assert_close(dfa(pattern, v, w), expected)


def test_head_summary_flags_polysemantic_heads():
    n_heads, d_head = 3, 8
    W_dec = torch.zeros(7, n_heads * d_head)
    for i in range(3):  # head 0: three orthogonal latents
        W_dec[i, i] = 1.0
    for i in range(3, 6):  # head 1: three latents writing nearly the same direction
        W_dec[i, d_head:2 * d_head] = torch.ones(d_head) + 0.01 * i
    W_dec[6, 2 * d_head] = 1.0  # head 2: one latent
    summary = head_summary(W_dec, n_heads, HeadSummaryConfig(min_latents=3))
    assert summary.polysemantic == [True, False, False]
    assert sorted(summary.top_latents[0]) == [0, 1, 2] and summary.n_attributed == [3, 3, 1]
    assert "3 latents" in summary.rule
    alive = torch.tensor([1, 1, 0, 1, 1, 1, 1])
    assert head_summary(W_dec, n_heads, HeadSummaryConfig(min_latents=3), alive).polysemantic[0] is False


def test_head_summary_rows():
    from saelab.evals.attention import head_summary_rows

    W_dec = torch.zeros(4, 2 * 4)
    W_dec[0, 0], W_dec[1, 1], W_dec[2, 2], W_dec[3, 5] = 1.0, 1.0, 1.0, 1.0
    rows = head_summary_rows(head_summary(W_dec, 2, HeadSummaryConfig(min_latents=3)), "s", "r")
    values = {r["metric"]: r["value"] for r in rows}
    assert values == {"h0/n_latents": 3.0, "h0/polysemantic": 1.0, "h0/top_latent": values["h0/top_latent"],
                      "h1/n_latents": 1.0, "h1/polysemantic": 0.0, "h1/top_latent": 3.0}
    assert values["h0/top_latent"] in (0.0, 1.0, 2.0) and all(r["eval_kind"] == "attn_heads" for r in rows)
