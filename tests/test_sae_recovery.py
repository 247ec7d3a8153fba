"""Synthetic ground truth: activations made from a known sparse dictionary; every architecture recovers it."""

import pytest
import torch
from torch import Tensor

from saelab.sae import SAE, LossCoefficients, SAEConfig, latent_fire_counts, replace_dead_codes_, vq_codes
from saelab.sae.synthetic import (
    dominant_feature_batch,
    max_cosine_recovery,
    random_dictionary,
    sparse_feature_batch,
)

D_IN, N_FEATURES, D_SAE, MEAN_ACTIVE = 32, 64, 128, 4
BATCH, LR = 256, 3e-3
DEAD_AFTER_STEPS = 50


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(sae: SAE, next_batch, steps: int, on_step=None) -> None:
    """A bare training loop: Adam, sparsity warm-up over the first 10%, linear lr decay over the last half."""
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    last_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for step in range(steps):
        x = next_batch()
        dead = (step - last_fired) > DEAD_AFTER_STEPS
        out = sae(x, dead)
        loss = sae.loss(x, out, LossCoefficients(sparsity_scale=min(1.0, step / (0.1 * steps))))
        opt.zero_grad()
        loss.total.backward()
        for group in opt.param_groups:
            group["lr"] = LR * min(1.0, 2 * (1 - step / steps))
        opt.step()
        sae.post_step_(out)
        last_fired[latent_fire_counts(out, sae.cfg.d_sae) > 0] = step
        if on_step is not None:
            on_step(step, x, dead, opt)


def _scaled_batches(dictionary: Tensor, generator: torch.Generator):
    scale = (
        D_IN**0.5
        / sparse_feature_batch(dictionary, 4096, float(MEAN_ACTIVE), generator).x.norm(dim=-1).mean()
    )
    return lambda: sparse_feature_batch(dictionary, BATCH, float(MEAN_ACTIVE), generator).x * scale


@pytest.mark.slow
@pytest.mark.parametrize(
    ("architecture", "steps", "extra"),
    [  # TopK-style SAEs learn this in fewer steps than penalty-based ones
        ("topk", 600, {"k": MEAN_ACTIVE}),
        ("batchtopk", 600, {"k": MEAN_ACTIVE}),
        ("jumprelu", 2000, {"l0_coefficient": 1.0}),
        ("relu_l1", 2000, {"l1_coefficient": 2.0}),
        ("gated", 2000, {"l1_coefficient": 5.0}),
    ],
)
def test_recovers_the_true_dictionary(architecture: str, steps: int, extra: dict) -> None:
    generator = torch.Generator().manual_seed(1234)  # not the SAE's seed: its init must not equal the truth
    dictionary = random_dictionary(N_FEATURES, D_IN, generator)
    sae = SAE(SAEConfig(architecture=architecture, d_in=D_IN, d_sae=D_SAE, seed=0, **extra))
    before = float(max_cosine_recovery(dictionary, sae.W_dec.detach()))
    _train(sae, _scaled_batches(dictionary, generator), steps)
    after = float(max_cosine_recovery(dictionary, sae.W_dec.detach()))
    assert before < 0.6
    assert after >= 0.9, f"{architecture}: mean max cosine {after:.3f} (before training {before:.3f})"


def _code_accuracy(codes: Tensor, truth: Tensor) -> float:
    """Map each code to the true feature it most often comes with; fraction of inputs the map gets right."""
    correct = 0
    for code in codes.unique():
        members = truth[codes == code]
        correct += int(torch.bincount(members).max())
    return correct / len(truth)


@pytest.mark.slow
def test_vq_codes_follow_the_dominant_feature() -> None:
    generator = torch.Generator().manual_seed(99)
    dictionary = random_dictionary(32, 32, generator)
    sae = SAE(SAEConfig(architecture="vq", d_in=32, d_sae=64, k=1, seed=0))
    held_out = dominant_feature_batch(dictionary, 4096, n_weak=3, weak_scale=0.3, generator=generator)
    before = _code_accuracy(vq_codes(sae, held_out.x)[:, 0], held_out.dominant)

    def reseed_dead_codes(step: int, x: Tensor, dead: Tensor, opt: torch.optim.Optimizer) -> None:
        if step % 100 == 99:
            replace_dead_codes_(sae, dead, x, generator)

    next_batch = lambda: dominant_feature_batch(dictionary, BATCH, 3, 0.3, generator).x  # noqa: E731
    _train(sae, next_batch, 400, reseed_dead_codes)
    codes = vq_codes(sae, held_out.x)
    after = _code_accuracy(codes[:, 0], held_out.dominant)
    assert codes.dtype == torch.int64 and codes.shape == (4096, 1)
    assert after >= 0.9, f"VQ code accuracy {after:.3f} (before training {before:.3f})"
    assert after > before
