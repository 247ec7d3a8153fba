"""ReLU SAEs with an L1 penalty: the classic one and Anthropic's April 2024 variant."""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.functional import dense_output, dictionary_init, mse_loss, no_post_step, unit_norm_decoder_
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput


def _pre_acts(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    return sae.encoder_input(x) @ sae.W_enc + sae.b_enc


def _forward(sae: SAE, x: Float[Tensor, "batch d_in"]) -> SAEOutput:
    pre = _pre_acts(sae, x)
    acts = pre.relu()
    return dense_output(sae, x, pre, acts)


# ---------------------------------------------------------------- classic: unit-norm decoder, L1 on activations


def classic_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    return InitialState(dictionary_init(cfg, generator), {})


def relu_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    return _pre_acts(sae, x).relu()


def relu_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None, work: None = None
) -> SAEOutput:
    """Both variants: whether the encoder reads x - b_dec is their `apply_b_dec_to_input` (see SAE.encoder_input)."""
    return _forward(sae, x)


def classic_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_target"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    l1 = out.acts.abs().sum(-1).mean()
    return LossOutput(mse + sae.cfg.l1_coefficient * coef.sparsity_scale * l1, {"mse": mse, "l1": l1})


RELU_L1 = register_architecture(
    Architecture(
        name="relu_l1",
        init=classic_init,
        encode=relu_encode,
        forward=relu_forward,
        loss=classic_loss,
        post_step_=unit_norm_decoder_,
        apply_b_dec_to_input=True,
        unit_norm_decoder=True,
        uses_l1=True,
        saelens_name="standard",
    )
)


# ---------------------------------------------------------------- Anthropic (April 2024): L1 weighted by decoder norms

ANTHROPIC_DECODER_INIT_NORM = 0.1
"""Anthropic's April 2024 update initialises decoder rows with norm 0.1 and leaves them unconstrained."""


def anthropic_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    return InitialState(dictionary_init(cfg, generator, ANTHROPIC_DECODER_INIT_NORM), {})




def anthropic_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_target"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    l1 = (out.acts * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    return LossOutput(mse + sae.cfg.l1_coefficient * coef.sparsity_scale * l1, {"mse": mse, "l1": l1})


RELU_L1_ANTHROPIC = register_architecture(
    Architecture(
        name="relu_l1_anthropic",
        init=anthropic_init,
        encode=relu_encode,
        forward=relu_forward,
        loss=anthropic_loss,
        post_step_=no_post_step,
        apply_b_dec_to_input=False,
        unit_norm_decoder=False,
        uses_l1=True,
        saelens_name="standard",
    )
)
