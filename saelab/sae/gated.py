"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders").

A gate path decides which latents fire, a magnitude path (sharing W_enc up to a per-latent rescale exp(r_mag))
says how strongly; the L1 penalty and an auxiliary reconstruction through a frozen decoder train the gate.
"""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.functional import dense_output, dictionary_init, mse_loss, unit_norm_decoder_
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput


def gated_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    params = dictionary_init(cfg, generator)
    del params["b_enc"]  # the gate and magnitude paths have their own biases
    zeros = torch.zeros(cfg.d_sae)
    return InitialState({**params, "b_gate": zeros, "r_mag": zeros.clone(), "b_mag": zeros.clone()}, {})


def _gate_and_acts(sae: SAE, x: Float[Tensor, "batch d_in"]) -> tuple[Tensor, Tensor]:
    """(pi_gate, f): gate pre-activations and the gated magnitudes."""
    projected = sae.encoder_input(x) @ sae.W_enc
    pi_gate = projected + sae.b_gate
    pi_mag = projected * sae.r_mag.exp() + sae.b_mag
    return pi_gate, (pi_gate > 0).to(x.dtype) * pi_mag.relu()


def gated_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    return _gate_and_acts(sae, x)[1]


def gated_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None, work: None = None
) -> SAEOutput:
    pi_gate, acts = _gate_and_acts(sae, x)
    return dense_output(sae, x, pi_gate, acts)


def gated_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_target"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    gate = out.pre_acts.relu()
    l1 = (gate * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    with torch.no_grad():  # the auxiliary reconstruction trains the gate only
        frozen = sae.b_dec + sae.skip(x)
    aux = mse_loss(gate @ sae.W_dec.detach() + frozen, target)
    total = mse + sae.cfg.l1_coefficient * coef.sparsity_scale * l1 + aux
    return LossOutput(total, {"mse": mse, "l1": l1, "aux": aux})


GATED = register_architecture(
    Architecture(
        name="gated",
        init=gated_init,
        encode=gated_encode,
        forward=gated_forward,
        loss=gated_loss,
        post_step_=unit_norm_decoder_,
        apply_b_dec_to_input=True,
        unit_norm_decoder=True,
        uses_l1=True,
        saelens_name="gated",
        affine_when_active=False,
    )
)
