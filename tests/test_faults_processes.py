"""Faults across real processes: `saelab train` and `saelab cache` killed with SIGKILL at random points and
run again; the web app (a Streamlit server and a reader of the app's queries) running while `saelab train`
writes the same results store.

Every run is small (the saelab-random model, 16k cached tokens, a 32-latent TopK SAE) so a process costs
mostly its start-up. Kill points come from a seeded RNG, so a failure names a reproducible trial. Nothing
races the clock: a child that is to be killed blocks before its last step (saving the SAE, listing the last
shard) until the kill comes, so it cannot finish first on a fast machine; and the writer the app is read
against pauses after its first metric rows until the reader has seen them (handshake files, see `ENTRY`).
(The in-process bad-input table is tests/test_faults.py; API-level kills are in tests/test_training_trainer.py
and tests/test_activations_store.py.)
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from saelab.cli import main
from saelab.db import ResultsStore

pytestmark = pytest.mark.slow

MODEL, SITE = "saelab-random", "1.resid_post"
CACHE_TOKENS, CONTEXT_LEN = 16384, 64
BATCH, CHECKPOINT_EVERY = 64, 1280  # 256 steps, a checkpoint every 20 steps, metric rows every 10
TRAIN = [
    "train",
    "--model",
    MODEL,
    "--sites",
    SITE,
    "--arch",
    "topk",
    "--width",
    "32",
    "--k",
    "4",
    "--tokens",
    str(CACHE_TOKENS),
    "--batch-size",
    str(BATCH),
    "--checkpoint-every",
    str(CHECKPOINT_EVERY),
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TIMEOUT_S = 600  # a process on a loaded 2-core machine spends most of a minute importing torch


def saelab_argv(workspace: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "saelab", "--workspace", str(workspace), *args]


# The CLI entry point run with one function wrapped for a handshake with the test; SAELAB_TEST_SYNC names the
# folder of handshake files.
ENTRY = """
import os, sys, time
from pathlib import Path
SYNC = Path(os.environ["SAELAB_TEST_SYNC"])

def wait_for(name):
    while not (SYNC / name).exists():
        time.sleep(0.01)

def block_until_killed(name):
    (SYNC / name).touch()
    while True:
        time.sleep(1)
{patch}
from saelab.cli import main
sys.exit(main())
"""

# `saelab train` that blocks instead of saving its SAEs: a kill always lands before the end of the run.
BLOCK_BEFORE_SAVE = """
import saelab.sae
saelab.sae.save_sae = lambda *args, **kwargs: block_until_killed("at-save")
"""

# `saelab train` that stops after its first metric rows are committed until a reader has seen them.
PAUSE_AFTER_FIRST_ROWS = """
from saelab.db import ResultsStore
_insert = ResultsStore.insert

def insert_then_wait(self, table, rows):
    count = _insert(self, table, rows)
    if table == "training_metrics" and count and not (SYNC / "first-rows").exists():
        (SYNC / "first-rows").touch()
        wait_for("reader-saw-rows")
    return count

ResultsStore.insert = insert_then_wait
"""


def entry_argv(workspace: Path, patch: str, *args: str) -> list[str]:
    return [sys.executable, "-c", ENTRY.format(patch=patch), "--workspace", str(workspace), *args]


def sync_env(sync: Path) -> dict[str, str]:
    sync.mkdir(exist_ok=True)
    return {**ENV, "SAELAB_TEST_SYNC": str(sync)}


def run_saelab(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        saelab_argv(workspace, *args), capture_output=True, text=True, env=ENV, timeout=TIMEOUT_S
    )


class Progress:
    """The stderr of a child read on a thread: its latest tqdm count (tokens) and all of its text."""

    _COUNT = re.compile(r"training SAEs:\s+\d+%\|[^|]*\|\s*([0-9.]+)(k?)/")

    def __init__(self, process: subprocess.Popen) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.text += chunk.decode(errors="replace")

    def tokens(self) -> float | None:
        """Tokens trained so far by the bar's last update; None before the bar appears."""
        counts = self._COUNT.findall(self.text[-400:])
        if not counts:
            return 0.0 if "training SAEs" in self.text else None
        number, kilo = counts[-1]
        return float(number) * (1000 if kilo else 1)

    def join(self) -> str:
        self._thread.join(timeout=30)
        return self.text


def kill_when(process: subprocess.Popen, ready, delay_s: float, what: str) -> None:
    """SIGKILL `process` `delay_s` after ready() first holds; fail if it ends first."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready():
        assert process.poll() is None, f"the process ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT_S} s"
        time.sleep(0.01)
    time.sleep(delay_s)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (
        f"the process ended (status {process.returncode}) before {what}"
    )


# ---------------------------------------------------------------- workspaces and what they hold


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A workspace with 16k cached tokens of 1.resid_post (one shard), so training reads the cache."""
    root = tmp_path_factory.mktemp("template") / "ws"
    code = main(["--workspace", str(root), "cache", "--model", MODEL, "--sites", SITE,
                 "--tokens", str(CACHE_TOKENS), "--context-len", str(CONTEXT_LEN)])
    assert code == 0
    return root


def copy_of(template: Path, destination: Path) -> Path:
    shutil.copytree(template, destination)
    return destination


def train_run(workspace: Path) -> tuple[str, str]:
    """(run id, SAE id) of the one training run in `workspace`."""
    runs = ResultsStore(workspace / "saelab.duckdb").select("runs", where={"kind": "train"})
    assert len(runs) == 1, runs
    run_id = runs["run_id"].iloc[0]
    (sae_dir,) = (workspace / "saes").iterdir()
    return run_id, sae_dir.name


def metric_rows(workspace: Path, run_id: str) -> dict[tuple[str, int, str], float]:
    """(sae_id, step, metric) -> value of the run's committed metric rows; fails on a duplicate key."""
    rows = ResultsStore(workspace / "saelab.duckdb").select("training_metrics", where={"run_id": run_id})
    keys = list(zip(rows["sae_id"], rows["step"].astype(int), rows["metric"], strict=True))
    assert len(keys) == len(set(keys)), f"duplicate metric rows: {len(keys) - len(set(keys))}"
    return dict(zip(keys, rows["value"], strict=True))


def saved_sae(workspace: Path, sae_id: str) -> dict[str, bytes]:
    directory = workspace / "saes" / sae_id
    return {name: (directory / name).read_bytes() for name in ("sae.safetensors", "cfg.json")}


def assert_finished_like(workspace: Path, reference: Path) -> None:
    """Same SAE bytes, same metric rows (each once, same values), run 'done' with its SAE recorded."""
    run_id, sae_id = train_run(reference)
    assert train_run(workspace) == (run_id, sae_id)
    assert saved_sae(workspace, sae_id) == saved_sae(reference, sae_id)
    assert metric_rows(workspace, run_id) == metric_rows(reference, run_id)
    store = ResultsStore(workspace / "saelab.duckdb")
    assert store.select("runs", where={"run_id": run_id})["status"].iloc[0] == "done"
    assert list(store.select("saes", where={"run_id": run_id})["sae_id"]) == [sae_id]


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    workspace = copy_of(template, tmp_path_factory.mktemp("reference") / "ws")
    done = run_saelab(workspace, *TRAIN)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id, _ = train_run(workspace)
    steps = {step for _, step, _ in metric_rows(workspace, run_id)}
    assert steps == set(range(10, CACHE_TOKENS // BATCH + 1, 10)) | {CACHE_TOKENS // BATCH}
    return workspace


# ---------------------------------------------------------------- 1. kill -9 of `saelab train`

# (lowest, highest) fraction of the run's tokens trained when the kill is triggered: before the first
# checkpoint, early, late. The fraction and an extra delay are drawn from a seeded RNG per trial.
KILL_WINDOWS = [(0.0, CHECKPOINT_EVERY / CACHE_TOKENS * 0.7), (0.1, 0.45), (0.45, 0.75)]


@pytest.mark.parametrize("trial", range(len(KILL_WINDOWS)))
def test_sigkilled_train_resumes_to_the_uninterrupted_run(template, reference, tmp_path, trial):
    rng = random.Random(f"saelab-train-kill-{trial}")
    fraction, delay_s = rng.uniform(*KILL_WINDOWS[trial]), rng.uniform(0.0, 0.1)
    workspace = copy_of(template, tmp_path / "ws")
    victim = subprocess.Popen(entry_argv(workspace, BLOCK_BEFORE_SAVE, *TRAIN), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=sync_env(tmp_path / "sync"))
    progress = Progress(victim)
    threshold = fraction * CACHE_TOKENS
    kill_when(victim, lambda: (progress.tokens() or -1.0) >= threshold, delay_s,
              f"{threshold:.0f} tokens were trained (trial {trial})")
    progress.join()
    run_id, sae_id = train_run(reference)
    assert not (workspace / "saes" / sae_id / "sae.safetensors").exists(), "killed after the SAE was saved"
    store = ResultsStore(workspace / "saelab.duckdb")
    assert store.select("runs", where={"run_id": run_id})["status"].iloc[0] == "running"
    partial = metric_rows(workspace, run_id)  # the killed process's committed rows open, each once
    assert set(partial) <= set(metric_rows(reference, run_id))

    resumed = run_saelab(workspace, *TRAIN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reused" not in resumed.stdout
    assert_finished_like(workspace, reference)


def test_run_killed_while_saving_its_saes_is_finished_not_reused(reference, tmp_path):
    """The narrow window between writing the SAE files and marking the run done, set up by hand: the run
    still 'running', its SAE row absent and cfg.json not yet written. Re-running records the run."""
    workspace = copy_of(reference, tmp_path / "ws")
    run_id, sae_id = train_run(workspace)
    store = ResultsStore(workspace / "saelab.duckdb")
    store.finish_run(run_id, "running", "killed while saving")
    store.replace_rows("saes", {"run_id": run_id}, [])
    (workspace / "saes" / sae_id / "cfg.json").unlink()

    again = run_saelab(workspace, *TRAIN)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" not in again.stdout
    assert_finished_like(
        workspace, reference
    )  # (that a finished run is then reused: tests/test_cli_train.py)


# ---------------------------------------------------------------- 2. the app while training writes

READER = r'''
import json, sys, time, traceback
from pathlib import Path
from streamlit.testing.v1 import AppTest
from saelab.db import queries as q
from saelab.app_support.resources import open_context
from saelab.workspace import Workspace

workspace, main_script, stop = Workspace(Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3])
saw_rows = stop.with_name("sync") / "reader-saw-rows"  # the writer waits for it after its first rows
def render():
    at = AppTest.from_file(main_script, default_timeout=300)
    at.switch_page("views/runs.py")
    at.run()
    problems = [str(e.value) for e in (*at.exception, *at.error)]
    if problems:
        raise AssertionError(f"the runs page showed {problems}")
counts, renders = [], 0
render(); renders += 1
print("ready", flush=True)
while not stop.exists():
    store = open_context(workspace).store
    q.table_counts(store); q.list_runs(store); q.list_saes(store)
    metrics = store.select("training_metrics")
    sae_ids = sorted(set(metrics["sae_id"]))
    names = q.training_metric_names(store, sae_ids)
    q.training_curves(store, sae_ids, names)
    counts.append(len(metrics))
    if counts[-1] > 0:
        saw_rows.touch()
    if len(counts) % 10 == 0:
        render(); renders += 1
    time.sleep(0.05)
render(); renders += 1
print(json.dumps({"counts": counts, "renders": renders}), flush=True)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.poll() is None, f"`saelab app` exited with status {server.returncode}"
        try:
            if http_get(f"{url}/_stcore/health") == (200, b"ok"):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"`saelab app` did not answer at {url} within {TIMEOUT_S} s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()  # `saelab app` stops its Streamlit child on SIGTERM
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_app_and_a_reader_run_while_train_writes(template, reference, tmp_path):
    workspace = copy_of(template, tmp_path / "ws")
    port, stop = free_port(), tmp_path / "stop-reading"
    url = f"http://127.0.0.1:{port}"
    server_log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(saelab_argv(workspace, "app", "--port", str(port)), stdout=server_log,
                              stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    main_script = Path(__file__).resolve().parents[1] / "app" / "main.py"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(workspace), str(main_script), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**ENV, "SAELAB_WORKSPACE": str(workspace)})
    try:
        wait_healthy(url, server)
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()[-3000:]
        writer = subprocess.Popen(
            entry_argv(workspace, PAUSE_AFTER_FIRST_ROWS, *TRAIN),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=sync_env(tmp_path / "sync"),
        )
        polls = 0
        while writer.poll() is None:
            assert http_get(f"{url}/_stcore/health") == (200, b"ok")
            status, page = http_get(f"{url}/")
            assert status == 200 and b"<html" in page.lower()
            assert reader.poll() is None, reader.stderr.read()[-3000:]
            polls += 1
            time.sleep(0.5)
        writer_err = writer.stderr.read().decode(errors="replace")
        assert writer.returncode == 0, writer_err[-3000:]
        assert "Traceback" not in writer_err
        stop.touch()
        out, err = reader.communicate(timeout=TIMEOUT_S)
        assert reader.returncode == 0, err[-3000:]
        assert http_get(f"{url}/_stcore/health") == (200, b"ok")
    finally:
        for process in (reader,):
            if process.poll() is None:
                process.kill()
                process.wait()
        stop_server(server)
        server_log.close()
    summary = json.loads(out.strip().splitlines()[-1])
    counts = summary["counts"]
    run_id, _ = train_run(reference)
    final = len(metric_rows(reference, run_id))
    assert polls > 0 and summary["renders"] >= 2
    assert counts == sorted(counts), "the reader saw rows disappear"
    assert (tmp_path / "sync" / "first-rows").exists()  # the writer paused until the reader saw its rows
    assert any(0 < c < final for c in counts), f"no read landed while rows were being written: {counts[:50]}"
    assert "Traceback" not in (tmp_path / "app.log").read_text()
    assert_finished_like(workspace, reference)


# ---------------------------------------------------------------- 3. kill -9 of `saelab cache`

SHARD_TOKENS = 1024  # 16 shards of 16 contexts
# `saelab cache` with small shards (`--shard-tokens`, in CACHE below), so that a kill lands between shard
# commits: the real CLI entry point, nothing patched.
SMALL_SHARDS = ""
# ...and, for the run that is killed, a block before the manifest lists the last shard (so the kill comes
# first).
BLOCK_BEFORE_LAST_SHARD = SMALL_SHARDS + f"""
import saelab.activations.cache as cache_module
_write_manifest = cache_module.write_manifest

def write_manifest_unless_last(path, manifest):
    if manifest.complete or len(manifest.shards) >= {CACHE_TOKENS // SHARD_TOKENS}:
        block_until_killed("at-last-shard")
    _write_manifest(path, manifest)

cache_module.write_manifest = write_manifest_unless_last
"""
CACHE = [
    "cache",
    "--model",
    MODEL,
    "--sites",
    SITE,
    "--tokens",
    str(CACHE_TOKENS),
    "--context-len",
    str(CONTEXT_LEN),
    "--batch-size",
    "8",
    "--shard-tokens",
    str(SHARD_TOKENS),
]




def test_sigkilled_cache_shows_only_whole_shards_and_resumes(template, tmp_path):
    import numpy as np

    from saelab.activations import open_site_store, read_manifest, store_paths
    from saelab.activations.store import check_npy, check_shard, store_dtype

    rng = random.Random("saelab-cache-kill")
    listed, delay_s = rng.randint(2, 8), rng.uniform(0.0, 0.3)
    workspace = tmp_path / "ws"
    paths = store_paths(workspace / "activations" / MODEL, SITE)
    victim = subprocess.Popen(
        entry_argv(workspace, BLOCK_BEFORE_LAST_SHARD, *CACHE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=sync_env(tmp_path / "sync"),
    )
    progress = Progress(victim)
    kill_when(victim, lambda: paths.manifest.exists() and len(read_manifest(paths.manifest).shards) >= listed,
              delay_s, f"{listed} shards were listed")
    progress.join()

    killed = read_manifest(paths.manifest)
    assert not killed.complete and listed <= len(killed.shards) < CACHE_TOKENS // SHARD_TOKENS
    for shard in killed.shards:  # every listed shard is whole and reads back
        check_shard(paths, killed, shard)
        acts = np.load(paths.shard(shard.index).acts)
        assert acts.shape == (shard.n_tokens, killed.d) and np.isfinite(acts).all()
    for acts_file in paths.root.glob("shard-*.acts.npy"):  # a shard file under its final name is whole
        index = int(acts_file.name.split("-")[1].split(".")[0])
        check_npy(
            acts_file, (SHARD_TOKENS, killed.d), store_dtype(killed.dtype).numpy_dtype, "after the kill"
        )
        assert index < CACHE_TOKENS // SHARD_TOKENS
    with pytest.raises(ValueError, match="incomplete"):
        open_site_store(paths.root.parent, SITE)
    assert ResultsStore(workspace / "saelab.duckdb").select("runs", where={"kind": "cache"})[
        "status"
    ].tolist() == ["running"]

    resumed = subprocess.run(entry_argv(workspace, SMALL_SHARDS, *CACHE), capture_output=True, text=True,
                             env=sync_env(tmp_path / "sync"), timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    computed = int(re.search(r"([\d,]+) tokens computed", resumed.stdout).group(1).replace(",", ""))
    assert computed == CACHE_TOKENS - killed.n_tokens  # the listed shards were kept, not redone
    store = open_site_store(paths.root.parent, SITE)
    assert store.n_tokens == CACHE_TOKENS and len(store.manifest.shards) == CACHE_TOKENS // SHARD_TOKENS
    uninterrupted = open_site_store(template / "activations" / MODEL, SITE)  # one big shard, same rows
    assert np.array_equal(store.rows(0, CACHE_TOKENS).numpy(), uninterrupted.rows(0, CACHE_TOKENS).numpy())
    assert np.array_equal(store.meta(0, CACHE_TOKENS), uninterrupted.meta(0, CACHE_TOKENS))
    results = ResultsStore(workspace / "saelab.duckdb")
    assert "done" in set(results.select("runs", where={"kind": "cache"})["status"])
    assert results.select("cached_sites")["n_tokens"].tolist() == [CACHE_TOKENS]
