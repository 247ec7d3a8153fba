"""What the Feature graphs page draws, as pure functions: pruning a `FeatureGraph` by edge weight and node
effect, laying it out with layers left to right (input tokens at the left, logits at the right), the hover
text of a node, and the feature-page URL parameters of a latent."""

import html
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from saelab.activations.sites import HookSite
from saelab.app_support.render import visible_token
from saelab.feature_circuits.types import FeatureGraph, FeatureNode

SITE_ORDER = {"resid_pre": 0, "attn_z": 1, "head_result": 1, "attn_out": 2, "resid_mid": 3, "mlp_post": 4,
              "mlp_out": 5, "resid_post": 6}
"""Where a dictionary's site sits inside its block, read left to right (kinds not listed go last)."""


def prune(graph: FeatureGraph, min_edge_weight: float = 0.0, min_node_effect: float = 0.0) -> FeatureGraph:
    """The part of `graph` a reader asked for: latent and error nodes whose |effect| is at least
    `min_node_effect`, edges whose |weight| is at least `min_edge_weight` between nodes kept, input tokens
    that such an edge touches, and every logit. Metrics and params are those of the whole graph."""
    if min_edge_weight < 0 or min_node_effect < 0:
        raise ValueError(f"thresholds are magnitudes and must be >= 0, got edge {min_edge_weight}, "
                         f"node {min_node_effect}")
    inner = {n.id for n in graph.nodes if n.kind in ("latent", "error") and abs(n.effect) >= min_node_effect}
    logits = {n.id for n in graph.nodes if n.kind == "logit"}
    tokens = {n.id for n in graph.nodes if n.kind == "token"}
    allowed = inner | logits | tokens
    edges = tuple(e for e in graph.edges
                  if abs(e.weight) >= min_edge_weight and e.source in allowed and e.target in allowed)
    touched = {e.source for e in edges} | {e.target for e in edges}
    kept = inner | logits | (tokens & touched)
    edges = tuple(e for e in edges if e.source in kept and e.target in kept)
    return FeatureGraph(graph.kind, graph.model, graph.dictionaries,
                        tuple(n for n in graph.nodes if n.id in kept),
                        edges, graph.task, graph.prompt, graph.metrics, graph.params)


def column_key(node: FeatureNode) -> tuple[float, int]:
    """(block, place of the site inside the block) of a node; tokens come first, logits last."""
    if node.kind == "token":
        return (-1, 0)
    if node.kind == "logit":
        return (math.inf, 0)
    kind = HookSite.parse(node.site).kind.name if node.site else ""
    return (node.layer if node.layer is not None else 0, SITE_ORDER.get(kind, len(SITE_ORDER)))


class Layout(NamedTuple):
    """Node positions: x is the column (one per site, in model order), y in [0, 1] (top = 0)."""

    xy: dict[str, tuple[float, float]]
    """node id -> (x, y)."""
    columns: list[str]
    """Column titles, left to right ("tokens", "0.attn_z", ..., "logits")."""


def _column_title(node: FeatureNode) -> str:
    return {"token": "tokens", "logit": "logits"}.get(node.kind, node.site)


def layout(graph: FeatureGraph) -> Layout:
    """Columns left to right by `column_key`; inside a column, nodes top to bottom by position (unknown
    positions first), then by |effect| (largest first), spread evenly over [0, 1]."""
    keys = sorted({column_key(n) for n in graph.nodes})
    column_of = {key: i for i, key in enumerate(keys)}
    titles = [""] * len(keys)
    members: dict[int, list[FeatureNode]] = {}
    for node in graph.nodes:
        column = column_of[column_key(node)]
        titles[column] = titles[column] or _column_title(node)
        members.setdefault(column, []).append(node)
    xy = {}
    for column, nodes in members.items():
        ordered = sorted(nodes,
                         key=lambda n: (-1 if n.position is None else n.position, -abs(n.effect), n.id))
        for rank, node in enumerate(ordered):
            xy[node.id] = (float(column), (rank + 0.5) / len(ordered))
    return Layout(xy, titles)


def edge_widths(weights: Sequence[float], thinnest: float = 0.5, widest: float = 6.0) -> list[float]:
    """Line widths proportional to |weight| (the largest gets `widest`, none below `thinnest`)."""
    top = max((abs(w) for w in weights), default=0.0)
    return [max(thinnest, widest * abs(w) / top) if top > 0 else thinnest for w in weights]


def node_name(node: FeatureNode) -> str:
    """A short name: "latent 17 @3", "error 1.mlp_out @3", "token 2 ' Mary'", "logit ' Mary'"."""
    at = "" if node.position is None else f" @{node.position}"
    if node.kind == "latent":
        return f"latent {node.index}{at}"
    if node.kind == "error":
        return f"error {node.site}{at}"
    text = visible_token(node.label) if node.label else str(node.index)
    return f"token {node.position} {text!r}" if node.kind == "token" else f"logit {text!r}"


def hover_text(node: FeatureNode, top_tokens: Sequence[str] = (), n_tokens: int = 8) -> str:
    """Plotly hover text (escaped HTML, `<br>` between lines): the node, its numbers, and for a latent the
    tokens its stored top activating examples peak on (or that the dictionary has no dashboards)."""
    lines = [html.escape(node_name(node))]
    if node.kind in ("latent", "error"):
        lines.append(html.escape(f"{node.dictionary} ({node.site})"))
    if node.label and node.kind in ("latent", "error"):
        lines.append(html.escape(f"label: {node.label}"))
    numbers = f"effect {node.effect:.4g}"
    if node.kind == "latent":
        numbers = f"activation {node.activation:.4g} · " + numbers
    lines.append(numbers)
    if node.kind == "latent":
        if top_tokens:
            shown = ", ".join(repr(visible_token(t)) for t in top_tokens[:n_tokens])
            lines.append(html.escape(f"top activating tokens: {shown}"))
        else:
            lines.append("no dashboard stored for this latent")
    return "<br>".join(lines)


def feature_page_params(node: FeatureNode) -> dict[str, str] | None:
    """The features page's URL parameters (`?sae=…&latent=…`) of a latent node; None for other kinds."""
    if node.kind != "latent" or node.index is None or not node.dictionary:
        return None
    return {"sae": node.dictionary, "latent": str(node.index)}


def latent_nodes(graph: FeatureGraph) -> list[FeatureNode]:
    """The graph's latent nodes, largest |effect| first (the page's picker)."""
    return sorted((n for n in graph.nodes if n.kind == "latent"), key=lambda n: (-abs(n.effect), n.id))


def top_tokens_by_node(graph: FeatureGraph, tops: Mapping[tuple[str, int], Sequence[str]]
                       ) -> dict[str, list[str]]:
    """node id -> its latent's top activating tokens, from `tops` keyed by (sae_id, latent)."""
    return {n.id: list(tops.get((n.dictionary, n.index), ())) for n in graph.nodes
            if n.kind == "latent" and n.index is not None}


def readable_edge_threshold(graph: FeatureGraph, max_edges: int = 120) -> float:
    """The smallest edge-weight threshold that leaves at most `max_edges` edges (0 when there are fewer): the
    page's default, so a large graph opens readable."""
    if max_edges < 1:
        raise ValueError(f"max_edges must be at least 1, got {max_edges}")
    weights = sorted((abs(e.weight) for e in graph.edges), reverse=True)
    if len(weights) <= max_edges:
        return 0.0
    cut = weights[max_edges]  # the strongest edge that must go
    return math.nextafter(cut, math.inf)
