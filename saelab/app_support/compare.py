"""Latents of two SAEs side by side: for one latent of SAE A, the latents of SAE B whose decoder directions
point the same way (cosine similarity of W_dec rows), the usual way to match features across SAEs (e.g.
Bricken et al. 2023's feature splitting, Templeton et al. 2024). Loads torch: import it from pages, not from
the package."""

from typing import NamedTuple

from jaxtyping import Float
from torch import Tensor


class NearestLatents(NamedTuple):
    """Latents of the other SAE, most similar first."""

    latents: list[int]
    cosines: list[float]


def nearest_latents(
    direction: Float[Tensor, " d_in"], W_dec: Float[Tensor, "d_sae d_in"], k: int
) -> NearestLatents:
    """The `k` rows of `W_dec` with the largest cosine similarity to `direction` (zero rows score 0)."""
    if direction.shape[-1] != W_dec.shape[-1]:
        raise ValueError(f"decoder widths differ: a direction of {direction.shape[-1]} against rows of "
                         f"{W_dec.shape[-1]}; compare SAEs of the same site")
    unit = direction.double() / direction.double().norm().clamp_min(1e-12)
    rows = W_dec.double()
    cosines = (rows @ unit) / rows.norm(dim=-1).clamp_min(1e-12)
    top = cosines.topk(min(k, len(cosines)))
    return NearestLatents(top.indices.tolist(), top.values.tolist())
