"""Causal ground-truth circuits from patching, their JSON form, and agreement between prompt seeds.

Node effects are per-node resample ablation (the `patching` method). Edge effects are path patching of single
edges: the receiver alone reads the sender's corrupted output, everything downstream is recomputed; the edges
into the logits are each head's direct path. A `GroundTruthRule` thresholds both by a fraction of the
clean-minus-corrupted metric gap.
"""

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from transformer_lens import HookedTransformer

from saelab.circuits.forward import cache_batches, patched_end_logits
from saelab.circuits.graph import Edge, Graph, Node
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.problem import CircuitProblem

FORMAT_VERSION = 1


@dataclass(frozen=True)
class GroundTruthRule:
    """How effects become a circuit."""

    node_fraction: float = 0.1
    """A head / MLP is in the circuit if |its resample-ablation effect| ≥ this fraction of |gap|."""
    edge_fraction: float = 0.05
    """An edge is in the circuit if |its path-patching effect| ≥ this fraction of |gap|; its endpoints join
    the node circuit."""

    def __post_init__(self) -> None:
        for name in ("node_fraction", "edge_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")

    @property
    def text(self) -> str:
        return (
            f"node in circuit iff |resample-ablation effect| >= {self.node_fraction:g} * |clean - corrupted "
            f"metric gap| or it is an endpoint of a circuit edge; edge in circuit iff |path-patching effect| "
            f">= {self.edge_fraction:g} * |gap|"
        )


class GroundTruth(NamedTuple):
    """A ground-truth circuit with the numbers it was thresholded from."""

    task: str
    model: str
    nodes: frozenset[Node]
    edges: frozenset[Edge]
    node_effects: dict[Node, float]
    """Signed mean metric change when the node is resample-ablated."""
    edge_effects: dict[Edge, float]
    """Signed mean metric change when the single edge is resample-ablated (path patching)."""
    clean_metric: float
    corrupted_metric: float
    rule: GroundTruthRule
    meta: dict[str, Any]
    """Prompt seed and count, the regeneration command, seed agreement, …"""

    @property
    def gap(self) -> float:
        return self.clean_metric - self.corrupted_metric

    @property
    def direct_effects(self) -> dict[Node, float]:
        """Each head's path-patching effect through its edge to the logits."""
        return {
            e.sender: v
            for e, v in self.edge_effects.items()
            if e.receiver.node.kind == "logits" and e.sender.kind == "head"
        }


def edge_effects(
    model: HookedTransformer, problem: CircuitProblem, edges: list[Edge] | None = None
) -> dict[Edge, float]:
    """Path-patching effect of each edge alone: mean metric(edge ablated) − metric(clean)."""
    graph = Graph.from_config(model.cfg)
    edges = list(graph.edges if edges is None else edges)
    cached = cache_batches(model, graph, problem)
    totals = dict.fromkeys(edges, 0.0)
    for edge in edges:
        s, r = graph.sender_index[edge.sender], graph.receiver_index[edge.receiver]
        mask = torch.zeros_like(graph.edge_mask)
        mask[s, r] = True
        start = min(edge.receiver.node.layer, graph.n_layers - 1)
        for c in cached:
            logits = patched_end_logits(model, graph, c.clean, c.corrupted, mask, c.batch.end, start)
            totals[edge] += float((c.batch.metric(logits).double() - c.clean_metric).sum())
    return {e: t / problem.n_prompts for e, t in totals.items()}


def threshold(
    task: str,
    model_name: str,
    nodes: dict[Node, float],
    edges: dict[Edge, float],
    means: tuple[float, float],
    rule: GroundTruthRule,
    meta: dict[str, Any],
) -> GroundTruth:
    """Apply `rule` to measured effects."""
    gap = abs(means[0] - means[1])
    if gap == 0:
        raise ValueError(
            f"task {task!r} on {model_name!r}: clean and corrupted metrics are equal; no circuit to find"
        )
    kept_edges = frozenset(e for e, v in edges.items() if abs(v) >= rule.edge_fraction * gap)
    kept_nodes = {n for n, v in nodes.items() if abs(v) >= rule.node_fraction * gap}
    kept_nodes |= {n for e in kept_edges for n in (e.sender, e.receiver.node) if n.kind in ("head", "mlp")}
    return GroundTruth(
        task, model_name, frozenset(kept_nodes), kept_edges, nodes, edges, means[0], means[1], rule, meta
    )


def compute_ground_truth(
    model: HookedTransformer,
    problem: CircuitProblem,
    model_name: str,
    rule: GroundTruthRule = GroundTruthRule(),
    meta: dict[str, Any] | None = None,
) -> GroundTruth:
    """Node and edge effects on `problem`, thresholded by `rule`."""
    nodes = node_effects(model, problem, "resample")
    edges = edge_effects(model, problem)
    return threshold(
        problem.name, model_name, nodes, edges, metric_means(model, problem), rule, dict(meta or {})
    )


def agreement(a: GroundTruth, b: GroundTruth) -> dict[str, Any]:
    """How two ground truths (e.g. from two prompt seeds) agree: Jaccard indices and the differences."""

    def jaccard(x: frozenset, y: frozenset) -> float:
        return len(x & y) / len(x | y) if x | y else 1.0

    return {
        "node_jaccard": jaccard(a.nodes, b.nodes),
        "edge_jaccard": jaccard(a.edges, b.edges),
        "same_nodes": a.nodes == b.nodes,
        "nodes_only_first": sorted(n.name for n in a.nodes - b.nodes),
        "nodes_only_second": sorted(n.name for n in b.nodes - a.nodes),
        "n_edges": [len(a.edges), len(b.edges)],
    }


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def to_json(gt: GroundTruth) -> dict[str, Any]:
    """A JSON-able dict (node and edge names, rounded numbers)."""
    order = sorted(gt.node_effects)
    return {
        "format_version": FORMAT_VERSION,
        "task": gt.task,
        "model": gt.model,
        "rule": {**asdict(gt.rule), "text": gt.rule.text},
        "metric": {
            "clean": _round(gt.clean_metric),
            "corrupted": _round(gt.corrupted_metric),
            "gap": _round(gt.gap),
        },
        "nodes": [n.name for n in sorted(gt.nodes)],
        "edges": [e.name for e in sorted(gt.edges)],
        "node_effects": {n.name: _round(gt.node_effects[n]) for n in order},
        "direct_effects": {n.name: _round(v) for n, v in sorted(gt.direct_effects.items())},
        "edge_effects": {e.name: _round(v) for e, v in sorted(gt.edge_effects.items())},
        **gt.meta,
    }


def from_json(data: dict[str, Any], graph: Graph) -> GroundTruth:
    """Parse `to_json`'s output against the model's graph; ValueError naming what does not fit."""
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"ground-truth format {data.get('format_version')!r} is not {FORMAT_VERSION}; regenerate it"
        )
    n_layers = graph.n_layers
    rule = GroundTruthRule(data["rule"]["node_fraction"], data["rule"]["edge_fraction"])
    known = {
        "format_version",
        "task",
        "model",
        "rule",
        "metric",
        "nodes",
        "edges",
        "node_effects",
        "direct_effects",
        "edge_effects",
    }
    return GroundTruth(
        task=data["task"],
        model=data["model"],
        nodes=frozenset(Node.parse(n, n_layers) for n in data["nodes"]),
        edges=frozenset(graph.edge(e) for e in data["edges"]),
        node_effects={Node.parse(n, n_layers): v for n, v in data["node_effects"].items()},
        edge_effects={graph.edge(e): v for e, v in data["edge_effects"].items()},
        clean_metric=data["metric"]["clean"],
        corrupted_metric=data["metric"]["corrupted"],
        rule=rule,
        meta={k: v for k, v in data.items() if k not in known},
    )
