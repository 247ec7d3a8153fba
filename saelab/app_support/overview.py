"""An SAE at a glance: its latents binned by log density (which latents sit in each bin), dead and dense
counts. Densities come from the dashboards (`features.density`: the share of the dashboard tokens a latent
fires on)."""

import math
from collections.abc import Sequence
from typing import NamedTuple


class DensityHistogram(NamedTuple):
    """Latents binned by log10 density; latents that never fire are kept apart (log 0 has no bin)."""

    edges: list[float]
    """log10(density) bin edges, n_bins + 1 of them, ascending."""
    latents: list[list[int]]
    """Latent ids per bin."""
    dead: list[int]
    """Latents with density 0."""
    dense: list[int]
    """Latents firing on more than `dense_threshold` of the tokens."""

    @property
    def counts(self) -> list[int]:
        return [len(ids) for ids in self.latents]

    def label(self, i: int) -> str:
        """Bin i as a density range, e.g. '1e-03 – 1.8e-03'."""
        return f"{10 ** self.edges[i]:.2g} – {10 ** self.edges[i + 1]:.2g}"


def density_histogram(latents: Sequence[int], densities: Sequence[float], dense_threshold: float,
                      bins_per_decade: int = 4) -> DensityHistogram:
    """Bins of width 1/`bins_per_decade` decade from the decade of the rarest firing latent up to density
    1."""
    if len(latents) != len(densities):
        raise ValueError(f"{len(latents)} latents but {len(densities)} densities")
    if bins_per_decade < 1:
        raise ValueError(f"bins_per_decade must be at least 1, got {bins_per_decade}")
    firing = [(latent, d) for latent, d in zip(latents, densities, strict=True) if d and d > 0]
    dead = [latent for latent, d in zip(latents, densities, strict=True) if not d or d <= 0]
    dense = [latent for latent, d in firing if d > dense_threshold]
    if not firing:
        return DensityHistogram([], [], dead, dense)
    low = math.floor(min(math.log10(d) for _, d in firing))
    n_bins = -low * bins_per_decade or 1
    edges = [low + i / bins_per_decade for i in range(n_bins + 1)]
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    for latent, d in firing:
        bins[min(n_bins - 1, int((math.log10(d) - low) * bins_per_decade))].append(latent)
    return DensityHistogram(edges, bins, dead, dense)
