"""What an architecture does with latents that stopped firing (its `Architecture.resample_dead_`).

ReLU/L1 SAEs resample dead latents (Anthropic, "Towards Monosemanticity", 2023): each gets the direction of
an input the SAE reconstructs badly (drawn with probability proportional to its squared loss) and its
optimiser state is reset. VQ SAEs re-seed dead codes from inputs (`saelab.sae.vq`). TopK-style SAEs have no
resampler: the trainer hands the dead mask to `SAE.forward`, whose AuxK loss trains dead latents on the
residual. Which latents are dead is the trainer's business (`saelab.training.dead`).
"""

from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

if TYPE_CHECKING:
    from saelab.sae.model import SAE


def reset_adam_rows_(optimizer: torch.optim.Optimizer, param: Tensor, rows: Tensor, dim: int) -> None:
    """Zero Adam's moment estimates of the given rows (dim 0) or columns (dim 1) of `param`, in place."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, rows, 0.0)


ENCODER_RESAMPLE_SCALE = 0.2
"""Resampled encoder columns get this fraction of the mean norm of the living ones (as in Anthropic's
recipe)."""


def _unit(rows: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def resample_dead_latents_(
    sae: "SAE",
    optimizer: torch.optim.Optimizer,
    dead: Bool[Tensor, " d_sae"],
    x: Float[Tensor, "batch d_in"],
    generator: torch.Generator,
    target: Float[Tensor, "batch d_target"] | None = None,
) -> int:
    """Anthropic's resampling of dead ReLU/L1 latents, in place; returns how many were resampled. A transcoder
    (with its `target`) draws inputs by its loss on the target; the decoder row points along the drawn
    target's deviation from b_dec, the encoder column along the drawn input (its encoder reads x)."""
    rows = dead.nonzero().squeeze(1)
    if rows.numel() == 0 or bool(dead.all()):
        return 0
    target = x if target is None else target
    losses = (sae(x).x_hat - target).pow(2).sum(-1)
    weights = losses.pow(2).double().cpu() + 1e-12
    picks = torch.multinomial(weights, rows.numel(), replacement=True, generator=generator).to(x.device)
    decoder_directions = _unit(target[picks] - sae.b_dec)
    encoder_directions = _unit(x[picks]) if sae.cfg.is_transcoder else decoder_directions
    alive_decoder_norm = sae.W_dec[~dead].norm(dim=-1).mean()
    alive_encoder_norm = sae.W_enc[:, ~dead].norm(dim=0).mean()
    sae.W_dec[rows] = decoder_directions * (1.0 if sae.architecture.unit_norm_decoder else alive_decoder_norm)
    sae.W_enc[:, rows] = (encoder_directions * ENCODER_RESAMPLE_SCALE * alive_encoder_norm).t()
    sae.b_enc[rows] = 0.0
    for name, dim in (("W_dec", 0), ("W_enc", 1), ("b_enc", 0)):
        reset_adam_rows_(optimizer, getattr(sae, name), rows, dim)
    return int(rows.numel())
