import hashlib
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest

from saelab.db import MIGRATIONS, SCHEMA_VERSION, ResultsStore
from saelab.errors import StoreError
from saelab.testing.stores import store_at_version


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schema_created_at_current_version(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    assert store.schema_version() == SCHEMA_VERSION
    assert {"runs", "saes", "training_metrics", "eval_metrics", "features", "feature_examples",
            "circuit_runs", "circuit_scores", "circuit_evals", "cached_sites", "task_prompts",
            "feature_labels"} <= set(store.tables())


def test_migrates_previous_version_and_keeps_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    for statement in MIGRATIONS[0].statements:  # a store written by schema version 1
        con.execute(statement)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO runs (run_id, kind, status) VALUES ('r1', 'train', 'done')")
    con.close()
    store = ResultsStore(path)
    assert store.schema_version() == 1
    store.initialize()
    assert store.schema_version() == SCHEMA_VERSION
    assert "task_prompts" in store.tables()
    assert list(store.runs()["run_id"]) == ["r1"]
    store.initialize()  # idempotent
    assert store.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    with store.connect(read_only=False) as con:
        con.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(StoreError, match="newer than this saelab"):
        store.initialize()


@pytest.mark.parametrize("content", [b"this is not a database\n" * 200, b"\x00" * 4096])
def test_foreign_file_is_clear_error_and_untouched(tmp_path, content):
    path = tmp_path / "saelab.duckdb"
    path.write_bytes(content)
    before = sha256(path)
    with pytest.raises(StoreError) as info:
        ResultsStore(path).initialize()
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert sha256(path) == before


def test_truncated_store_is_clear_error_and_untouched(tmp_path):
    path = tmp_path / "saelab.duckdb"
    store = ResultsStore(path).initialize()
    store.start_run("train")
    path.write_bytes(path.read_bytes()[:5000])
    before = sha256(path)
    with pytest.raises(StoreError, match="not a usable saelab results store"):
        ResultsStore(path).initialize()
    assert sha256(path) == before


def test_values_are_parameters_not_sql(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    nasty = "x'); DROP TABLE runs; --"
    run_id = store.start_run("train", name=nasty, config={"q": "'\""})
    rows = store.select("runs", where={"name": nasty})
    assert list(rows["run_id"]) == [run_id]
    assert "runs" in store.tables()


def test_unknown_columns_and_tables_are_refused(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    with pytest.raises(ValueError, match="no column"):
        store.insert("runs", [{"run_id": "a", "kind": "k", "status": "s", "evil": 1}])
    with pytest.raises(ValueError, match="no table"):
        store.select("nope")
    with pytest.raises(ValueError, match="no column"):
        store.select("runs", order_by=["1; DROP TABLE runs"])


def test_reading_a_missing_store_is_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        ResultsStore(tmp_path / "absent.duckdb").runs()


# Writer and reader meet at handshake files in a shared folder, not at times: the writer starts once the reader
# has read the empty table, and stops half-way until the reader has seen the half-written table, so a read
# mid-run is certain on any machine. The waits for a file are safety nets of minutes, never the test's clock.
HANDSHAKE = textwrap.dedent("""
    import time
    from pathlib import Path

    def wait_for(path: Path, patience_s: float = 300.0) -> None:
        deadline = time.monotonic() + patience_s
        while not path.exists():
            assert time.monotonic() < deadline, f"no {path.name} after {patience_s} s"
            time.sleep(0.005)
""")

WRITER = HANDSHAKE + textwrap.dedent("""
    import sys
    from saelab.db import ResultsStore
    store, n_steps, sync = ResultsStore(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    wait_for(sync / "reader-started")
    for step in range(n_steps):
        store.insert("training_metrics", [
            {"run_id": "r", "sae_id": "s", "step": step, "tokens": step * 10, "metric": m, "value": float(step)}
            for m in ("loss", "l0", "fvu")
        ])
        if step == n_steps // 2:
            (sync / "half-written").touch()
            wait_for(sync / "reader-saw-half")
    (sync / "writer-done").touch()
    print("writer done")
""")

READER = HANDSHAKE + textwrap.dedent("""
    import sys
    from saelab.db import ResultsStore
    store, n_steps, sync = ResultsStore(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    expected, half = 3 * n_steps, 3 * (n_steps // 2 + 1)
    seen, reads, mid_run = -1, 0, []
    while seen < expected:
        writer_done = (sync / "writer-done").exists()
        count = len(store.select("training_metrics", where={"sae_id": "s"}))
        assert count >= seen, (count, seen)          # committed rows never disappear
        assert count % 3 == 0, count                 # never a half-written transaction
        assert not writer_done or count == expected, f"the writer is done but {count} of {expected} rows show"
        seen, reads = count, reads + 1
        if 0 < count < expected:
            mid_run.append(count)
        if reads == 1:
            (sync / "reader-started").touch()
        if count == half and (sync / "half-written").exists():
            (sync / "reader-saw-half").touch()
    print(f"reader saw {seen} rows in {reads} reads; mid-run counts {sorted(set(mid_run))}")
""")


@pytest.mark.slow
def test_concurrent_writer_and_reader_processes(tmp_path):
    path = tmp_path / "s.duckdb"
    ResultsStore(path).initialize()
    n_steps, sync = 60, tmp_path / "sync"
    sync.mkdir()
    argv = [str(path), str(n_steps), str(sync)]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.Popen([sys.executable, "-c", READER, *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        w_out, w_err = writer.communicate(timeout=600)
        if writer.returncode != 0:  # the reader would wait for rows that never come
            reader.kill()
        r_out, r_err = reader.communicate(timeout=600)
    finally:
        for process in (writer, reader):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert writer.returncode == 0, w_err
    assert reader.returncode == 0, r_err
    assert f"reader saw {3 * n_steps} rows" in r_out
    assert str(3 * (n_steps // 2 + 1)) in r_out.split("mid-run counts")[1], r_out  # a read landed mid-run
    assert len(ResultsStore(path).select("training_metrics")) == 3 * n_steps


def test_replace_rows_swaps_matching_rows_in_one_transaction(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    store.insert("features", [{"sae_id": "a", "latent": i, "density": 0.1} for i in range(3)])
    store.insert("features", [{"sae_id": "b", "latent": 0, "density": 0.5}])
    store.replace_rows("features", {"sae_id": "a"}, [{"sae_id": "a", "latent": i, "density": 0.9} for i in range(2)])
    rows = store.select("features", order_by=["sae_id", "latent"])
    assert list(zip(rows["sae_id"], rows["density"], strict=True)) == [("a", 0.9), ("a", 0.9), ("b", 0.5)]
    with pytest.raises(ValueError, match="non-empty"):
        store.replace_rows("features", {}, [])
    with pytest.raises(duckdb.ConstraintException):  # a duplicate key aborts the transaction: the old rows stay
        store.replace_rows("features", {"sae_id": "b"}, [{"sae_id": "b", "latent": 0}, {"sae_id": "b", "latent": 0}])
    assert len(store.select("features", where={"sae_id": "b"})) == 1


def test_migration_3_keeps_one_metric_row_per_key_and_refuses_duplicates(tmp_path):
    """Two processes training one run once stored every metric row twice (issue 20): migrating keeps the first
    of each (run, SAE, step, metric), and the key then makes a duplicate impossible."""
    path = tmp_path / "old.duckdb"
    con = store_at_version(path, 2)
    con.execute("INSERT INTO runs (run_id, kind, status) VALUES ('r', 'train', 'running')")
    for value in (0.1, 0.2):
        con.execute("INSERT INTO training_metrics VALUES ('r', 's', 10, 640, 'mse', ?), ('r', 's', 20, 1280, 'mse', 0.5)",
                    [value])
    con.close()
    store = ResultsStore(path).initialize()
    rows = store.select("training_metrics", order_by=["step"])
    assert rows[["step", "value"]].values.tolist() == [[10, 0.1], [20, 0.5]]
    with pytest.raises(duckdb.ConstraintException):
        store.insert("training_metrics", [{"run_id": "r", "sae_id": "s", "step": 10, "tokens": 640, "metric": "mse",
                                           "value": 1.0}])
    store.delete_training_metrics_after("r", 0)  # a resumed run rewrites its rows
    store.insert("training_metrics", [{"run_id": "r", "sae_id": "s", "step": 10, "tokens": 640, "metric": "mse",
                                       "value": 1.0}])
    assert store.select("training_metrics")["value"].tolist() == [1.0]
    assert store.interrupt_stale_runs("train") == ["r"]  # a run from before pids were recorded: no process owns it
    assert store.runs()["status"].tolist() == ["interrupted"]


def test_transaction_stores_all_writes_or_none(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.insert("runs", [{"run_id": "a", "kind": "eval", "status": "done"}])
        raise RuntimeError("killed in between")
    assert store.runs().empty
    with store.transaction() as tx:
        tx.insert("runs", [{"run_id": "a", "kind": "eval", "status": "done"}])
        tx.replace_rows("runs", {"run_id": "a"}, [{"run_id": "a", "kind": "eval", "status": "failed"}])
    assert store.runs()["status"].tolist() == ["failed"]


def test_migration_4_adds_one_label_per_latent_and_keeps_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    con = store_at_version(path, 3)
    con.execute("INSERT INTO features (sae_id, latent, density) VALUES ('s', 3, 0.1)")
    con.close()
    store = ResultsStore(path)
    assert "feature_labels" not in store.tables()
    store.initialize()
    assert store.schema_version() == SCHEMA_VERSION and store.select("features")["latent"].tolist() == [3]
    store.insert("feature_labels", [{"sae_id": "s", "latent": 3, "label": "years", "note": None}])
    row = store.select("feature_labels").iloc[0]
    assert row["label"] == "years" and row["updated_at"] is not None
    with pytest.raises(duckdb.ConstraintException):  # one label per latent: saving replaces the row
        store.insert("feature_labels", [{"sae_id": "s", "latent": 3, "label": "again"}])
    with pytest.raises(duckdb.ConstraintException):
        store.insert("feature_labels", [{"sae_id": "s", "latent": 4, "label": None}])


def test_migration_5_records_a_transcoders_output_site_and_keeps_old_sae_rows(tmp_path):
    from saelab.sae import SAEConfig
    from saelab.workflows.storage import sae_row

    path = tmp_path / "old.duckdb"
    con = store_at_version(path, 4)
    con.execute("INSERT INTO saes (sae_id, architecture, d_in, d_sae, path) VALUES ('old', 'topk', 8, 16, 'saes/old')")
    con.close()
    store = ResultsStore(path).initialize()
    tc = SAEConfig("topk", 8, 16, k=4, d_out=6, hook_site="1.resid_mid", output_site="1.mlp_out")
    sae = SAEConfig("topk", 8, 16, k=4, hook_site="1.mlp_out")
    store.insert("saes", [sae_row(tc, "tc", "saes/tc", None), sae_row(sae, "sae", "saes/sae", None)])
    rows = store.select("saes", order_by=["sae_id"]).set_index("sae_id")
    assert rows.loc["tc", "output_site"] == "1.mlp_out" and rows.loc["tc", "d_out"] == 6
    assert rows.loc["tc", "site"] == "1.resid_mid"
    for sae_id in ("old", "sae"):  # an SAE (and a row written before transcoders) has no output site
        assert pd.isna(rows.loc[sae_id, "output_site"]) and pd.isna(rows.loc[sae_id, "d_out"])


def test_migration_7_adds_documents_and_quantiles_and_keeps_dashboard_rows(tmp_path):
    from saelab.db import queries as q

    path = tmp_path / "old.duckdb"
    con = store_at_version(path, 6)
    con.execute("INSERT INTO features (sae_id, latent, density, max_act) VALUES ('s', 0, 0.1, 2.0), ('s', 1, 0.0, 0.0)")
    con.execute("""INSERT INTO feature_examples VALUES ('s', 0, 'top', 0, 2.0, '["a", "b"]', '[0.0, 2.0]', 1),
                   ('s', 0, 'quantile_0', 0, 0.5, '["c"]', '[0.5]', 0)""")
    con.close()
    store = ResultsStore(path)
    old = q.feature_dashboard(store, "s", 0)  # the app reads the old store without migrating it
    assert old.feature.quantiles is None and [e.document for e in old.examples] == [None, None]
    assert store.schema_version() == 6
    store.initialize()
    assert store.schema_version() == SCHEMA_VERSION
    assert len(store.select("features")) == 2 and len(store.select("feature_examples")) == 2  # nothing lost
    assert q.feature_dashboard(store, "s", 0) == old
    store.insert("features", [{"sae_id": "s", "latent": 2, "quantiles": [{"index": 0, "low": 1.0, "high": 1.5,
                                                                          "count": 3}]}])
    store.insert("feature_examples", [{"sae_id": "s", "latent": 2, "kind": "top", "rank": 0, "activation": 1.5,
                                       "tokens": ["d"], "activations": [1.5], "center": 0, "document": 41}])
    new = q.feature_dashboard(store, "s", 2)
    assert new.feature.quantiles == [{"index": 0, "low": 1.0, "high": 1.5, "count": 3}]
    assert new.examples[0].document == 41
