"""Integer codes read out of any SAE. A code is a latent index (LongTensor); NO_CODE marks "no latent active".

O'Neill & Bui (2024) discretise an SAE by the argmax latent of each input; `topk_codes` keeps the k
strongest latents as a multi-code.
"""

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from saelab.sae.model import SAE

NO_CODE = -1
"""Code of an input on which no latent is active."""


def codes_from_latents(latents: Float[Tensor, "batch d_sae"], k: int = 1) -> Int64[Tensor, "batch k"]:
    """Ids of the k largest latents per row, strongest first; NO_CODE where the latent is not active (≤ 0)."""
    values, ids = latents.topk(k, dim=-1, sorted=True)
    return torch.where(values > 0, ids, torch.full_like(ids, NO_CODE))


@torch.no_grad()
def argmax_codes(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Int64[Tensor, " batch"]:
    """The most active latent of each input (NO_CODE if none is active)."""
    return codes_from_latents(sae.encode(x), 1)[:, 0]


@torch.no_grad()
def topk_codes(sae: SAE, x: Float[Tensor, "batch d_in"], k: int) -> Int64[Tensor, "batch k"]:
    """The k most active latents of each input, strongest first (NO_CODE where fewer are active)."""
    if not 1 <= k <= sae.cfg.d_sae:
        raise ValueError(f"k must be between 1 and d_sae={sae.cfg.d_sae}, got {k}")
    return codes_from_latents(sae.encode(x), k)
