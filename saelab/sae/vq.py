"""Vector-quantised codebook SAE: each input is coded by k codebook ids (integers) picked by max cosine
similarity, residually (the i-th code quantises what the first i-1 left over).

The codebook is W_dec (one code per row). As in VQ-VAE, the reconstruction passes gradients straight
through the quantiser to the input, the codebook loss pulls the chosen codes towards the inputs and the
commitment loss pulls b_dec (the input centre) so the centred inputs sit near their codes. Codes that stop
being chosen are re-seeded from inputs with `replace_dead_codes_`.
"""

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.dead import reset_adam_rows_
from saelab.sae.functional import mse_loss, no_latents, no_post_step, random_unit_rows
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput


def vq_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    params = {"W_dec": random_unit_rows(cfg.d_sae, cfg.d_in, generator), "b_dec": torch.zeros(cfg.d_in)}
    return InitialState(params, {})


@torch.no_grad()
def quantize(
    z: Float[Tensor, "batch d_in"], codebook: Float[Tensor, "d_sae d_in"], k: int
) -> Int64[Tensor, "batch k"]:
    """Ids of k codes per input, each the most cosine-similar code to what the earlier ones left over."""
    unit = codebook / codebook.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(codebook.dtype).eps)
    residual, ids = z, []
    for _ in range(k):
        best = (residual @ unit.t()).argmax(-1)
        ids.append(best)
        residual = residual - codebook[best]
    return torch.stack(ids, dim=1)


def vq_codes(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Int64[Tensor, "batch k"]:
    """The native integer codes of a VQ SAE: k codebook ids per input."""
    return quantize(x.to(sae.cfg.torch_dtype) - sae.b_dec, sae.W_dec, sae.cfg.k)


def vq_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    """k-hot: 1 at the chosen codes, so that `decode` returns b_dec + the sum of the chosen codes."""
    ids = quantize(x - sae.b_dec, sae.W_dec, sae.cfg.k)
    return x.new_zeros(x.shape[0], sae.cfg.d_sae).scatter_add_(1, ids, x.new_ones(ids.shape))


def vq_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None, work: None = None
) -> SAEOutput:
    z = x - sae.b_dec
    ids = quantize(z.detach(), sae.W_dec.detach(), sae.cfg.k)
    z_q = sae.W_dec[ids].sum(1)
    similarities = (z @ sae.W_dec.t() / sae.W_dec.norm(dim=-1)).detach()
    aux_acts, aux_indices = no_latents(x.shape[0], x)
    return SAEOutput(
        x_hat=sae.b_dec + z + (z_q - z).detach(),  # straight-through: the value of b_dec + z_q
        acts=x.new_ones(ids.shape),
        indices=ids,
        pre_acts=similarities,
        aux_acts=aux_acts,
        aux_indices=aux_indices,
    )


def vq_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_in"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    """Never a transcoder (the codebook quantises the centred input itself), so target is x."""
    z = x - sae.b_dec
    z_q = sae.W_dec[out.indices].sum(1)
    mse = mse_loss(out.x_hat, x)
    codebook = mse_loss(z_q, z.detach())
    commitment = mse_loss(z, z_q.detach())
    total = mse + codebook + sae.cfg.vq_commitment * commitment
    return LossOutput(total, {"mse": mse, "codebook": codebook, "commitment": commitment})


@torch.no_grad()
def replace_dead_vq_codes_(
    sae: SAE, optimizer: torch.optim.Optimizer, dead: Bool[Tensor, " d_sae"], x: Float[Tensor, "batch d_in"],
    generator: torch.Generator, target: Float[Tensor, "batch d_in"] | None = None,
) -> int:
    """VQ's dead-latent policy: re-seed dead codes from inputs and reset their optimiser state; returns how many."""
    replaced = replace_dead_codes_(sae, dead, x, generator)
    if replaced:
        reset_adam_rows_(optimizer, sae.W_dec, dead.nonzero().squeeze(1), 0)
    return replaced


VQ = register_architecture(
    Architecture(
        name="vq",
        init=vq_init,
        encode=vq_encode,
        forward=vq_forward,
        loss=vq_loss,
        post_step_=no_post_step,
        apply_b_dec_to_input=True,
        unit_norm_decoder=False,
        transcoder=False,
        affine_when_active=False,
        uses_k=True,
        resample_dead_=replace_dead_vq_codes_,
    )
)


@torch.no_grad()
def replace_dead_codes_(
    sae: SAE, dead_mask: Bool[Tensor, " d_sae"], x: Float[Tensor, "batch d_in"], generator: torch.Generator
) -> int:
    """Re-seed each dead code with a random centred input of the batch, in place; returns how many.

    The caller should also reset the optimiser state of the replaced rows.
    """
    dead = dead_mask.nonzero().squeeze(1)
    if dead.numel() == 0:
        return 0
    picks = torch.randint(0, x.shape[0], (dead.numel(),), generator=generator).to(x.device)
    sae.W_dec[dead] = x[picks].to(sae.W_dec.dtype) - sae.b_dec
    return int(dead.numel())
