"""Named values circuit methods return."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from saelab.circuits.graph import Edge, Node

NodeScores = Mapping[Node, float]
EdgeScores = Mapping[Edge, float]
_EMPTY: Mapping = MappingProxyType({})


class SweepPoint(NamedTuple):
    """One discrete circuit a thresholded method (ACDC) produced at one threshold."""

    threshold: float
    nodes: frozenset[Node]
    """Heads and MLPs the circuit keeps (those on a kept edge)."""
    edges: frozenset[Edge]


class MethodOutput(NamedTuple):
    """What a method function computes; `run_method` adds the method name, time and memory."""

    node_scores: NodeScores
    """Importance of each head / MLP: larger means more likely in the circuit."""
    edge_scores: EdgeScores | None = None
    """Importance of each edge, for methods that score edges."""
    sweep: tuple[SweepPoint, ...] = ()
    """Circuits found at each threshold, for methods that output circuits rather than scores."""
    extra_node_scores: Mapping[str, NodeScores] = _EMPTY
    """Other node-score variants of the same run (e.g. raw vs normalised counts, signed effects)."""


class CircuitScores(NamedTuple):
    """The result of one circuit method on one problem."""

    method: str
    node_scores: NodeScores
    edge_scores: EdgeScores | None
    seconds: float
    """Wall-clock time of the whole method (forward passes, training, scoring)."""
    peak_memory_mb: float
    """Peak resident memory above the level at the start of the method."""
    sweep: tuple[SweepPoint, ...] = ()
    extra_node_scores: Mapping[str, NodeScores] = _EMPTY
