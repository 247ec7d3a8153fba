"""Feature graphs in the results store: save -> load round trip, the listing query, schema migration 6 from an
older store (nothing stored is lost), all-or-nothing writes and clear errors."""

import math

import duckdb
import pytest
from synthetic_graphs import synthetic_graph

from saelab.db import SCHEMA_VERSION, ResultsStore
from saelab.db import queries as q
from saelab.feature_circuits.storage import UnknownGraphError, load_feature_graph, save_feature_graph
from saelab.testing.stores import store_at_version


def _same(a, b) -> None:
    """Equal graphs, NaN metrics equal to NaN."""
    assert a.nodes == b.nodes and a.edges == b.edges and a.params == b.params
    assert (a.kind, a.model, a.dictionaries, a.task, a.prompt) == (b.kind, b.model, b.dictionaries, b.task,
                                                                   b.prompt)
    assert a.metrics.keys() == b.metrics.keys()
    for key, value in a.metrics.items():
        assert (math.isnan(value) and math.isnan(b.metrics[key])) or value == b.metrics[key]


@pytest.mark.parametrize("kind, positions", [("attribution_graph", True), ("feature_circuit", False)])
def test_save_then_load_gives_the_same_graph(tmp_path, kind, positions):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    graph = synthetic_graph(kind=kind, positions=positions)
    graph_id = save_feature_graph(store, graph)
    assert graph_id.startswith(kind)
    loaded = load_feature_graph(store, graph_id)
    _same(graph, loaded)
    assert [n.id for n in loaded.nodes] == [n.id for n in graph.nodes]  # order kept
    assert any(n.position is None for n in loaded.nodes) and any(n.index is None for n in loaded.nodes)


def test_two_graphs_are_listed_newest_first_with_counts(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    first = save_feature_graph(store, synthetic_graph(kind="feature_circuit"), graph_id="a-first")
    second = save_feature_graph(store, synthetic_graph(latents_per_dict=2, seed=1), run_id="run-1",
                                graph_id="b-2nd")
    listed = q.list_feature_graphs(store)
    assert listed["graph_id"].tolist() == [second, first]  # newest first
    row = listed.set_index("graph_id").loc[second]
    small = synthetic_graph(latents_per_dict=2, seed=1)
    assert (row["n_nodes"], row["n_edges"]) == (len(small.nodes), len(small.edges))
    assert row["dictionaries"] == list(small.dictionaries) and row["metrics"]["faithfulness"] == 0.8
    assert row["metrics"]["completeness"] is None  # NaN is stored as JSON null
    assert load_feature_graph(store, first).kind == "feature_circuit"
    counts = q.table_counts(store)
    assert counts["feature_graphs"] == 2 and counts["feature_graph_edges"] == len(small.edges) + len(
        synthetic_graph(kind="feature_circuit").edges)


def test_unknown_graph_id_is_a_clear_error(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    with pytest.raises(UnknownGraphError, match="no feature graph 'nope'"):
        load_feature_graph(store, "nope")


def test_a_graph_id_stored_twice_is_refused_and_the_first_kept(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    graph = synthetic_graph()
    save_feature_graph(store, graph, graph_id="g")
    with pytest.raises(duckdb.ConstraintException):
        save_feature_graph(store, synthetic_graph(latents_per_dict=1), graph_id="g")
    _same(graph, load_feature_graph(store, "g"))  # the failed save left no rows behind


def _old_store(path, version: int):
    con = store_at_version(path, version)
    con.execute("INSERT INTO features (sae_id, latent, density) VALUES ('s', 3, 0.1)")
    con.execute("INSERT INTO feature_labels (sae_id, latent, label) VALUES ('s', 3, 'years')")
    con.close()
    return ResultsStore(path)


def test_migration_6_adds_graph_tables_and_keeps_rows(tmp_path):
    store = _old_store(tmp_path / "old.duckdb", 5)
    assert "feature_graphs" not in store.tables()
    assert q.list_feature_graphs(store).empty  # the app reads an old store without migrating it
    graph_id = save_feature_graph(store, synthetic_graph())  # saving migrates forward first
    assert store.schema_version() == SCHEMA_VERSION >= 6
    assert store.select("features")["latent"].tolist() == [3]
    assert store.select("feature_labels")["label"].tolist() == ["years"]
    assert q.list_feature_graphs(store)["graph_id"].tolist() == [graph_id]


def test_load_from_a_store_without_graph_tables_says_so(tmp_path):
    store = _old_store(tmp_path / "old.duckdb", 5)
    with pytest.raises(UnknownGraphError, match="saelab circuits --features"):
        load_feature_graph(store, "x")
    assert store.schema_version() == 5  # reading did not migrate


def test_top_example_tokens_reads_the_peak_token_of_top_examples(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    store.insert("feature_examples", [
        {"sae_id": "s", "latent": 1, "kind": "top", "rank": 1, "tokens": ["a", "b", "c"], "center": 2},
        {"sae_id": "s", "latent": 1, "kind": "top", "rank": 0, "tokens": ["x", "y"], "center": 0},
        {"sae_id": "s", "latent": 1, "kind": "quantile_0", "rank": 0, "tokens": ["q"], "center": 0},
        {"sae_id": "s", "latent": 2, "kind": "top", "rank": 0, "tokens": ["z"], "center": 0},
        {"sae_id": "t", "latent": 1, "kind": "top", "rank": 0, "tokens": ["other"], "center": 0}])
    assert q.top_example_tokens(store, [("s", 1), ("t", 5)]) == {("s", 1): ["x", "c"]}
    assert q.top_example_tokens(store, []) == {}
