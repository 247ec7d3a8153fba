"""No-cleverness baselines beside a sparse feature circuit: sets of latents of the circuit's size, chosen
without attribution, scored by exactly the same faithfulness/completeness code (`sparse.ablation_metrics`).

- "random": per dictionary, as many latents as the circuit has there, drawn uniformly without replacement
  (several draws, reported as mean ± standard deviation over draws);
- "top_activation": per dictionary, as many latents with the largest mean clean activation on the task's
  prompts (`NodeEffects.activation`: no gradient, no corrupted prompt);
- "errors_only": the circuit's error terms and no latent.

Every baseline keeps the circuit's error terms, so the comparison is about which latents are kept. Of the
circuit a baseline sees only its `CircuitSize` (latents per dictionary, error flags), never the node effects
nor which latents the circuit chose.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.circuits.problem import CircuitProblem
from saelab.feature_circuits import sparse
from saelab.feature_circuits.sparse import (
    AblationReference,
    FeatureCircuitConfig,
    Keep,
    Placed,
    ablation_metrics,
    ablation_reference,
)
from saelab.feature_circuits.types import FeatureGraph

BASELINES = ("random", "top_activation", "errors_only")


@dataclass(frozen=True)
class CircuitSize:
    """How big a circuit is in each dictionary (in `placed` order): all a baseline may know of it."""

    latents: tuple[int, ...]
    """Number of latents kept per dictionary."""
    errors: tuple[bool, ...]
    """Whether the dictionary's error term is kept."""

    def __post_init__(self) -> None:
        if len(self.latents) != len(self.errors):
            raise ValueError(f"{len(self.latents)} latent counts but {len(self.errors)} error flags")
        if any(n < 0 for n in self.latents):
            raise ValueError(f"latent counts must be ≥ 0, got {self.latents}")

    @classmethod
    def of(cls, keep: Sequence[Keep]) -> "CircuitSize":
        return cls(tuple(int(k.acts.sum()) for k in keep), tuple(bool(k.error) for k in keep))

    def check(self, widths: Sequence[int]) -> None:
        if len(widths) != len(self.latents) or any(n > w for n, w in zip(self.latents, widths, strict=True)):
            raise ValueError(f"latent counts {self.latents} do not fit dictionaries of widths "
                             f"{tuple(widths)}")


def _chosen(width: int, index: Tensor, error: bool) -> Keep:
    acts = torch.zeros(width, dtype=torch.bool)
    acts[index] = True
    return Keep(acts, error)


def random_latents(size: CircuitSize, widths: Sequence[int], generator: torch.Generator) -> list[Keep]:
    """Per dictionary, `size.latents[i]` latents drawn uniformly without replacement; the error flags kept."""
    size.check(widths)
    return [_chosen(w, torch.randperm(w, generator=generator)[:n], e)
            for n, w, e in zip(size.latents, widths, size.errors, strict=True)]


def top_activation_latents(size: CircuitSize, activation: Sequence[Tensor]) -> list[Keep]:
    """Per dictionary, the `size.latents[i]` latents of largest mean activation (`activation`: one [d_sae]
    tensor per dictionary); the error flags kept."""
    size.check([a.shape[0] for a in activation])
    return [_chosen(a.shape[0], torch.topk(a.float(), n).indices, e)
            for n, a, e in zip(size.latents, activation, size.errors, strict=True)]


def errors_only(size: CircuitSize, widths: Sequence[int]) -> list[Keep]:
    """The circuit's error terms and no latent."""
    return [Keep(torch.zeros(w, dtype=torch.bool), e) for w, e in zip(widths, size.errors, strict=True)]


class BaselineScore(NamedTuple):
    """Faithfulness and completeness of a baseline (mean and standard deviation over its draws)."""

    faithfulness: float
    faithfulness_std: float
    completeness: float
    completeness_std: float
    draws: int


def _score(metrics: list[dict[str, float]]) -> BaselineScore:
    f = torch.tensor([m["faithfulness"] for m in metrics], dtype=torch.float64)
    c = torch.tensor([m["completeness"] for m in metrics], dtype=torch.float64)
    spread = (lambda t: float(t.std())) if len(metrics) > 1 else (lambda t: 0.0)
    return BaselineScore(float(f.mean()), spread(f), float(c.mean()), spread(c), len(metrics))


def baseline_scores(model: HookedTransformer, placed: list[Placed], problem: CircuitProblem,
                    size: CircuitSize, activation: Sequence[Tensor], draws: int = 5,
                    seed: int = 0, reference: AblationReference | None = None
                    ) -> dict[str, BaselineScore]:
    """The three baselines of `size` on `problem`, scored like the circuit (`ablation_metrics`)."""
    if draws < 1:
        raise ValueError(f"draws must be ≥ 1, got {draws}")
    reference = reference or ablation_reference(model, placed, problem)
    widths = [p.sae.cfg.d_sae for p in placed]
    generator = torch.Generator().manual_seed(seed)

    def scored(keeps: list[list[Keep]]) -> BaselineScore:
        return _score([ablation_metrics(model, placed, problem, k, reference) for k in keeps])

    return {"random": scored([random_latents(size, widths, generator) for _ in range(draws)]),
            "top_activation": scored([top_activation_latents(size, activation)]),
            "errors_only": scored([errors_only(size, widths)])}


class CircuitWithBaselines(NamedTuple):
    """A sparse feature circuit and its same-size baselines, measured on one problem."""

    graph: FeatureGraph
    measured: sparse.Measured
    keep: list[Keep]
    baselines: dict[str, BaselineScore]


def circuit_with_baselines(model: HookedTransformer, placed: list[Placed], problem: CircuitProblem,
                           config: FeatureCircuitConfig, draws: int = 5, seed: int = 0
                           ) -> CircuitWithBaselines:
    """`sparse.feature_circuit` of `problem` and the baselines of its size, all scored against one
    `ablation_reference`."""
    reference = ablation_reference(model, placed, problem)
    graph, measured, keep = sparse.placed_circuit(model, placed, problem, config, reference)
    scores = baseline_scores(model, placed, problem, CircuitSize.of(keep), measured.effects.activation, draws,
                             seed, reference)
    return CircuitWithBaselines(graph, measured, keep, scores)
