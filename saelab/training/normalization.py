"""Input normalisation: one scalar per hook site so that the mean norm of scaled inputs is sqrt(d_in)."""

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def estimate_input_scale(batches: Sequence[Float[Tensor, "batch d_in"]]) -> float:
    """sqrt(d_in) / mean ||x|| over the rows of `batches` (Anthropic, April 2024 update)."""
    norms = torch.cat([x.detach().double().norm(dim=-1) for x in batches])
    mean_norm = float(norms.mean())
    if not mean_norm > 0 or mean_norm == float("inf"):
        raise ValueError(f"cannot normalise inputs whose mean norm is {mean_norm}; check the activations")
    return batches[0].shape[-1] ** 0.5 / mean_norm


def estimate_input_mean(batches: Sequence[Float[Tensor, "batch d_in"]]) -> Float[Tensor, " d_in"]:
    """The mean row of `batches` (float64), where a fresh SAE's decoder bias starts."""
    rows = sum(x.shape[0] for x in batches)
    mean = (
        sum(x.detach().double().sum(0) for x in batches) / rows
    )  # no float64 copy of all the batches at once
    if not bool(mean.isfinite().all()):
        raise ValueError("cannot take the mean of activations holding NaN or inf; check the activations")
    return mean
