"""Integer codes read out of SAEs."""

import pytest
import torch

from saelab.sae import NO_CODE, SAE, SAEConfig, argmax_codes, codes_from_latents, topk_codes, vq_codes


def test_codes_from_latents_are_latent_indices_strongest_first() -> None:
    latents = torch.tensor([[0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 5.0]])
    assert codes_from_latents(latents, 1).tolist() == [[1], [NO_CODE], [3]]
    assert codes_from_latents(latents, 2).tolist() == [[1, 2], [NO_CODE, NO_CODE], [3, 0]]
    assert codes_from_latents(latents, 2).dtype == torch.int64


@pytest.mark.parametrize("architecture", ["relu_l1", "topk", "jumprelu", "gated", "batchtopk"])
def test_argmax_and_topk_codes_agree_with_encode(architecture: str) -> None:
    sae = SAE(SAEConfig(architecture=architecture, d_in=8, d_sae=32, k=4))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    latents = sae.encode(x)
    codes = argmax_codes(sae, x)
    assert codes.dtype == torch.int64 and codes.shape == (64,)
    active = latents.max(-1).values > 0
    assert torch.equal(codes[active], latents.argmax(-1)[active])
    assert bool((codes[~active] == NO_CODE).all())
    multi = topk_codes(sae, x, 3)
    assert multi.shape == (64, 3) and torch.equal(multi[:, 0], codes)
    with pytest.raises(ValueError, match="33"):
        topk_codes(sae, x, 33)


def test_vq_native_codes_match_argmax_codes() -> None:
    sae = SAE(SAEConfig(architecture="vq", d_in=8, d_sae=16, k=1))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    native = vq_codes(sae, x)
    assert native.dtype == torch.int64 and native.shape == (64, 1)
    assert torch.equal(native[:, 0], argmax_codes(sae, x))
    assert torch.equal(sae(x).indices, native)
    torch.testing.assert_close(sae(x).x_hat, sae.b_dec + sae.W_dec[native[:, 0]])


def test_residual_vq_with_more_codes_reconstructs_better() -> None:
    sae = SAE(SAEConfig(architecture="vq", d_in=8, d_sae=16, k=3))
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(2))
    codes = vq_codes(sae, x)
    assert codes.shape == (32, 3)
    one_code = SAE(SAEConfig(architecture="vq", d_in=8, d_sae=16, k=1))
    with torch.no_grad():
        residual_error = (sae(x).x_hat - x).pow(2).sum(-1).mean()
        one_code_error = (one_code(x).x_hat - x).pow(2).sum(-1).mean()
    assert float(residual_error) < float(one_code_error)
