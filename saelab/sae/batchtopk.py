"""BatchTopK SAE (Bussmann, Leask & Nanda 2024): the top batch*k activations of a whole batch are kept.

Per-input inference uses a single threshold estimated during training (a running mean, then moving average,
of the smallest activation each training batch kept), which makes the SAE a JumpReLU SAE with that
threshold on every latent: see `batchtopk_to_jumprelu`.
"""

import dataclasses
from collections.abc import Iterable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.functional import dense_output, dictionary_init, top_dead_latents, unit_norm_rows_
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.topk import topk_loss
from saelab.sae.types import Architecture, InitialState, SAEOutput

THRESHOLD_RATE = 0.01
"""After 1 / THRESHOLD_RATE steps the threshold estimate becomes a moving average with this rate."""


def batchtopk_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    buffers = {"threshold": torch.zeros(()), "threshold_steps": torch.zeros(())}
    return InitialState(dictionary_init(cfg, generator), buffers)


def _relu_pre_acts(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    return (sae.encoder_input(x) @ sae.W_enc + sae.b_enc).relu()


def batchtopk_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    """Per-input: activations above the estimated threshold (plain ReLU before any estimate)."""
    pre = _relu_pre_acts(sae, x)
    return pre * (pre > sae.threshold)


def batch_topk(pre: Float[Tensor, "batch d_sae"], k: int) -> Float[Tensor, "batch d_sae"]:
    """Keep the batch * k largest entries of the whole batch, zero the rest."""
    values, flat_indices = pre.flatten().topk(pre.shape[0] * k, sorted=False)
    return torch.zeros_like(pre).flatten().scatter(0, flat_indices, values).view_as(pre)


def batchtopk_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None, work: None = None
) -> SAEOutput:
    pre = _relu_pre_acts(sae, x)
    acts = batch_topk(pre, sae.cfg.k)
    return dense_output(sae, x, pre, acts, top_dead_latents(pre, dead_mask, sae.cfg.n_auxk))


def smallest_kept_activation(out: SAEOutput) -> float | None:
    """The smallest positive activation a BatchTopK forward kept (None if it kept none)."""
    kept = out.acts.detach()
    kept = kept[kept > 0]
    return float(kept.min()) if kept.numel() else None


def batchtopk_post_step_(sae: SAE, out: SAEOutput) -> None:
    unit_norm_rows_(sae.W_dec)
    smallest = smallest_kept_activation(out)
    if smallest is None:
        return
    sae.threshold_steps.add_(1)
    rate = max(1.0 / float(sae.threshold_steps), THRESHOLD_RATE)
    sae.threshold.add_(rate * (smallest - sae.threshold))


BATCHTOPK = register_architecture(
    Architecture(
        name="batchtopk",
        init=batchtopk_init,
        encode=batchtopk_encode,
        forward=batchtopk_forward,
        loss=topk_loss,
        post_step_=batchtopk_post_step_,
        apply_b_dec_to_input=True,
        unit_norm_decoder=True,
        uses_k=True,
        selects_over_batch=True,
        default_lr=3e-3,
    )
)


@torch.no_grad()
def estimate_batchtopk_threshold(sae: SAE, batches: Iterable[Float[Tensor, "batch d_in"]]) -> float:
    """Mean over `batches` of the smallest activation BatchTopK keeps: a threshold for per-input inference."""
    smallest = [smallest_kept_activation(sae(x)) for x in batches]
    kept = [s for s in smallest if s is not None]
    if not kept:
        raise ValueError("no batch kept any positive activation; cannot estimate a BatchTopK threshold")
    return sum(kept) / len(kept)


@torch.no_grad()
def batchtopk_to_jumprelu(sae: SAE, threshold: float | None = None) -> SAE:
    """A JumpReLU SAE that applies `threshold` (default: the estimate made during training) per input.

    JumpReLU reads x rather than x - b_dec, so b_dec @ W_enc is folded into b_enc (a transcoder reads x
    already).
    """
    if sae.cfg.architecture != "batchtopk":
        raise ValueError(f"expected a 'batchtopk' SAE, got {sae.cfg.architecture!r}")
    theta = float(sae.threshold) if threshold is None else threshold
    if theta <= 0:
        raise ValueError(
            f"BatchTopK threshold must be positive, got {theta}; train the SAE or pass threshold="
        )
    params = {
        "W_enc": sae.W_enc.clone(),
        "b_enc": sae.b_enc - sae.b_dec @ sae.W_enc if sae.subtracts_b_dec else sae.b_enc.clone(),
        "W_dec": sae.W_dec.clone(),
        "b_dec": sae.b_dec.clone(),
        "threshold": torch.full_like(sae.b_enc, theta),
    }
    if sae.cfg.skip_connection:
        params["W_skip"] = sae.W_skip.clone()
    return SAE(dataclasses.replace(sae.cfg, architecture="jumprelu"), InitialState(params, {}))
