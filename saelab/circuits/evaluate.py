"""Scoring a method's output against a ground-truth circuit: ROC/AUC, precision/recall, faithfulness."""

import math
from typing import Any, NamedTuple

import torch
from transformer_lens import HookedTransformer

from saelab.circuits.forward import cache_batches, patched_end_logits
from saelab.circuits.graph import Edge, Graph, Node
from saelab.circuits.ground_truth import GroundTruth
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.scoring import (
    ROC,
    align,
    average_precision,
    circuit_rates,
    pareto_points,
    precision_at_size,
    precision_recall_at,
    roc_curve,
    staircase_auc,
    threshold_points,
    trapezoid_auc,
)
from saelab.circuits.types import CircuitScores

NODE_SCOPES = ("heads", "all")


class Evaluation(NamedTuple):
    """Named metric values and the curves behind them (JSON-able)."""

    values: dict[str, float]
    curves: dict[str, Any]


def _roc_json(roc: ROC) -> dict[str, list[float]]:
    return {"fpr": [round(x, 6) for x in roc.fpr], "tpr": [round(x, 6) for x in roc.tpr]}


def _level(
    prefix: str,
    scores,
    positives: set,
    universe: list,
    sweep_sets: list[set] | None,
    values: dict,
    curves: dict,
) -> None:
    """ROC AUC, precision at the circuit's size and average precision of one level (nodes, edges) into
    `values` / `curves`; NaN where the universe lacks a class."""
    ranked = align(scores, positives & set(universe), universe)
    if not any(ranked.labels) or all(ranked.labels):
        for name in ("auc", "auc_staircase", "precision_at_size", "ap"):
            values[f"{prefix}_{name}"] = math.nan
        return
    roc = roc_curve(ranked.scores, ranked.labels)
    values[f"{prefix}_auc"] = trapezoid_auc(roc)
    values[f"{prefix}_precision_at_size"] = precision_at_size(ranked)
    values[f"{prefix}_ap"] = average_precision(ranked.scores, ranked.labels)
    curves[f"{prefix}_auc"] = _roc_json(roc)
    if sweep_sets is not None:
        points = [circuit_rates(s, positives, universe) for s in sweep_sets]
    else:
        points = threshold_points(ranked.scores, ranked.labels)
    pareto = pareto_points(points)
    values[f"{prefix}_auc_staircase"] = staircase_auc(pareto)
    curves[f"{prefix}_auc_staircase"] = _roc_json(pareto)


def head_pair_scores(edge_scores) -> dict[tuple[Node, Node], float]:
    """Edge scores between heads collapsed over q/k/v (the maximum)."""
    pairs: dict[tuple[Node, Node], float] = {}
    for edge, score in edge_scores.items():
        if edge.sender.kind == "head" and edge.receiver.node.kind == "head":
            key = (edge.sender, edge.receiver.node)
            pairs[key] = max(pairs.get(key, -math.inf), score)
    return pairs


def evaluate_scores(
    scores: CircuitScores, truth: GroundTruth, graph: Graph, node_scope: str = "heads"
) -> Evaluation:
    """Node ROC/AUC, precision at |circuit| and average precision over heads (or heads and MLPs); the same
    for edges over all edges and over head pairs; precision/recall of the top-|circuit| nodes."""
    if node_scope not in NODE_SCOPES:
        raise ValueError(f"node_scope {node_scope!r} is not one of {NODE_SCOPES}")
    values: dict[str, float] = {}
    curves: dict[str, Any] = {}
    nodes = list(graph.heads if node_scope == "heads" else graph.nodes)
    sweep_nodes = [set(p.nodes) for p in scores.sweep] if scores.sweep else None
    _level("node", scores.node_scores, set(truth.nodes), nodes, sweep_nodes, values, curves)
    for name, variant in scores.extra_node_scores.items():
        if name == "signed":
            continue
        _level(f"node_{name}", variant, set(truth.nodes), nodes, None, values, curves)
    ranked = align(scores.node_scores, set(truth.nodes) & set(nodes), nodes)
    k = sum(ranked.labels)
    if k:
        values["precision_at_k"], values["recall_at_k"] = precision_recall_at(ranked, k)
    if scores.edge_scores is not None:
        sweep_edges = [set(p.edges) for p in scores.sweep] if scores.sweep else None
        _level("edge", scores.edge_scores, set(truth.edges), list(graph.edges), sweep_edges, values, curves)
        pairs = head_pair_scores(scores.edge_scores)
        true_pairs = set(head_pair_scores(dict.fromkeys(truth.edges, 1.0)))
        _level("head_edge", pairs, true_pairs, list(pairs), None, values, curves)
    return Evaluation(values, curves)


def circuit_mask(graph: Graph, edges: set[Edge]) -> torch.Tensor:
    """The ablation mask that keeps exactly `edges` (every other edge reads its corrupted sender)."""
    keep = torch.zeros_like(graph.edge_mask)
    for e in edges:
        keep[graph.sender_index[e.sender], graph.receiver_index[e.receiver]] = True
    return graph.edge_mask & ~keep


def edges_among(graph: Graph, nodes: set[Node]) -> set[Edge]:
    """Edges whose sender and receiver are in `nodes` or are the input / logits."""

    def inside(n: Node) -> bool:
        return n.kind in ("input", "logits") or n in nodes

    return {e for e in graph.edges if inside(e.sender) and inside(e.receiver.node)}


def ranked_circuits(
    graph: Graph, scores: CircuitScores, by_edges: bool, max_points: int = 12
) -> list[set[Edge]]:
    """Nested circuits of growing size: the top-n edges, or (by_edges False) the edges among the top-n
    nodes."""
    if by_edges:
        if scores.edge_scores is None:
            raise ValueError(f"method {scores.method!r} has no edge scores to rank circuits by")
        order = sorted(graph.edges, key=lambda e: -scores.edge_scores.get(e, 0.0))
        sizes = sorted({max(1, round(len(order) ** (i / (max_points - 1)))) for i in range(max_points)})
        return [set(order[:n]) for n in sizes]
    order_nodes = sorted(graph.nodes, key=lambda n: -scores.node_scores.get(n, 0.0))
    step = max(1, len(order_nodes) // max_points)
    counts = sorted({*range(0, len(order_nodes), step), len(order_nodes)})
    return [edges_among(graph, set(order_nodes[:n])) for n in counts]


@torch.no_grad()
def faithfulness(
    model: HookedTransformer, problem: CircuitProblem, circuits: list[set[Edge]]
) -> list[tuple[int, float]]:
    """(number of edges, normalised metric) per circuit: (m_circuit − m_corrupted) / (m_clean − m_corrupted),
    with every edge outside the circuit resample-ablated."""
    graph = Graph.from_config(model.cfg)
    cached = cache_batches(model, graph, problem)

    def circuit_metric(mask: torch.Tensor) -> float:
        return sum(
            float(
                c.batch.metric(
                    patched_end_logits(model, graph, c.clean, c.corrupted, mask, c.batch.end)
                ).sum()
            )
            for c in cached
        )

    clean = sum(float(c.clean_metric.sum()) for c in cached)
    gap = clean - circuit_metric(graph.edge_mask)
    corrupted = clean - gap
    return [
        (len(circuit), (circuit_metric(circuit_mask(graph, circuit)) - corrupted) / gap if gap else math.nan)
        for circuit in circuits
    ]
