"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"): per-latent thresholds trained through a
straight-through estimator with a rectangle kernel, and an L0 penalty.

The threshold is a parameter itself, not exp(log_threshold) as in the paper: Adam moves a log-parameter
multiplicatively, so a small initial threshold barely moves within a typical budget (as SAELens found).
"""

from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.functional import dense_output, dictionary_init, mse_loss, rectangle, unit_norm_decoder_
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput


def _threshold_grad(pre: Tensor, threshold: Tensor, bandwidth: float, scale: Tensor, grad: Tensor) -> Tensor:
    """Pseudo-derivative w.r.t. the threshold: -(scale / bandwidth) * K((pre - threshold) / bandwidth)."""
    ste = -(scale / bandwidth) * rectangle((pre - threshold) / bandwidth) * grad
    return ste.reshape(-1, threshold.shape[-1]).sum(0)


class _JumpReLU(torch.autograd.Function):
    """pre * H(pre - threshold); exact gradient to pre, straight-through estimate to the threshold."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        return (pre > threshold) * grad, _threshold_grad(pre, threshold, ctx.bandwidth, threshold, grad), None


class _Step(torch.autograd.Function):
    """H(pre - threshold); no gradient to pre (as in the paper), straight-through estimate to the threshold."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        one = torch.ones((), dtype=pre.dtype, device=pre.device)
        return None, _threshold_grad(pre, threshold, ctx.bandwidth, one, grad), None


def jumprelu(
    pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float
) -> Tensor:
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Float[Tensor, "batch d_sae"], threshold: Float[Tensor, " d_sae"], bandwidth: float) -> Tensor:
    return _Step.apply(pre, threshold, bandwidth)


def jumprelu_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    params = dictionary_init(cfg, generator)
    params["threshold"] = torch.full((cfg.d_sae,), cfg.jumprelu_init_threshold)
    return InitialState(params, {})


def _pre_acts(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    return x @ sae.W_enc + sae.b_enc


def jumprelu_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    pre = _pre_acts(sae, x)
    return pre * (pre > sae.threshold)


def jumprelu_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None, work: None = None
) -> SAEOutput:
    pre = _pre_acts(sae, x)
    acts = jumprelu(pre, sae.threshold, sae.cfg.jumprelu_bandwidth)
    return dense_output(sae, x, pre, acts)


def jumprelu_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_target"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    l0 = step(out.pre_acts, sae.threshold, sae.cfg.jumprelu_bandwidth).sum(-1).mean()
    return LossOutput(mse + sae.cfg.l0_coefficient * coef.sparsity_scale * l0, {"mse": mse, "l0": l0})


JUMPRELU = register_architecture(
    Architecture(
        name="jumprelu",
        init=jumprelu_init,
        encode=jumprelu_encode,
        forward=jumprelu_forward,
        loss=jumprelu_loss,
        post_step_=unit_norm_decoder_,
        apply_b_dec_to_input=False,
        unit_norm_decoder=True,
        saelens_name="jumprelu",
    )
)
