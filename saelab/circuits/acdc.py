"""ACDC (Conmy et al. 2023): greedy edge pruning in reverse topological order, over a sweep of thresholds τ.

For each receiver, latest first, each incoming edge is tentatively resample-ablated; it stays removed if the
objective (KL from the full model's answer distribution, or the loss of task metric) rises by less than τ.
A node whose outgoing edges are all gone loses its incoming edges without tests. Forwards start at the
receiver's layer from the cached clean stream. The node/edge score ranks the largest τ at which it survives.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.circuits.forward import CachedBatch, cache_batches, patched_end_logits
from saelab.circuits.graph import Edge, Graph, Node
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.types import MethodOutput, SweepPoint

OBJECTIVES = ("kl", "metric")
DEFAULT_THRESHOLDS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


@dataclass(frozen=True)
class ACDCConfig:
    """Settings of ACDC."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    """The τ sweep; one pruning pass per value (0 keeps every edge, inf removes every edge)."""
    objective: Literal["kl", "metric"] = "kl"
    """"kl": mean KL(full model ‖ pruned) at the answer position; "metric": clean metric − pruned metric."""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {OBJECTIVES}")
        if not self.thresholds or any(t < 0 for t in self.thresholds):
            raise ValueError(f"thresholds must be a non-empty tuple of values ≥ 0, got {self.thresholds!r}")


def _objective(
    model: HookedTransformer,
    graph: Graph,
    cached: list[CachedBatch],
    ablate: Tensor,
    start_layer: int,
    objective: str,
) -> float:
    """Mean over all prompts of the damage the ablation does (0 for no ablation)."""
    total, count = 0.0, 0
    for c in cached:
        logits = patched_end_logits(model, graph, c.clean, c.corrupted, ablate, c.batch.end, start_layer)
        if objective == "kl":
            logprobs = logits.double().log_softmax(-1)
            values = (c.clean_logprobs.exp() * (c.clean_logprobs - logprobs)).sum(-1).clamp_min(0.0)
        else:
            values = c.clean_metric - c.batch.metric(logits).double()
        total, count = total + float(values.sum()), count + len(values)
    return total / count


def prune(
    model: HookedTransformer, graph: Graph, cached: list[CachedBatch], threshold: float, objective: str
) -> Bool[Tensor, "n_senders n_receivers"]:
    """One ACDC pass at `threshold`; returns the mask of removed (ablated) edges."""
    ablate = torch.zeros_like(graph.edge_mask)
    current = 0.0
    for r in reversed(range(len(graph.receivers))):
        node = graph.receivers[r].node
        parents = graph.edge_mask[:, r].nonzero()[:, 0].flip(0).tolist()
        if node.kind != "logits" and not _has_children(graph, ablate, node):
            ablate[parents, r] = True
            continue
        start = min(node.layer, graph.n_layers - 1)
        for s in parents:
            ablate[s, r] = True
            value = _objective(model, graph, cached, ablate, start, objective)
            if value - current < threshold:
                current = value
            else:
                ablate[s, r] = False
    return ablate


def _has_children(graph: Graph, ablate: Tensor, node: Node) -> bool:
    s = graph.sender_index[node]
    return bool((graph.edge_mask[s] & ~ablate[s]).any())


def sweep_point(graph: Graph, threshold: float, ablate: Tensor) -> SweepPoint:
    kept = graph.edge_mask & ~ablate
    edges = frozenset(e for e, k in zip(graph.edges, kept[graph.edge_mask].tolist(), strict=True) if k)
    nodes = frozenset(n for e in edges for n in (e.sender, e.receiver.node) if n.kind in ("head", "mlp"))
    return SweepPoint(threshold, nodes, edges)


def scores_from_sweep(graph: Graph, sweep: list[SweepPoint]) -> tuple[dict[Node, float], dict[Edge, float]]:
    """Score = 1 + the index (in ascending τ) of the largest threshold at which it is kept; 0 if never
    kept."""
    nodes = dict.fromkeys(graph.nodes, 0.0)
    edges = dict.fromkeys(graph.edges, 0.0)
    for rank, point in enumerate(sorted(sweep, key=lambda p: p.threshold), start=1):
        for n in point.nodes:
            nodes[n] = max(nodes[n], rank)
        for e in point.edges:
            edges[e] = max(edges[e], rank)
    return nodes, edges


def run_acdc(model: HookedTransformer, problem: CircuitProblem, config: ACDCConfig) -> MethodOutput:
    graph = Graph.from_config(model.cfg)
    cached = cache_batches(model, graph, problem)
    sweep = [
        sweep_point(graph, t, prune(model, graph, cached, t, config.objective))
        for t in sorted(config.thresholds)
    ]
    nodes, edges = scores_from_sweep(graph, sweep)
    return MethodOutput(node_scores=nodes, edge_scores=edges, sweep=tuple(sweep))
