"""Dead latents: tracking over a token window, and what each architecture does about them.

TopK-style SAEs hand the dead mask to `SAE.forward`, whose AuxK loss trains dead latents on the residual.
ReLU/L1 SAEs resample dead latents (Anthropic, "Towards Monosemanticity", 2023): each gets the direction of
an input the SAE reconstructs badly (drawn with probability proportional to its squared loss) and its
optimiser state is reset. VQ SAEs re-seed dead codes from inputs.
"""

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from saelab.sae import SAE, replace_dead_codes_


def update_tokens_since_fired_(
    tokens_since_fired: Int64[Tensor, " d_sae"], fire_counts: Int64[Tensor, " d_sae"], batch_tokens: int
) -> None:
    """Advance every latent's count by the batch and reset the ones that fired in it, in place."""
    tokens_since_fired.add_(batch_tokens)
    tokens_since_fired[fire_counts > 0] = 0


def dead_latents(tokens_since_fired: Int64[Tensor, " d_sae"], window_tokens: int) -> Bool[Tensor, " d_sae"]:
    """Latents that have not fired in the last `window_tokens` tokens."""
    return tokens_since_fired >= window_tokens


def reset_adam_rows_(optimizer: torch.optim.Optimizer, param: Tensor, rows: Tensor, dim: int) -> None:
    """Zero Adam's moment estimates of the given rows (dim 0) or columns (dim 1) of `param`, in place."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, rows, 0.0)


ENCODER_RESAMPLE_SCALE = 0.2
"""Resampled encoder columns get this fraction of the mean norm of the living ones (as in Anthropic's recipe)."""


def _unit(rows: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def resample_dead_latents_(
    sae: SAE,
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


@torch.no_grad()
def replace_dead_vq_codes_(
    sae: SAE,
    optimizer: torch.optim.Optimizer,
    dead: Bool[Tensor, " d_sae"],
    x: Float[Tensor, "batch d_in"],
    generator: torch.Generator,
    target: Float[Tensor, "batch d_in"] | None = None,
) -> int:
    """Re-seed dead VQ codes from inputs and reset their optimiser state; returns how many."""
    replaced = replace_dead_codes_(sae, dead, x, generator)
    if replaced:
        reset_adam_rows_(optimizer, sae.W_dec, dead.nonzero().squeeze(1), 0)
    return replaced


Resampler = Callable[[SAE, torch.optim.Optimizer, Tensor, Tensor, torch.Generator, Tensor | None], int]
"""(sae, optimiser, dead mask, scaled inputs, generator, scaled targets or None) -> how many were resampled."""

RESAMPLERS: dict[str, Resampler] = {}
"""Architecture -> what to do with its dead latents every dead window (architectures absent: nothing)."""


def register_resampler(architecture: str, resampler: Resampler) -> None:
    """Add a dead-latent resampler for an architecture; a second one is refused."""
    if architecture in RESAMPLERS:
        raise ValueError(f"a resampler for {architecture!r} is already registered")
    RESAMPLERS[architecture] = resampler


register_resampler("relu_l1", resample_dead_latents_)
register_resampler("relu_l1_anthropic", resample_dead_latents_)
register_resampler("vq", replace_dead_vq_codes_)
