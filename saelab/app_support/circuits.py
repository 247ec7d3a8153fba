"""The circuits page's shaping of stored results: head nodes on a layer × head grid, ROC curves, ground truth.

Node names are the ones `saelab.circuits.graph` writes, read back by its `find_node`: heads "L.H", MLPs
"mlpL", "input", "logits"; edge targets are receivers ("L.H.q|k|v", "mlpL", "logits"); the head forms
"a{L}.h{H}" (ACDC) and "L{L}H{H}" are accepted too.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

_MODEL_ALIASES = {"gpt2-small": "gpt2"}


def parse_head_node(node: str) -> tuple[int, int] | None:
    """(layer, head) of an attention-head node (or head receiver) name; None for other nodes."""
    from saelab.circuits.graph import head_of_name  # saelab.circuits loads torch and TransformerLens

    return head_of_name(node)


def node_position(node: str, n_layers: int, n_heads: int) -> tuple[float, float] | None:
    """Where the circuit graph draws a node (or a receiver): heads at (layer, head), an MLP after its layer's
    heads, the input before layer 0 and the logits after the last layer; None for names it does not know."""
    from saelab.circuits.graph import find_node

    found = find_node(node, n_layers)
    if found is None:
        return None
    if found.kind == "head":
        return float(found.layer), float(found.head)
    return found.layer + (0.5 if found.kind == "mlp" else 0.0), (n_heads - 1) / 2


class HeadGrid(NamedTuple):
    """Scores on a layer × head grid (NaN where a head has no score)."""

    values: list[list[float]]
    """values[layer][head]."""
    n_layers: int
    n_heads: int


def head_grid(node_scores: pd.DataFrame, n_layers: int | None = None, n_heads: int | None = None) -> HeadGrid:
    """The head nodes of (node, score) rows on a grid sized to the model (or to the largest head seen)."""
    heads = {}
    for node, score in zip(node_scores["node"], node_scores["score"], strict=True):
        parsed = parse_head_node(str(node))
        if parsed is not None:
            heads[parsed] = float(score) if score is not None else math.nan
    n_layers = n_layers or (max((layer for layer, _ in heads), default=-1) + 1)
    n_heads = n_heads or (max((h for _, h in heads), default=-1) + 1)
    values = [[heads.get((layer, head), math.nan) for head in range(n_heads)] for layer in range(n_layers)]
    return HeadGrid(values, n_layers, n_heads)


def membership_grid(heads: Iterable[tuple[int, int]], n_layers: int, n_heads: int) -> HeadGrid:
    """1 for heads in the set, 0 elsewhere."""
    members = set(heads)
    values = [
        [1.0 if (layer, head) in members else 0.0 for head in range(n_heads)] for layer in range(n_layers)
    ]
    return HeadGrid(values, n_layers, n_heads)


class GroundTruthHeads(NamedTuple):
    heads: set[tuple[int, int]]
    source: str
    """Where the heads come from, for the page to say."""


class RocPoints(NamedTuple):
    fpr: list[float]
    tpr: list[float]


def roc_points(curve: Any) -> RocPoints | None:
    """An ROC curve from {"fpr": [...], "tpr": [...]} or [[fpr, tpr], ...] JSON; None when absent."""
    if not curve:
        return None
    if isinstance(curve, dict):
        fpr, tpr = curve.get("fpr"), curve.get("tpr")
        if fpr is None or tpr is None or len(fpr) != len(tpr):
            raise ValueError("an ROC curve needs 'fpr' and 'tpr' lists of equal length")
        return RocPoints([float(v) for v in fpr], [float(v) for v in tpr])
    return RocPoints([float(p[0]) for p in curve], [float(p[1]) for p in curve])


def ground_truth_heads(task: str, model: str, stored: pd.DataFrame | None = None,
                       truth_root: Path | None = None) -> GroundTruthHeads | None:
    """The ground-truth heads of `task` on `model`, from the first source that has them: a stored run with
    method "ground_truth" (`stored`: its node scores; score > 0 = in the circuit), the causal ground-truth
    file `saelab.circuits` bundles for the model (data/circuits/{model}/{task}.json, or under `truth_root`),
    or the published circuit when it was found on `model`. None when there is none."""
    if stored is not None and not stored.empty:
        heads = {parsed for node, score in zip(stored["node"], stored["score"], strict=True)
                 if score is not None and score > 0 and (parsed := parse_head_node(str(node))) is not None}
        return GroundTruthHeads(heads, "stored ground-truth run")
    from saelab.circuits.io import ground_truth_path  # saelab.circuits loads torch and TransformerLens

    path = ground_truth_path(model, task, truth_root)
    if path.is_file():
        nodes = json.loads(path.read_text(encoding="utf-8")).get("nodes", [])
        heads = {parsed for node in nodes if (parsed := parse_head_node(str(node))) is not None}
        return GroundTruthHeads(heads, f"causal ground truth ({path.name} for {model})")
    from saelab.tasks.published import published_circuit  # saelab.tasks loads torch and transformers

    try:
        circuit = published_circuit(task)
    except ValueError:
        return None
    if _MODEL_ALIASES.get(model, model) != circuit.get("model"):
        return None
    return GroundTruthHeads({(h["layer"], h["head"]) for h in circuit["heads"]}, "published circuit")
