"""BatchTopK: the threshold estimate and the export as a JumpReLU SAE."""

import pytest
import torch

from saelab.sae import (
    SAE,
    SAEConfig,
    batchtopk_to_jumprelu,
    estimate_batchtopk_threshold,
    fraction_of_variance_unexplained,
)
from saelab.sae.synthetic import random_dictionary, sparse_feature_batch

D_IN, N_FEATURES, D_SAE, K = 32, 64, 128, 4


pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_batchtopk(generator: torch.Generator, dictionary: torch.Tensor, steps: int = 300) -> SAE:
    sae = SAE(SAEConfig(architecture="batchtopk", d_in=D_IN, d_sae=D_SAE, k=K))
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    for _ in range(steps):
        x = sparse_feature_batch(dictionary, 256, float(K), generator).x * 4
        out = sae(x)
        opt.zero_grad()
        sae.loss(x, out).total.backward()
        opt.step()
        sae.post_step_(out)
    return sae


def test_jumprelu_export_reconstructs_like_batchtopk_on_the_training_distribution() -> None:
    generator = torch.Generator().manual_seed(5)
    dictionary = random_dictionary(N_FEATURES, D_IN, generator)
    sae = _trained_batchtopk(generator, dictionary)
    jumprelu = batchtopk_to_jumprelu(sae)
    assert float(sae.threshold) > 0

    batches = [sparse_feature_batch(dictionary, 256, float(K), generator).x * 4 for _ in range(8)]
    estimate = estimate_batchtopk_threshold(sae, batches)
    assert estimate == pytest.approx(float(sae.threshold), rel=0.2)

    with torch.no_grad():
        for x in batches:
            batch_x_hat = sae(x).x_hat
            jump_out = jumprelu(x)
            gap = fraction_of_variance_unexplained(jump_out.x_hat, batch_x_hat)
            assert float(gap) < 0.05, (
                f"JumpReLU export differs from BatchTopK by {float(gap):.3f} of variance"
            )
            l0 = float((jump_out.acts > 0).sum(-1).float().mean())
            assert abs(l0 - K) < 0.25 * K
            # per-input inference of the BatchTopK SAE is the same function as the export
            torch.testing.assert_close(sae.encode(x), jumprelu.encode(x), rtol=1e-5, atol=1e-5)


def test_threshold_starts_unset_and_encode_is_plain_relu() -> None:
    sae = SAE(SAEConfig(architecture="batchtopk", d_in=D_IN, d_sae=D_SAE, k=K))
    x = torch.randn(16, D_IN)
    assert float(sae.threshold) == 0
    expected = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).relu()
    torch.testing.assert_close(sae.encode(x), expected)
