"""saelab.db.queries: the app's read queries, on small hand-written stores and the demo workspace."""

import pytest

from saelab.db import ResultsStore
from saelab.db import queries as q
from saelab.testing import DEMO_SAES, build_demo_workspace

ATTN = DEMO_SAES[0].sae_id


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The demo workspace's store, with a synthetic feature graph (the demo builder stores none)."""
    from synthetic_graphs import synthetic_graph

    from saelab.feature_circuits.storage import save_feature_graph

    workspace = build_demo_workspace(tmp_path_factory.mktemp("demo"), d_sae=16, sae_files=False)
    store = ResultsStore(workspace.db_path)
    save_feature_graph(store, synthetic_graph())
    return store


@pytest.fixture
def store(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    store.insert("features", [
        {"sae_id": "s", "latent": 0, "density": 0.5, "max_act": 1.0, "top_logits": [{"token": " the", "value": 3}],
         "head_attribution": [0.9, 0.1]},
        {"sae_id": "s", "latent": 1, "density": 0.01, "max_act": 5.0, "top_logits": [{"token": "def", "value": 1}],
         "head_attribution": [0.2, 0.8]},
        {"sae_id": "s", "latent": 2, "density": 0.001, "max_act": 2.0, "top_logits": [["O'Brien", 2]],
         "head_attribution": None},
        {"sae_id": "other", "latent": 0, "density": 0.9, "max_act": 9.0, "top_logits": [{"token": "def", "value": 1}]},
    ])
    return store


def _latents(store, **kwargs):
    return list(q.search_features(store, q.FeatureQuery("s", **kwargs)).rows["latent"])


def test_search_sorts_by_each_key(store):
    assert _latents(store, sort_by="max_act") == [1, 2, 0]
    assert _latents(store, sort_by="density", descending=False) == [2, 1, 0]
    assert _latents(store, sort_by="top_logit") == [0, 1, 2]  # pairs have no "value" key: sorted last
    assert _latents(store, sort_by="head_attribution", head=1) == [1, 0, 2]
    assert _latents(store, sort_by="latent", descending=False) == [0, 1, 2]


def test_search_filters_by_density_and_logit_token(store):
    assert _latents(store, min_density=0.005) == [1, 0]
    assert _latents(store, max_density=0.005) == [2]
    assert _latents(store, logit_token="DEF") == [1]
    assert _latents(store, logit_token="th") == [0]
    result = q.search_features(store, q.FeatureQuery("s", logit_token="def"))
    assert result.total == 1 and result.rows["top_logits"][0] == [{"token": "def", "value": 1}]


@pytest.mark.parametrize("text", ["' OR 1=1 --", "%", "_", "\"; DROP TABLE features; --", "$[0]"])
def test_search_text_is_a_parameter_not_sql(store, text):
    assert q.search_features(store, q.FeatureQuery("s", logit_token=text)).total == 0
    assert q.search_features(store, q.FeatureQuery("s", label_text=text)).total == 0
    assert q.feature_count(store, "s") == 3  # nothing was dropped


def test_search_pages_and_counts(store):
    page = q.search_features(store, q.FeatureQuery("s", sort_by="latent", descending=False, limit=2, offset=2))
    assert list(page.rows["latent"]) == [2] and page.total == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"sort_by": "density; DROP TABLE x"}, "unknown feature sort"),
    ({"sort_by": "head_attribution"}, "needs a head index"),
    ({"limit": 0}, "limit must be"),
    ({"offset": -1}, "offset must be"),
    ({"min_density": 2.0}, "min_density must be"),
])
def test_feature_query_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        q.FeatureQuery("s", **kwargs)


def test_get_feature_parses_json_and_returns_none_when_absent(store):
    row = q.get_feature(store, "s", 1)
    assert row.latent == 1 and row.head_attribution == [0.2, 0.8] and row.histogram is None
    assert row.mean_act is None
    assert q.get_feature(store, "s", 99) is None
    assert q.get_sae(store, "nope") is None


def test_feature_dashboard_reads_statistics_and_examples_together(demo_store):
    dashboard = q.feature_dashboard(demo_store, ATTN, 3)
    assert dashboard.feature == q.get_feature(demo_store, ATTN, 3)
    assert dashboard.examples == q.feature_examples(demo_store, ATTN, 3) and dashboard.examples
    assert q.feature_dashboard(demo_store, ATTN, 10_000) == (None, [])


def test_sae_rows_are_typed_and_match_get_sae(demo_store):
    rows = q.sae_rows(demo_store)
    assert [r.sae_id for r in rows] == list(q.list_saes(demo_store)["sae_id"])
    assert rows[0] == q.get_sae(demo_store, rows[0].sae_id) and isinstance(rows[0].config, dict)


def test_eval_metrics_keep_latest_value(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    store.insert("eval_metrics", [{"sae_id": "a", "eval_kind": "core", "metric": "fvu", "value": 0.5,
                                   "created_at": "2024-01-01 00:00:00"},
                                  {"sae_id": "a", "eval_kind": "core", "metric": "fvu", "value": 0.2,
                                   "created_at": "2024-06-01 00:00:00"}])
    frame = q.eval_metrics(store, "core")
    assert frame["value"].tolist() == [0.2] and frame["architecture"].isna().all()


def test_demo_workspace_fills_every_table(demo_store):
    counts = q.table_counts(demo_store)
    assert set(counts) == set(q._TABLES)
    assert all(n > 0 for n in counts.values()), counts
    assert counts["features"] == 16 * len(DEMO_SAES)


def test_demo_queries_read_curves_examples_and_circuits(demo_store):
    assert set(q.training_metric_names(demo_store, [ATTN])) >= {"loss", "fvu", "l0", "dead_fraction"}
    curves = q.training_curves(demo_store, [ATTN], ["fvu"])
    assert (curves["metric"] == "fvu").all() and curves["step"].is_monotonic_increasing
    examples = q.feature_examples(demo_store, ATTN, 3)
    assert {e.kind for e in examples} >= {"top", "quantile_0"}
    assert all(len(e.tokens) == len(e.activations) for e in examples)
    runs = q.circuit_runs(demo_store)
    assert {"sae_codes", "ground_truth"} <= set(runs["method"])
    evals = q.circuit_evals(demo_store, list(runs["circuit_run_id"]))
    assert isinstance(evals.loc[evals["metric"] == "node_auc", "curve"].iloc[0], dict)
    assert set(q.circuit_scores(demo_store, "ioi-eap", "edge")["target"]) >= {"logits", "1.0.q"}
    assert q.eval_kinds(demo_store) == ["core", "supervised_ioi"]
    assert len(q.task_prompts(demo_store, "ioi", limit=2)) == 2


def test_reads_wait_for_a_writer_in_another_process(tmp_path, monkeypatch):
    """The app reads while a trainer writes: a read that meets another process's write lock waits for it.

    A handshake, not a clock: the holder keeps the lock until the test has seen the read fail to open the
    file at least once, then releases it; the read must then finish with the holder's row."""
    import subprocess
    import sys
    import threading

    import duckdb

    import saelab.db.store as store_module

    store = ResultsStore(tmp_path / "s.duckdb", lock_timeout_s=300).initialize()
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, pathlib, time\n"
         f"con = duckdb.connect({str(store.path)!r})\n"
         "con.execute(\"INSERT INTO runs (run_id, kind, status) VALUES ('w', 'train', 'running')\")\n"
         "print('locked', flush=True)\n"
         f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.01)\n"
         "con.close()"],
        stdout=subprocess.PIPE, text=True)
    refused = threading.Event()
    connect = duckdb.connect

    def counting_connect(*args, **kwargs):
        try:
            return connect(*args, **kwargs)
        except duckdb.Error:
            refused.set()
            raise

    monkeypatch.setattr(store_module.duckdb, "connect", counting_connect)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = {}
        reader = threading.Thread(target=lambda: result.update(counts=q.table_counts(store)))
        reader.start()
        assert refused.wait(timeout=300), "the read never met the writer's lock"
        assert "counts" not in result  # still waiting while the lock is held
        release.touch()
        reader.join(timeout=300)
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert result["counts"]["runs"] == 1

def test_sae_tables_carry_seed_and_dashboard_counts(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    store.insert("saes", [{"sae_id": sid, "architecture": "topk", "d_in": 8, "d_sae": 4, "path": f"saes/{sid}",
                           "config": {"seed": seed}} for sid, seed in (("a", 1), ("b", 0))])
    store.insert("features", [{"sae_id": "a", "latent": i} for i in range(3)])
    saes = q.list_saes(store)
    assert list(saes["sae_id"]) == ["b", "a"]  # same architecture and width: by seed
    assert dict(zip(saes["sae_id"], saes["seed"], strict=True)) == {"a": 1, "b": 0}
    assert dict(zip(saes["sae_id"], saes["dashboards"], strict=True)) == {"a": 3, "b": 0}
    assert q.get_sae(store, "a").dashboards == 3 and q.get_sae(store, "b").seed == 0


def test_dashboards_command_names_the_directory_and_an_id_that_differs(tmp_path):
    from saelab.app_support import dashboards_command
    from saelab.workspace import Workspace

    row = q.SaeRow("x y", None, "m", "0.attn_z", "topk", 8, 16, 2, {}, "saes/dir")
    command = dashboards_command(Workspace(tmp_path), row)
    assert command == (f"saelab eval --sae {tmp_path / 'saes' / 'dir'} --dashboards --sae-id 'x y' "
                       f"--workspace {tmp_path}")


def test_search_finds_text_in_contexts_across_tokens(store):
    store.insert("feature_examples", [
        {"sae_id": "s", "latent": 1, "kind": "top", "rank": 0, "activation": 1.0,
         "tokens": ["def", " add", "(x"], "activations": [0, 1, 0], "center": 1},
        {"sae_id": "s", "latent": 2, "kind": "quantile_0", "rank": 0, "activation": 1.0,
         "tokens": [" The", " year", " 19", "99"], "activations": [0, 0, 1, 0], "center": 2},
        {"sae_id": "other", "latent": 0, "kind": "top", "rank": 0, "activation": 1.0,
         "tokens": ["def add"], "activations": [1], "center": 0},
    ])
    assert _latents(store, context_text="DEF ADD") == [1]  # across two tokens, any case, this SAE only
    assert _latents(store, context_text="1999") == [2] and _latents(store, context_text="'; --") == []
    assert _latents(store, context_text="def", logit_token="the") == []  # filters combine


# ---------------------------------------------------------------- issue 19 item 6: researchers' labels

def test_labels_are_saved_replaced_removed_and_searched(store):
    from saelab.app_support.labels import save_label

    assert save_label(store, "s", 1, "  Python def  ", "fires on the def keyword")
    assert save_label(store, "other", 0, "something else", "")
    assert q.feature_label(store, "s", 1)[:2] == ("Python def", "fires on the def keyword")
    assert q.feature_label(store, "s", 0) is None
    assert _latents(store, label_text="PYTHON") == [1]
    assert _latents(store, label_text="keyword") == [1]  # the note is searched too
    assert _latents(store, label_text="something") == []  # another SAE's label
    assert _latents(store, label_text="deffires") == []  # never across label and note
    rows = q.search_features(store, q.FeatureQuery("s", sort_by="latent", descending=False)).rows
    assert list(rows["label"]) == [None, "Python def", None]
    assert save_label(store, "s", 1, "def keyword")  # saving again replaces
    assert len(store.select("feature_labels", where={"sae_id": "s"})) == 1
    assert q.feature_label(store, "s", 1)[:2] == ("def keyword", "")
    assert not save_label(store, "s", 1, "", "")  # both cleared: removed
    assert q.feature_label(store, "s", 1) is None and _latents(store, label_text="def") == []


@pytest.mark.parametrize("label, note, message", [
    ("", "a note alone", "a note needs a label"), ("x" * 201, "", "at most 200 characters, this one has 201"),
    ("ok", "n" * 5001, "at most 5000 characters")])
def test_save_label_refuses_bad_text_and_keeps_the_stored_one(store, label, note, message):
    from saelab.app_support.labels import save_label

    save_label(store, "s", 0, "kept")
    with pytest.raises(ValueError, match=message):
        save_label(store, "s", 0, label, note)
    assert q.feature_label(store, "s", 0).label == "kept"


def test_store_from_before_labels_is_read_and_migrated_by_the_first_save(tmp_path):
    import duckdb

    from saelab.app_support.labels import save_label
    from saelab.db import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(path))
    for migration in MIGRATIONS[:3]:
        for statement in migration.statements:
            con.execute(statement)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute("INSERT INTO schema_version VALUES (3)")
    con.execute("INSERT INTO features (sae_id, latent, density) VALUES ('s', 0, 0.1), ('s', 1, 0.2)")
    con.close()
    store = ResultsStore(path)
    result = q.search_features(store, q.FeatureQuery("s"))
    assert result.total == 2 and list(result.rows["label"]) == [None, None]
    assert q.search_features(store, q.FeatureQuery("s", label_text="x")).total == 0
    assert q.feature_label(store, "s", 0) is None and store.schema_version() == 3  # reading changes nothing
    save_label(store, "s", 0, "first")
    assert store.schema_version() == SCHEMA_VERSION and _latents(store, label_text="fir") == [0]
