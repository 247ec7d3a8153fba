"""Bad input across the CLI: each case exits non-zero with a one-line error, and nothing already in the
workspace changes (checksums of every file before and after). Faults that need processes, kills or a mounted
filesystem (a killed demo, two identical trains, a full disk, a read-only workspace, a symlinked folder) are
in tests/test_faults_reliability.py; kills of train and cache in tests/test_faults_processes.py."""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from saelab.cli import main


def tree_digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def saelab(*args, env=None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "saelab", *args], capture_output=True, text=True, env=full_env, timeout=600
    )


def damage_files(root):
    """Beside the workspace: NaN written into a cached shard of 1.mlp_out, an SAE and a model directory with
    damaged safetensors, and a workspace whose store is a real store cut in half."""
    import numpy as np

    from saelab.models import load_model, save_model

    ws = root / "ws"
    (shard,) = (ws / "activations" / "saelab-random" / "1.mlp_out").glob("shard-*.acts.npy")
    acts = np.load(shard, mmap_mode="r+")
    acts[:] = np.nan
    acts.flush()
    del acts
    (sae_dir,) = (ws / "saes").glob("1.resid_post-topk-w128-k8-*")  # the fixture's own `saelab train`
    for name in ("goodsae", "garbagesae", "truncatedsae"):
        shutil.copytree(sae_dir, root / name)
    (root / "garbagesae" / "sae.safetensors").write_bytes(b"\x00garbage, not safetensors\n" * 40)
    weights = (root / "truncatedsae" / "sae.safetensors").read_bytes()
    (root / "truncatedsae" / "sae.safetensors").write_bytes(weights[: len(weights) // 2])
    save_model(load_model("saelab-random"), root / "badmodel")
    weights = (root / "badmodel" / "model.safetensors").read_bytes()
    (root / "badmodel" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (root / "truncws").mkdir()
    store = (ws / "saelab.duckdb").read_bytes()
    # cut inside the first storage block (DuckDB: three 4 KiB headers, then 256 KiB blocks): a cut further in
    # can fall among free blocks (this store is mostly free blocks after its migrations) and leave it readable
    (root / "truncws" / "saelab.duckdb").write_bytes(store[: 3 * 4096 + 4096])
    mistyped_files(root, sae_dir)


CFG_TYPOS = {"d_in_text": {"d_in": "64"}, "d_in_list": {"d_in": [64]}, "k_fraction": {"k": 2.5},
             "d_sae_huge": {"d_sae": 10**12}, "model_number": {"model_name": 5}}
SWEEP = "batch_size = 256\n{run}\n[[sae]]\nsite = '1.resid_post'\n{sae}\n"
TOML_TYPOS = {"width_text": ("", "width = 'wide'"), "k_fraction": ("", "width = 64\nk = 2.5"),
              "seed_text": ("seed = 'x'", "width = 64"), "model_number": ("model = 5", "width = 64"),
              "tokens_list": ("tokens = [1, 2]", "width = 64")}
TOML_FIELDS = {"width_text": "width", "k_fraction": "k", "seed_text": "seed", "model_number": "model",
               "tokens_list": "tokens"}
CORRUPT_CHECKPOINT_TRAIN = [
    "train",
    "--model",
    "saelab-random",
    "--sites",
    "1.resid_post",
    "--tokens",
    "2048",
    "--batch-size",
    "256",
    "--width",
    "96",
    "--k",
    "8",
]


def mistyped_files(root, sae_dir):
    """SAE directories whose cfg.json has a wrong type, TOML sweeps with one, and a corrupt
    trainer_state.pt."""
    import json

    from saelab.cli.main import build_parser
    from saelab.cli.train import spec_from_args
    from saelab.training.checkpoint import checkpoint_path

    for name, change in CFG_TYPOS.items():
        shutil.copytree(sae_dir, root / f"cfg_{name}")
        cfg = json.loads((root / f"cfg_{name}" / "cfg.json").read_text())
        (root / f"cfg_{name}" / "cfg.json").write_text(json.dumps({**cfg, **change}))
    for name, (run, sae) in TOML_TYPOS.items():
        (root / f"sweep_{name}.toml").write_text(SWEEP.format(run=run, sae=sae))
    spec = spec_from_args(build_parser().parse_args(CORRUPT_CHECKPOINT_TRAIN))
    checkpoint = checkpoint_path(root / "ws" / "checkpoints" / f"train-{spec.run_hash}")
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 not a torch checkpoint\n" * 20)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace holding a demo run, cached activations and a trained SAE, and damaged files beside it."""
    root = tmp_path_factory.mktemp("faults")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"doc{i}.py").write_text(
            "".join(f"def g{i}_{j}(y):\n    return y - {j}\n" for j in range(80))
        )
    (root / "empty").mkdir()
    (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1") * 20)
    (root / "bad.toml").write_text("model = 'saelab-random'\n[[sae]\nsite = ")
    (root / "nofield.toml").write_text(
        "model = 'saelab-random'\n[[sae]]\nsite = '1.resid_post'\ncolour = 'red'\n"
    )
    (root / "blocker").write_text("a file where a directory is expected\n")
    ws = root / "ws"
    for args in (
        ["demo", "--quick", "--no-circuits", "--model", "saelab-random", "--no-app"],
        [
            "cache",
            "--model",
            "saelab-random",
            "--sites",
            "0.mlp_out,1.mlp_out",
            "--tokens",
            "2048",
            "--source",
            str(corpus),
            "--context-len",
            "64",
        ],
        [
            "train",
            "--model",
            "saelab-random",
            "--sites",
            "1.resid_post",
            "--width",
            "128",
            "--k",
            "8",
            "--tokens",
            "2048",
            "--batch-size",
            "256",
        ],
    ):
        done = saelab("--workspace", str(ws), *args)
        assert done.returncode == 0, done.stderr
    damage_files(root)
    return root


BASE_TRAIN = ["train", "--model", "saelab-random", "--sites", "1.resid_post", "--tokens", "2048",
              "--batch-size", "256"]
BASE_CACHE = ["cache", "--model", "saelab-random", "--tokens", "1024"]

# (case id, arguments with {root} for the fixture folder, expected exit code, text the message must contain)
CASES = [
    ("unknown model", ["demo", "--model", "no-such-model", "--no-app"], 1, "no-such-model"),
    ("hub model offline", ["demo", "--model", "gpt2", "--no-app"], 1, "not available offline"),
    (
        "hub model offline (cache)",
        ["cache", "--model", "gpt2-medium", "--sites", "0.resid_pre"],
        1,
        "gpt2-medium",
    ),
    ("site without layer", [*BASE_CACHE, "--sites", "resid_post"], 1, "resid_post"),
    ("site layer missing", [*BASE_CACHE, "--sites", "9.resid_post"], 1, "9.resid_post"),
    ("site kind unknown", [*BASE_CACHE, "--sites", "0.nonsense"], 1, "0.nonsense"),
    ("negative token count", [*BASE_CACHE[:-2], "--sites", "0.resid_pre", "--tokens", "-5"], 2, "-5"),
    ("token count not a number", [*BASE_CACHE[:-2], "--sites", "0.resid_pre", "--tokens", "lots"], 2, "lots"),
    ("dtype not supported", [*BASE_CACHE, "--sites", "0.resid_pre", "--dtype", "int8"], 2, "int8"),
    ("empty corpus", [*BASE_CACHE, "--sites", "0.resid_pre", "--source", "{root}/empty"], 1, "empty"),
    (
        "non-UTF-8 text file",
        [*BASE_CACHE, "--sites", "0.resid_pre", "--source", "{root}/latin1.txt"],
        1,
        "latin1.txt",
    ),
    (
        "missing source file",
        [*BASE_CACHE, "--sites", "0.resid_pre", "--source", "{root}/absent.txt"],
        1,
        "absent.txt",
    ),
    ("k larger than width", [*BASE_TRAIN, "--width", "64", "--k", "100"], 1, "100"),
    ("zero width", [*BASE_TRAIN, "--width", "0"], 1, "d_sae"),
    (
        "unregistered architecture",
        [*BASE_TRAIN, "--arch", "sparse_magic"],
        2,
        "sparse_magic",
    ),  # a usage error, before the model loads
    ("bad site for training", [*BASE_TRAIN[:4], "2.resid_post", *BASE_TRAIN[5:]], 1, "2.resid_post"),
    ("zero batch size", [*BASE_TRAIN[:-1], "0"], 1, "0"),
    ("width list not numbers", [*BASE_TRAIN, "--width", "wide"], 2, "wide"),
    ("missing config file", ["train", "--config", "{root}/absent.toml"], 1, "absent.toml"),
    ("malformed TOML", ["train", "--config", "{root}/bad.toml"], 1, "bad.toml"),
    ("unknown field in TOML", ["train", "--config", "{root}/nofield.toml"], 1, "colour"),
    ("unknown flag", ["train", "--sites", "1.resid_post", "--turbo"], 2, "--turbo"),
    ("unknown subcommand", ["frobnicate"], 2, "frobnicate"),
    (
        "workspace under a file",
        ["--workspace", "{root}/blocker/ws", "demo", "--model", "saelab-random", "--no-app"],
        1,
        "blocker",
    ),
    (
        "NaN in cached activations",
        [*BASE_TRAIN[:4], "1.mlp_out", *BASE_TRAIN[5:], "--width", "64", "--k", "8"],
        1,
        "1.mlp_out: cannot normalise inputs whose mean norm is nan",
    ),
    (
        "SAE weights not safetensors",
        ["eval", "--sae", "{root}/garbagesae", "--tokens", "1024"],
        1,
        "sae.safetensors is not a readable safetensors file",
    ),
    (
        "SAE weights truncated",
        ["eval", "--sae", "{root}/truncatedsae", "--tokens", "1024"],
        1,
        "sae.safetensors is not a readable safetensors file",
    ),
    (
        "model weights truncated",
        [*BASE_CACHE, "--sites", "0.resid_pre", "--model", "{root}/badmodel"],
        1,
        "model.safetensors",
    ),
    (
        "truncated store (cache)",
        ["--workspace", "{root}/truncws", *BASE_CACHE, "--sites", "0.resid_pre"],
        1,
        "saelab.duckdb",
    ),
    (
        "truncated store (train)",
        ["--workspace", "{root}/truncws", *BASE_TRAIN, "--width", "64", "--k", "8"],
        1,
        "saelab.duckdb",
    ),
    (
        "truncated store (eval)",
        ["--workspace", "{root}/truncws", "eval", "--sae", "{root}/goodsae", "--tokens", "1024"],
        1,
        "saelab.duckdb",
    ),
    # issue 20: wrong types where files are read name the file and the field, before anything is written
    *[
        (
            f"cfg.json {name}",
            ["eval", "--sae", f"{{root}}/cfg_{name}", "--tokens", "1024"],
            1,
            (f"cfg_{name}/cfg.json", next(iter(change))),
        )
        for name, change in CFG_TYPOS.items()
    ],
    *[
        (
            f"TOML {name}",
            ["train", "--config", f"{{root}}/sweep_{name}.toml"],
            1,
            (f"sweep_{name}.toml", field),
        )
        for name, field in TOML_FIELDS.items()
    ],
    (
        "width too large to allocate",
        [*BASE_TRAIN, "--width", "100000000000", "--k", "8"],
        1,
        ("GiB", "memory"),
    ),
    ("corrupt trainer_state.pt", CORRUPT_CHECKPOINT_TRAIN, 1, ("trainer_state.pt", "delete")),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, args, code, text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(workspace, case, args, code, text, capsys, monkeypatch):
    """In-process (the same `main` the console script runs) so the table stays fast."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ws = workspace / "ws"
    before = tree_digest(workspace)  # the workspace and the damaged files beside it
    argv = [a.replace("{root}", str(workspace)) for a in args]
    if "--workspace" not in argv:
        argv = ["--workspace", str(ws), *argv]
    capsys.readouterr()
    returncode = main(argv)
    err = capsys.readouterr().err
    assert returncode == code, (case, returncode, err)
    lines = [line for line in err.strip().splitlines() if "%|" not in line]  # tqdm bars are not messages
    assert len(lines) == 1, (case, err)
    for part in (text,) if isinstance(text, str) else text:
        assert part in lines[0], (case, lines[0])
    assert "Traceback" not in err
    assert tree_digest(workspace) == before, case


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"not a database at all\n" * 100, b"DUCK" + b"\x00" * 8000])
def test_foreign_or_truncated_store_is_refused_and_kept(workspace, content, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "saelab.duckdb").write_bytes(content)
    before = tree_digest(ws)
    done = saelab("--workspace", str(ws), "demo", "--model", "saelab-random", "--no-app")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "saelab.duckdb" in done.stderr
    assert tree_digest(ws) == before
