"""Feature graphs in the results store: one `feature_graphs` row per graph, its nodes and edges in
`feature_graph_nodes` / `feature_graph_edges` (schema migration 6). The writes go through `ResultsStore`'s
typed insert in one transaction, so a graph is stored whole or not at all; all SQL stays in `saelab.db`."""

import json
import math
import time
import uuid
from typing import Any

import pandas as pd

from saelab.db import ResultsStore
from saelab.errors import SaelabError
from saelab.feature_circuits.types import FeatureEdge, FeatureGraph, FeatureNode


class UnknownGraphError(SaelabError):
    """A graph id the store does not hold."""


def new_graph_id(kind: str) -> str:
    """`feature_circuit-20260130-014500-1a2b3c`: the kind, the time, and a random tail."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a metric that is not a number is stored as null (and read back as NaN)."""
    return float(value) if math.isfinite(float(value)) else None


def graph_rows(
    graph: FeatureGraph, graph_id: str, run_id: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The rows of `graph` by table name (the one builder of them)."""
    head = {"graph_id": graph_id, "run_id": run_id, "kind": graph.kind, "model": graph.model,
            "task": graph.task, "prompt": graph.prompt, "dictionaries": list(graph.dictionaries),
            "metrics": {k: _finite_or_none(v) for k, v in graph.metrics.items()},
            "params": json.loads(json.dumps(graph.params, default=str))}
    nodes = [{"graph_id": graph_id, "ord": i, "node": n.id, "kind": n.kind, "layer": n.layer, "site": n.site,
              "dictionary": n.dictionary, "idx": n.index, "position": n.position, "activation": n.activation,
              "effect": n.effect, "label": n.label} for i, n in enumerate(graph.nodes)]
    edges = [{"graph_id": graph_id, "ord": i, "source": e.source, "target": e.target, "weight": e.weight}
             for i, e in enumerate(graph.edges)]
    return {"feature_graphs": [head], "feature_graph_nodes": nodes, "feature_graph_edges": edges}


def save_feature_graph(store: ResultsStore, graph: FeatureGraph, run_id: str | None = None,
                       graph_id: str | None = None) -> str:
    """Store `graph` (migrating an older store forward first) in one transaction; returns its graph id."""
    graph_id = graph_id or new_graph_id(graph.kind)
    store.initialize()
    with store.transaction() as tx:
        for table, rows in graph_rows(graph, graph_id, run_id).items():
            tx.insert(table, rows)
    return graph_id


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _json(value: Any, empty: Any) -> Any:
    return empty if value is None or (isinstance(value, float) and pd.isna(value)) else json.loads(value)


def _node(row: dict[str, Any]) -> FeatureNode:
    return FeatureNode(id=row["node"], kind=row["kind"], layer=_optional_int(row["layer"]),
                       site=_text(row["site"]),
                       dictionary=_text(row["dictionary"]), index=_optional_int(row["idx"]),
                       position=_optional_int(row["position"]), activation=float(row["activation"]),
                       effect=float(row["effect"]), label=_text(row["label"]))


def load_feature_graph(store: ResultsStore, graph_id: str) -> FeatureGraph:
    """The graph stored as `graph_id`; UnknownGraphError naming it when there is none."""
    tables = set(store.tables())
    head = (store.select("feature_graphs", where={"graph_id": graph_id}) if "feature_graphs" in tables
            else None)
    if head is None or head.empty:
        raise UnknownGraphError(f"no feature graph {graph_id!r} in {store.path}; list the stored graphs on "
                                "the app's Feature graphs page or store one with "
                                "`saelab circuits --features` or `saelab graph`")
    row = head.iloc[0].to_dict()
    nodes = store.select("feature_graph_nodes", where={"graph_id": graph_id}, order_by=["ord"])
    edges = store.select("feature_graph_edges", where={"graph_id": graph_id}, order_by=["ord"])
    metrics = {k: (math.nan if v is None else float(v)) for k, v in _json(row["metrics"], {}).items()}
    return FeatureGraph(
        kind=row["kind"], model=row["model"], dictionaries=tuple(_json(row["dictionaries"], [])),
        nodes=tuple(_node(n) for n in nodes.to_dict("records")),
        edges=tuple(FeatureEdge(e["source"], e["target"], float(e["weight"]))
                    for e in edges.to_dict("records")),
        task=_text(row["task"]), prompt=_text(row["prompt"]), metrics=metrics,
        params=_json(row["params"], {}))
