"""The graph every feature-level method produces: nodes (latents, error terms, input tokens, output logits),
weighted directed edges, the dictionaries it was built over, and the measurements made on it."""

from dataclasses import dataclass, field
from typing import Any, Literal

NodeKind = Literal["latent", "error", "token", "logit"]
GraphKind = Literal["feature_circuit", "attribution_graph"]


def node_id(kind: NodeKind, site: str = "", index: int | None = None, position: int | None = None) -> str:
    """The one spelling of a node id: "latent:1.resid_post:17@5" (latent 17 of the dictionary at 1.resid_post,
    position 5), "error:1.mlp_out@5", "token@3", "logit:1234" (token id). Position None: summed over
    positions (a feature circuit may aggregate positions)."""
    at = "" if position is None else f"@{position}"
    if kind == "latent":
        return f"latent:{site}:{index}{at}"
    if kind == "error":
        return f"error:{site}{at}"
    if kind == "token":
        return f"token{at}"
    if kind == "logit":
        return f"logit:{index}"
    raise ValueError(f"unknown node kind {kind!r}; use latent, error, token or logit")


@dataclass(frozen=True)
class FeatureNode:
    """One node of a feature graph."""

    id: str
    """From `node_id`; unique within the graph."""
    kind: NodeKind
    layer: int | None
    """Block of the dictionary's output site (None for tokens; n_layers for logits)."""
    site: str = ""
    """The dictionary's output site as saelab writes it (e.g. "1.mlp_out"); "" for tokens and logits."""
    dictionary: str = ""
    """sae_id of the SAE/transcoder the latent or error term belongs to."""
    index: int | None = None
    """Latent id (latent nodes) or token id (token and logit nodes)."""
    position: int | None = None
    """Token position (None: aggregated over positions)."""
    activation: float = 0.0
    """Latent activation (mean over prompts for a feature circuit); 0 for other kinds."""
    effect: float = 0.0
    """The node's score: indirect effect on the metric (feature circuits) or influence on the output
    (attribution graphs)."""
    label: str = ""
    """Short human text (token string, latent label)."""


@dataclass(frozen=True)
class FeatureEdge:
    """A directed, weighted edge source -> target (ids of `FeatureNode`s)."""

    source: str
    target: str
    weight: float


@dataclass(frozen=True)
class FeatureGraph:
    """A feature circuit of a task or an attribution graph of one prompt."""

    kind: GraphKind
    model: str
    """Model name (as `saelab models` lists it)."""
    dictionaries: tuple[str, ...]
    """sae_ids of the dictionaries the graph is built over, in layer order."""
    nodes: tuple[FeatureNode, ...]
    edges: tuple[FeatureEdge, ...]
    task: str = ""
    """Task name of a feature circuit ("" for a single-prompt graph)."""
    prompt: str = ""
    """The prompt of an attribution graph (a feature circuit: a description of its prompt set)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Measurements made on the graph, e.g. faithfulness, completeness, replacement score."""
    params: dict[str, Any] = field(default_factory=dict)
    """How it was built (method, thresholds, number of prompts, seed), JSON-serialisable."""

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError("a feature graph's node ids must be unique")
        known = set(ids)
        for edge in self.edges:
            if edge.source not in known or edge.target not in known:
                raise ValueError(f"edge {edge.source!r} -> {edge.target!r} names a node not in the graph")
