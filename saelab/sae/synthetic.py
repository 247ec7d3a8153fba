"""Synthetic activations built from a known sparse dictionary, for tests, benchmarks and sanity checks."""

from typing import NamedTuple

import torch
from jaxtyping import Float, Int64
from torch import Tensor

from saelab.sae.functional import random_unit_rows


class SyntheticBatch(NamedTuple):
    """Activations and the ground truth that made them: x = feature_acts @ dictionary."""

    x: Float[Tensor, "batch d_in"]
    feature_acts: Float[Tensor, "batch n_features"]


def random_dictionary(
    n_features: int, d_in: int, generator: torch.Generator
) -> Float[Tensor, "n_features d_in"]:
    """n_features random unit directions in d_in dimensions."""
    return random_unit_rows(n_features, d_in, generator)


def sparse_feature_batch(
    dictionary: Float[Tensor, "n_features d_in"],
    batch: int,
    mean_active: float,
    generator: torch.Generator,
    magnitude_range: tuple[float, float] = (0.5, 1.5),
) -> SyntheticBatch:
    """Each feature is active independently with probability mean_active / n_features, with a uniform
    magnitude in `magnitude_range`."""
    n_features = dictionary.shape[0]
    active = torch.rand(batch, n_features, generator=generator) < mean_active / n_features
    low, high = magnitude_range
    magnitudes = low + (high - low) * torch.rand(batch, n_features, generator=generator)
    feature_acts = active * magnitudes
    return SyntheticBatch(feature_acts @ dictionary, feature_acts)


class DominantBatch(NamedTuple):
    """Activations made of one dominant feature plus weaker ones, and which feature dominates."""

    x: Float[Tensor, "batch d_in"]
    dominant: Int64[Tensor, " batch"]


def dominant_feature_batch(
    dictionary: Float[Tensor, "n_features d_in"],
    batch: int,
    n_weak: int,
    weak_scale: float,
    generator: torch.Generator,
) -> DominantBatch:
    """One feature with magnitude in [1, 2] and `n_weak` others with magnitudes in [0, weak_scale]."""
    n_features = dictionary.shape[0]
    dominant = torch.randint(0, n_features, (batch,), generator=generator)
    strong = 1 + torch.rand(batch, generator=generator)
    weak_ids = torch.randint(0, n_features, (batch, n_weak), generator=generator)
    weak = weak_scale * torch.rand(batch, n_weak, generator=generator)
    x = strong[:, None] * dictionary[dominant] + torch.einsum("bw,bwd->bd", weak, dictionary[weak_ids])
    return DominantBatch(x, dominant)


def max_cosine_recovery(
    dictionary: Float[Tensor, "n_features d_in"], W_dec: Float[Tensor, "d_sae d_in"]
) -> Float[Tensor, ""]:
    """Mean over true features of the largest cosine similarity with any decoder row."""
    unit = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (dictionary @ unit.t()).max(dim=1).values.mean()
