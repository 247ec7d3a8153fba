"""Nothing lost, nothing half-written (issue 20): a demo killed while computing dashboards, results the app reads as
a unit written in one transaction, two identical `saelab train` at once, runs left "running" by a kill, a full
disk while caching, a read-only workspace, a symlinked workspace folder.

Kills and concurrency use real processes. A process is stopped at a known point by a handshake, not a sleep: the
entry point below wraps one library function so that its first call writes a `ready` file and then reads a line
from stdin, a pipe the test holds (it writes the line to let the process go on, or kills it).
Disk-full and read-only cases mount a small tmpfs in a private mount namespace (`unshare`); where that is not
possible they are skipped with the reason, except under CI=true as root, where they must run.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from saelab.cli import main
from saelab.db import ResultsStore

pytestmark = pytest.mark.slow

MODEL = "saelab-random"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TIMEOUT_S = 600
TRAIN = ["train", "--model", MODEL, "--sites", "1.resid_post", "--arch", "topk", "--width", "32", "--k", "4",
         "--tokens", "8192", "--batch-size", "64", "--checkpoint-every", "1280"]

# Wraps MODULE.ATTR: the first call writes READY (this process's id) and waits for a line on stdin; with
# WRAP_RESULT the wrapped function's *result* (a callable) is wrapped instead, so that the pause comes after its
# first call (e.g. after the first batch of metric rows is stored).
PAUSE_ENTRY = r'''
import importlib, os, sys
from pathlib import Path
module_name, attr, ready, wrap_result = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"
module = importlib.import_module(module_name)
original = getattr(module, attr)
paused = []
def pause():
    if not paused:
        paused.append(True)
        ready.with_suffix(".tmp").write_text(str(os.getpid()))
        os.replace(ready.with_suffix(".tmp"), ready)  # the test sees the file only once it holds the id
        sys.stdin.readline()
def after_first_call(function):
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        pause()
        return result
    return wrapped
def replacement(*args, **kwargs):
    if wrap_result:
        return after_first_call(original(*args, **kwargs))
    pause()
    return original(*args, **kwargs)
setattr(module, attr, replacement)
from saelab.cli import main
sys.exit(main(sys.argv[5:]))
'''


class Paused:
    """A `saelab` process that stops at the first call of `module.attr` until released or killed."""

    def __init__(self, tmp_path: Path, module: str, attr: str, argv: list[str], wrap_result: bool = False) -> None:
        self.ready = tmp_path / f"ready-{attr}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", PAUSE_ENTRY, module, attr, str(self.ready), "1" if wrap_result else "0", *argv],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)

    def wait_ready(self) -> int:
        """Block until the process has paused (its ready file names it); returns its process id."""
        import selectors

        selector = selectors.DefaultSelector()  # wake on the child's output and on its exit (stderr closes)
        selector.register(self.process.stderr, selectors.EVENT_READ)
        seen = b""
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode} before pausing: "
                                     f"{(seen + os.read(self.process.stderr.fileno(), 1 << 20)).decode()[-3000:]}")
            if selector.select(timeout=0.05):
                seen = (seen + os.read(self.process.stderr.fileno(), 1 << 16))[-20000:]
        return int(self.ready.read_text())

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=60)
        assert self.process.returncode == -signal.SIGKILL

    def release(self) -> subprocess.CompletedProcess:
        out, err = self.process.communicate("go\n", timeout=TIMEOUT_S)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)


def run_saelab(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saelab", "--workspace", str(workspace), *args],
                          capture_output=True, text=True, env=ENV, timeout=TIMEOUT_S)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if "%|" not in line and "Moving model" not in line]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def runs_of(workspace: Path, kind: str) -> dict[str, str]:
    runs = ResultsStore(workspace / "saelab.duckdb").select("runs", where={"kind": kind}, order_by=["created_at"])
    return dict(zip(runs["run_id"], runs["status"], strict=True))


# ---------------------------------------------------------------- 1 + 5. a demo killed while computing dashboards


def test_demo_killed_during_dashboards_computes_them_on_rerun(tmp_path):
    workspace = tmp_path / "ws"
    demo = ["--workspace", str(workspace), "demo", "--quick", "--no-circuits", "--model", MODEL, "--no-app"]
    victim = Paused(tmp_path, "saelab.evals.features", "compute_dashboards", demo)
    victim.wait_ready()  # core metrics of the first SAE are stored; its dashboards are being computed
    victim.kill()
    (killed_demo,) = runs_of(workspace, "demo")
    (killed_eval,) = runs_of(workspace, "eval")

    assert main(demo) == 0
    store = ResultsStore(workspace / "saelab.duckdb")
    with_dashboards = set(store.select("features")["sae_id"])
    assert any("-topk-" in sae_id for sae_id in with_dashboards), "the killed SAE's dashboards were skipped"
    for sae_id in with_dashboards:  # each has its examples (written in the same transaction)
        assert not store.select("feature_examples", where={"sae_id": sae_id}, limit=1).empty
    # 5: the killed runs are no longer "running"
    assert runs_of(workspace, "demo")[killed_demo] == "interrupted"
    assert runs_of(workspace, "eval")[killed_eval] == "interrupted"
    assert "running" not in set(runs_of(workspace, "eval").values())


# ---------------------------------------------------------------- 4. one transaction per result


class FailingInsert:
    """Makes ResultsStore's insert of `table` raise, as a kill between two writes would stop the second."""

    def __init__(self, monkeypatch, table: str) -> None:
        original = ResultsStore._insert

        def insert(store, con, name, rows):
            if name == table:
                raise KeyboardInterrupt(f"killed before writing {table}")
            return original(store, con, name, rows)

        monkeypatch.setattr(ResultsStore, "_insert", insert)


def test_dashboards_are_replaced_in_one_transaction(tmp_path, monkeypatch):
    from saelab.workflows.storage import write_dashboards

    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    old_features = [{"sae_id": "s", "latent": i, "max_act": 0.646} for i in range(3)]
    old_examples = [{"sae_id": "s", "latent": i, "kind": "top", "rank": 0, "activation": 0.646} for i in range(3)]
    write_dashboards(store, "s", old_features, old_examples)
    FailingInsert(monkeypatch, "feature_examples")
    new_features = [{"sae_id": "s", "latent": i, "max_act": 0.0} for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        write_dashboards(store, "s", new_features, old_examples)
    assert store.select("features")["max_act"].tolist() == [0.646] * 3  # not torn: the old dashboards, whole
    assert len(store.select("feature_examples")) == 3


def test_circuit_results_are_written_in_one_transaction(tmp_path, monkeypatch):
    from saelab.circuits.runner import CircuitRunConfig
    from saelab.models import get_default_model_name
    from saelab.workflows.circuits import run_circuits_in_workspace
    from saelab.workspace import Workspace

    FailingInsert(monkeypatch, "circuit_evals")
    config = CircuitRunConfig(task="ioi", model=get_default_model_name(), methods=("eap",), seeds=(0,), n_prompts=8)
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(KeyboardInterrupt):
        run_circuits_in_workspace(workspace, config)
    store = ResultsStore(workspace.db_path)
    assert store.select("circuit_runs").empty and store.select("circuit_scores").empty
    assert set(runs_of(workspace.root, "circuits").values()) == {"failed"}


# ---------------------------------------------------------------- 2. the same `saelab train` twice at once


def test_second_identical_train_names_the_holder_and_no_metric_row_is_duplicated(tmp_path):
    workspace = tmp_path / "ws"
    first = Paused(tmp_path, "saelab.workflows.train", "metrics_sink", ["--workspace", str(workspace), *TRAIN],
                   wrap_result=True)
    holder = first.wait_ready()  # the first has stored its first metric rows and holds the run
    second = run_saelab(workspace, *TRAIN)
    finished = first.release()
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert second.returncode == 1, (second.returncode, second.stderr[-3000:])
    assert f"process {holder}" in one_line(second.stderr)
    rows = ResultsStore(workspace / "saelab.duckdb").select("training_metrics")
    keys = list(zip(rows["run_id"], rows["sae_id"], rows["step"], rows["metric"], strict=True))
    assert len(keys) == len(set(keys)) and len(keys) > 0
    assert set(runs_of(workspace, "train").values()) == {"done"}
    assert not list((workspace / "locks").glob("*")), "a released lock leaves no file"


# ---------------------------------------------------------------- 5. stale "running" runs


def test_killed_cache_run_is_marked_interrupted_on_the_next_start(tmp_path):
    workspace = tmp_path / "ws"
    cache = ["--workspace", str(workspace), "cache", "--model", MODEL, "--sites", "1.resid_post", "--tokens", "2048",
             "--context-len", "64"]
    victim = Paused(tmp_path, "saelab.activations", "cache_activations", cache)
    victim.wait_ready()
    victim.kill()
    (killed,) = runs_of(workspace, "cache")
    assert runs_of(workspace, "cache")[killed] == "running"
    assert main(cache) == 0
    statuses = runs_of(workspace, "cache")
    assert statuses[killed] == "interrupted"
    assert sorted(statuses.values()) == ["done", "interrupted"]


def test_a_live_run_is_not_marked_interrupted(tmp_path):
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    live = store.start_run("eval", "mine")  # this process: alive
    store.start_run("eval", "another")
    assert set(store.select("runs")["status"]) == {"running"}
    assert store.select("runs", where={"run_id": live})["pid"].tolist() == [os.getpid()]


# ---------------------------------------------------------------- 3 and 8. a full disk, a read-only workspace


def can_mount() -> str | None:
    """None when this test can mount a tmpfs in a private mount namespace, else the reason it cannot."""
    if shutil.which("unshare") is None:
        return "no `unshare` command (util-linux) to make a private mount namespace"
    probe = subprocess.run(["unshare", "-m", *([] if os.geteuid() == 0 else ["-r"]), "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt 2>&1 || mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()[:200]}"


def require_mount() -> None:
    reason = can_mount()
    if reason is None:
        return
    if os.environ.get("CI") == "true" and os.geteuid() == 0:
        pytest.fail(f"CI runs as root and must run this test: {reason}")
    pytest.skip(reason)


def in_tmpfs(mount_at: Path, size: str, script: str, read_only: bool = False) -> subprocess.CompletedProcess:
    """Run `script` (sh) with a `size` tmpfs mounted at `mount_at` (its current files copied in), in a private
    mount namespace; with `read_only` the tmpfs is remounted read-only before the script runs."""
    keep = mount_at.parent / (mount_at.name + ".before")
    mount_at.rename(keep) if mount_at.exists() else keep.mkdir()
    mount_at.mkdir()
    remount = f"mount -o remount,ro '{mount_at}' && " if read_only else ""
    shell = (f"mount -t tmpfs -o size={size} tmpfs '{mount_at}' && cp -a '{keep}/.' '{mount_at}/' && {remount}"
             f"{script}")
    return subprocess.run(["unshare", "-m", *([] if os.geteuid() == 0 else ["-r"]), "sh", "-c", shell],
                          capture_output=True, text=True, env=ENV, timeout=TIMEOUT_S)


def saelab_sh(workspace: Path, *args: str) -> str:
    quoted = " ".join(f"'{a}'" for a in ("--workspace", str(workspace), *args))
    return f"'{sys.executable}' -m saelab {quoted}"


def test_disk_full_while_caching_is_one_line_and_leaves_no_temp_file(tmp_path):
    require_mount()
    workspace = tmp_path / "ws"
    activations = workspace / "activations"
    activations.mkdir(parents=True)
    # 16k tokens x d_model 64 x float32 = 4 MiB in one shard, on a 1 MiB filesystem
    script = (saelab_sh(workspace, "cache", "--model", MODEL, "--sites", "1.resid_post", "--tokens", "16384",
                        "--context-len", "64")
              + f"; code=$?; echo leftover: $(find '{activations}' -name '*.tmp'); exit $code")
    done = in_tmpfs(activations, "1m", script)
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    line = one_line(done.stderr)
    assert "MiB" in line and str(activations) in line, line
    assert done.stdout.strip().splitlines()[-1] == "leftover:", done.stdout
    assert set(runs_of(workspace, "cache").values()) == {"failed"}


def test_read_only_workspace_says_read_only(tmp_path):
    require_mount()
    workspace = tmp_path / "ws"
    for folder in ("activations", "saes", "checkpoints"):
        (workspace / folder).mkdir(parents=True)
    ResultsStore(workspace / "saelab.duckdb").initialize()
    done = in_tmpfs(workspace, "16m", saelab_sh(workspace, "cache", "--model", MODEL, "--sites", "1.resid_post",
                                                "--tokens", "1024"), read_only=True)
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_line(done.stderr)
    assert "read-only" in line and "move it aside" not in line, line


# ---------------------------------------------------------------- 6. a workspace folder symlinked elsewhere


def test_symlinked_saes_folder_trains_once_and_is_reused(tmp_path, capsys):
    workspace, elsewhere = tmp_path / "ws", tmp_path / "bigdisk" / "saes"
    elsewhere.mkdir(parents=True)
    workspace.mkdir()
    (workspace / "saes").symlink_to(elsewhere)
    argv = ["--workspace", str(workspace), *TRAIN[:-6], "--tokens", "2048", "--batch-size", "256"]
    assert main(argv) == 0, capsys.readouterr().err
    assert list(elsewhere.iterdir()), "the SAE was not written through the link"
    capsys.readouterr()
    assert main(argv) == 0
    assert "reused" in capsys.readouterr().out
    (path,) = ResultsStore(workspace / "saelab.duckdb").select("saes")["path"]
    assert path.startswith("saes/")


def test_disk_full_for_a_checkpoint_is_one_line(tmp_path):
    require_mount()
    workspace = tmp_path / "ws"
    checkpoints = workspace / "checkpoints"
    checkpoints.mkdir(parents=True)
    done = in_tmpfs(checkpoints, "8k", saelab_sh(workspace, *TRAIN))
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    line = one_line(done.stderr)
    assert "No space left" in line and str(checkpoints) in line, line
    assert set(runs_of(workspace, "train").values()) == {"failed"}


def test_shard_whose_blocks_cannot_be_allocated_is_refused_and_removed(tmp_path, monkeypatch, random_model):
    """Space that goes between the free-space check and the shard's allocation (another writer): the allocation
    fails with ENOSPC, which is the same one-line error, and the temporary shard is removed."""
    import errno

    import saelab.activations.cache as cache
    from saelab.capacity import CapacityError
    from saelab.data.sources import bundled_source

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "require_disk", lambda *args: None)
    monkeypatch.setattr(cache.os, "posix_fallocate", full)
    # 16384 tokens x (64 floats x 4 bytes + 12 bytes of token, document and position) = 4.19 MiB
    with pytest.raises(CapacityError, match=r"no space for shard 0 of 1\.resid_post: needs 4\.2 MiB"):
        cache.cache_activations(MODEL, "1.resid_post", 16384, out_dir=tmp_path, source=bundled_source(),
                                context_len=64, model=random_model, progress=False)
    assert not list(tmp_path.rglob("*.tmp"))


def test_field_types_follow_the_dataclass():
    from saelab.fields import check_field_types
    from saelab.sae import SAEConfig
    from saelab.workflows.train import SAESpec

    ok = {"architecture": "topk", "d_in": 64, "d_sae": 512, "k": 8, "l1_coefficient": 1, "auxk_k": None,
          "dtype": "float16", "normalize_activations": False}
    check_field_types(SAEConfig, ok, "cfg.json")  # an integer where a float is declared is a number
    check_field_types(SAESpec, {"site": "1.resid_post", "lr": None}, "sweep.toml")
    for field, value in (("d_in", "64"), ("d_in", [64]), ("k", 2.5), ("k", True), ("auxk_k", 1.5),
                         ("dtype", "float8"), ("normalize_activations", 1), ("l1_coefficient", "1"),
                         ("model_name", 5)):
        with pytest.raises(ValueError, match=rf"^cfg\.json: {field} must be .*got {re.escape(repr(value))}"):
            check_field_types(SAEConfig, {**ok, field: value}, "cfg.json")
