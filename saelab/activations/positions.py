"""Which token positions to keep from an activation [batch, pos, ...]: all, last, mean or named per prompt."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Int
from torch import Tensor


def _all(acts: Tensor, positions: "Positions") -> Tensor:
    return acts


def _last(acts: Tensor, positions: "Positions") -> Tensor:
    if positions.index is None:
        return acts[:, -1]
    return _gather(acts, positions.index)


def _mean(acts: Tensor, positions: "Positions") -> Tensor:
    if positions.mask is None:
        return acts.mean(dim=1)
    mask = positions.mask.to(device=acts.device, dtype=acts.dtype)
    mask = mask.reshape(*mask.shape, *([1] * (acts.ndim - 2)))
    return (acts * mask).sum(dim=1) / mask.sum(dim=1)


def _named(acts: Tensor, positions: "Positions") -> Tensor:
    return torch.stack([_gather(acts, index) for index in positions.named.values()], dim=1)


def _gather(acts: Tensor, index: Int[Tensor, " batch"]) -> Tensor:
    """acts[b, index[b]] for every prompt b."""
    rows = torch.arange(acts.shape[0], device=acts.device)
    return acts[rows, index.to(acts.device)]


_REDUCERS: dict[str, Callable[[Tensor, "Positions"], Tensor]] = {
    "all": _all, "last": _last, "mean": _mean, "named": _named,
}


@dataclass(frozen=True, eq=False)
class Positions:
    """Which positions of each prompt to keep. Build with `Positions.all()`, `.last()`, `.mean()`, `.at()`.

    Output shapes for an activation [batch, pos, *feature]: all -> [batch, pos, *feature];
    last and mean -> [batch, *feature]; named -> [batch, n_names, *feature] in `names` order.
    """

    mode: str = "all"
    """One of "all", "last", "mean", "named"."""
    index: Int[Tensor, " batch"] | None = None
    """For "last": each prompt's last non-pad position (None: the final position)."""
    mask: Bool[Tensor, "batch pos"] | None = None
    """For "mean": which positions to average (None: all)."""
    named: Mapping[str, Int[Tensor, " batch"]] = field(default_factory=dict)
    """For "named": position name (e.g. "END", "S2") -> each prompt's position."""

    def __post_init__(self) -> None:
        if self.mode not in _REDUCERS:
            raise ValueError(f"positions mode {self.mode!r} is not one of {', '.join(_REDUCERS)}")
        if self.mode == "named" and not self.named:
            raise ValueError("named positions need at least one name, e.g. Positions.at(END=end_index)")
        for name, index in {"index": self.index, **self.named}.items():
            if index is not None and (index.ndim != 1 or index.dtype.is_floating_point):
                raise ValueError(f"position index {name!r} must be an integer tensor of shape [batch]")
        if self.mask is not None and self.mask.ndim != 2:
            raise ValueError(f"positions mask must be [batch, pos], got shape {tuple(self.mask.shape)}")

    @classmethod
    def all(cls) -> "Positions":
        return cls("all")

    @classmethod
    def last(cls, index: Int[Tensor, " batch"] | None = None) -> "Positions":
        """The final position, or `index[b]` (e.g. the last non-pad token) of each prompt b."""
        return cls("last", index=index)

    @classmethod
    def mean(cls, mask: Bool[Tensor, "batch pos"] | None = None) -> "Positions":
        """The mean over positions (only where `mask` is true, e.g. non-pad tokens)."""
        return cls("mean", mask=mask)

    @classmethod
    def at(cls, named: Mapping[str, Int[Tensor, " batch"]] | None = None, **indices: Tensor) -> "Positions":
        """Named positions per prompt, e.g. `Positions.at(END=end, S2=s2)`; the output stacks them in
        order."""
        return cls("named", named={**(named or {}), **indices})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.named)

    def select(self, acts: Tensor) -> Tensor:
        """Apply to an activation [batch, pos, *feature]."""
        return _REDUCERS[self.mode](acts, self)
