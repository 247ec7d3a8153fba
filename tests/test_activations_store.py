"""The on-disk store: values equal TransformerLens', atomic shards, resume, checks, workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from saelab.activations import (
    SITE_KINDS,
    ActivationStoreError,
    CacheConfig,
    HookSite,
    NonFiniteActivationError,
    cache_activations,
    merge_worker_manifests,
    open_site_store,
    read_manifest,
    store_paths,
    worker_from_env,
)
from saelab.activations.store import check_shard
from saelab.data import DataSourceError, FileSource, GeneratorSource, TextsSource

CONTEXT = 16


def _texts(n=40, seed=0):
    rng = np.random.default_rng(seed)
    words = ["when", "Mary", "and", "John", "went", "to", "the", "store", "def", "return", "x", "(", ")"]
    return tuple(" ".join(rng.choice(words, size=int(rng.integers(5, 40)))) for _ in range(n))


SOURCE = TextsSource(_texts(), name="test-texts")


def _cache(model, out_dir, sites, n_tokens=320, dtype="float32", **options):
    options = {"context_len": CONTEXT, "batch_size": 3, "shard_tokens": 5 * CONTEXT, "progress": False,
               "source": SOURCE, **options}
    return cache_activations("saelab-random", sites, n_tokens, dtype, out_dir, model=model, **options)


def _contexts_tokens(store):
    meta = store.meta(0, store.n_tokens)
    return torch.from_numpy(meta["token"].astype(np.int64)).reshape(-1, CONTEXT)


def test_cached_values_equal_run_with_cache_for_every_kind(tmp_path, random_model):
    sites = [HookSite(layer, kind) for layer in range(2) for kind in SITE_KINDS]
    result = _cache(random_model, tmp_path, sites)
    assert result.complete and result.n_tokens == 320 and result.tokens_written == 320
    tokens = _contexts_tokens(open_site_store(tmp_path, sites[0]))
    _, cache = random_model.run_with_cache(tokens)
    random_model.set_use_attn_result(True)
    try:
        _, cache_with_results = random_model.run_with_cache(tokens)
    finally:
        random_model.set_use_attn_result(False)
    for site in sites:
        store = open_site_store(tmp_path, site, expect_d=site.width(random_model.cfg))
        got = store.all_rows()
        if site.kind.name == "head_result":
            expected = cache_with_results[f"blocks.{site.layer}.attn.hook_result"].reshape(320, -1)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(got, cache[site.hook_name].reshape(320, -1)), str(site)
    info = result.sites["1.head_result"]
    assert (info.d, info.dtype, info.feature_shape, info.n_tokens) == (256, "float32", (4, 64), 320)


def test_store_layout_and_manifest(tmp_path, random_model):
    _cache(random_model, tmp_path, "1.attn_z", n_tokens=300)
    paths = store_paths(tmp_path, "1.attn_z")
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["n_tokens"] == 304 and manifest["n_contexts"] == 19  # rounded up to whole contexts
    assert [s["n_tokens"] for s in manifest["shards"]] == [80, 80, 80, 64]
    assert (manifest["model"], manifest["site"], manifest["dtype"], manifest["d"]) == (
        "saelab-random", "1.attn_z", "float32", 64)
    assert manifest["source"]["name"] == "test-texts" and manifest["seed"] == 0 and manifest["complete"]
    assert manifest["format_version"] == 1
    meta = open_site_store(tmp_path, "1.attn_z").meta(0, 304)
    assert (meta["pos"][:CONTEXT] == np.arange(CONTEXT)).all()
    assert (meta["token"][::CONTEXT] == random_model.tokenizer.bos_token_id).all()
    assert np.all(np.diff(meta["doc"]) >= 0)
    acts = np.load(paths.shard(0).acts, mmap_mode="r")
    assert isinstance(acts, np.memmap) and acts.shape == (80, 64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes_store_the_cast_values(tmp_path, random_model, dtype):
    _cache(random_model, tmp_path / "f32", "0.mlp_post")
    _cache(random_model, tmp_path / "half", "0.mlp_post", dtype=dtype)
    full = open_site_store(tmp_path / "f32", "0.mlp_post").all_rows()
    half = open_site_store(tmp_path / "half", "0.mlp_post")
    assert half.rows(0, 10).dtype == getattr(torch, dtype)
    assert torch.equal(half.all_rows(), full.to(getattr(torch, dtype)).float())


def test_rerun_resumes_and_changed_settings_are_refused(tmp_path, random_model):
    first = _cache(random_model, tmp_path, "0.resid_post,1.attn_out")
    again = _cache(random_model, tmp_path, "0.resid_post,1.attn_out")
    assert (first.tokens_written, again.tokens_written, again.n_tokens) == (320, 0, 320)
    longer = _cache(random_model, tmp_path, "0.resid_post,1.attn_out", n_tokens=400)
    assert longer.tokens_written == 80 and longer.n_tokens == 400
    with pytest.raises(ActivationStoreError, match="seed differ"):
        _cache(random_model, tmp_path, "0.resid_post", seed=1)
    with pytest.raises(ActivationStoreError, match="dtype"):
        _cache(random_model, tmp_path, "0.resid_post", dtype="float16")


def test_mismatched_store_is_an_error_and_nothing_is_deleted(tmp_path, random_model):
    _cache(random_model, tmp_path, "0.resid_post")
    paths = store_paths(tmp_path, "0.resid_post")
    with pytest.raises(ActivationStoreError, match="d=64, but the reader expects d=32"):
        open_site_store(tmp_path, "0.resid_post", expect_d=32)
    with pytest.raises(ActivationStoreError, match="no activation store manifest"):
        open_site_store(tmp_path, "1.resid_post")
    shard = paths.shard(2).acts
    data = shard.read_bytes()
    shard.write_bytes(data[:-8])
    with pytest.raises(ActivationStoreError, match="shard 2.*truncated"):
        open_site_store(tmp_path, "0.resid_post")
    with pytest.raises(ActivationStoreError, match="shard 2.*truncated"):  # resuming checks kept shards too
        _cache(random_model, tmp_path, "0.resid_post")
    assert shard.exists() and len(shard.read_bytes()) == len(data) - 8
    shard.unlink()
    with pytest.raises(ActivationStoreError, match="shard-00002.acts.npy.*missing"):
        open_site_store(tmp_path, "0.resid_post")
    assert sorted(p.name for p in paths.root.iterdir()) == sorted(
        ["manifest.json"] + [f"shard-{i:05d}.{part}.npy" for i in range(4) for part in ("acts", "tokens")
                             if (i, part) != (2, "acts")])


def _inject(model, hook_name, value, batch_row=1, position=5):
    def hook(tensor, hook):
        tensor = tensor.clone()
        tensor[batch_row, position] = value
        return tensor

    model.add_hook(hook_name, hook, is_permanent=True)


def test_nan_stops_the_run_naming_site_shard_and_position(tmp_path, random_model):
    _inject(random_model, "blocks.0.hook_resid_mid", float("nan"))
    try:
        with pytest.raises(NonFiniteActivationError) as info:
            _cache(random_model, tmp_path, "0.mlp_out,0.resid_post")
    finally:
        random_model.reset_hooks(including_permanent=True)
    message = str(info.value)
    assert "site 0.mlp_out" in message and "shard 0" in message and "context 1, position 5" in message
    assert not store_paths(tmp_path, "0.mlp_out").manifest.exists()


def test_float16_overflow_is_reported(tmp_path, random_model):
    _inject(random_model, "blocks.0.hook_resid_post", 1e6, batch_row=0, position=3)
    try:
        with pytest.raises(NonFiniteActivationError, match="context 0, position 3.*overflows float16"):
            _cache(random_model, tmp_path, "0.resid_post", dtype="float16")
    finally:
        random_model.reset_hooks(including_permanent=True)


def _write_files(directory: Path) -> str:
    directory.mkdir()
    for i, text in enumerate(_texts(60, seed=1)):
        (directory / f"t{i:03d}.txt").write_text(text)
    return str(directory)


def _cli(workspace, corpus, *extra, tokens="800", shard_tokens=CONTEXT):
    """`saelab cache` into `workspace`; its store is `workspace / "activations" / "saelab-random"`."""
    return [sys.executable, "-m", "saelab", "cache", "--workspace", str(workspace), "--model", "saelab-random",
            "--sites", "0.resid_post,1.head_result", "--tokens", tokens, "--source", corpus,
            "--context-len", str(CONTEXT), "--batch-size", "2", "--shard-tokens", str(shard_tokens), *extra]


def _store_bytes(out_dir) -> dict[str, bytes]:
    files = sorted(p for p in Path(out_dir).rglob("*.npy"))
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in files}


def _reference(tmp_path, corpus, model):
    source = FileSource.from_patterns([corpus])
    cache_activations("saelab-random", "0.resid_post,1.head_result", 800, "float32", tmp_path / "reference",
                      source, context_len=CONTEXT, batch_size=2, shard_tokens=CONTEXT, model=model, progress=False)
    return _store_bytes(tmp_path / "reference")


# `saelab cache` with a block before any manifest lists the last shard (or says complete): the
# process waits there to be killed, so it cannot finish before the kill however fast the machine is.
BLOCK_BEFORE_LAST_SHARD = """
import runpy, sys, time
import saelab.activations.cache as cache_module
_write_manifest = cache_module.write_manifest

def write_manifest_unless_last(path, manifest):
    if manifest.complete or len(manifest.shards) >= {n_shards}:
        while True:
            time.sleep(1)
    _write_manifest(path, manifest)

cache_module.write_manifest = write_manifest_unless_last
runpy.run_module("saelab", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_store(tmp_path, random_model):
    corpus = _write_files(tmp_path / "corpus")
    workspace = tmp_path / "killed"
    out = workspace / "activations" / "saelab-random"
    manifest = store_paths(out, "1.head_result").manifest
    entry = BLOCK_BEFORE_LAST_SHARD.format(n_shards=800 // CONTEXT)
    process = subprocess.Popen([sys.executable, "-c", entry, *_cli(workspace, corpus)[3:]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (manifest.exists() and len(read_manifest(manifest).shards) >= 3):  # pytest's timeout bounds this
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = read_manifest(manifest)
    assert not killed.complete and 3 <= len(killed.shards) < 50
    for site in ("0.resid_post", "1.head_result"):  # every listed shard is whole
        partial = read_manifest(store_paths(out, site).manifest)
        for shard in partial.shards:
            check_shard(store_paths(out, site), partial, shard)
    resumed = subprocess.run(_cli(workspace, corpus), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{800 - len(killed.shards) * CONTEXT} tokens computed in" in resumed.stdout
    assert read_manifest(manifest).complete
    assert _store_bytes(out) == _reference(tmp_path, corpus, random_model)


@pytest.mark.slow
def test_two_workers_equal_one(tmp_path, random_model):
    corpus = _write_files(tmp_path / "corpus")
    workspace = tmp_path / "workers"
    out = workspace / "activations" / "saelab-random"
    workers = [subprocess.Popen(_cli(workspace, corpus, "--worker", str(i), "--num-workers", "2",
                                     shard_tokens=5 * CONTEXT),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    for site in ("0.resid_post", "1.head_result"):  # the last worker to finish merged; undo it, merge by hand
        assert read_manifest(store_paths(out, site).manifest).complete
        store_paths(out, site).manifest.unlink()
    with pytest.raises(ActivationStoreError, match="only workers' manifests; merge them"):
        open_site_store(out, "0.resid_post")
    merged = merge_worker_manifests(out)
    assert set(merged) == {"0.resid_post", "1.head_result"} and merged["0.resid_post"].n_tokens == 800
    source = FileSource.from_patterns([corpus])
    cache_activations("saelab-random", "0.resid_post,1.head_result", 800, "float32", tmp_path / "one", source,
                      context_len=CONTEXT, batch_size=2, shard_tokens=5 * CONTEXT, model=random_model, progress=False)
    assert _store_bytes(out) == _store_bytes(tmp_path / "one")
    for site in ("0.resid_post", "1.head_result"):
        one = read_manifest(store_paths(tmp_path / "one", site).manifest)
        assert merged[site].shards == one.shards and merged[site].identity() == one.identity()
        assert torch.equal(open_site_store(out, site).all_rows(), open_site_store(tmp_path / "one", site).all_rows())


def test_merge_refuses_missing_workers(tmp_path, random_model):
    _cache(random_model, tmp_path, "0.resid_post", worker=0, num_workers=3)
    with pytest.raises(ActivationStoreError, match=r"worker manifests \[0\] of 3"):
        merge_worker_manifests(tmp_path)


def test_workers_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert worker_from_env(None, None) == (1, 4)
    assert worker_from_env(0, 2) == (0, 2)
    with pytest.raises(ValueError, match="both worker and num_workers"):
        worker_from_env(1, None)


@pytest.mark.parametrize(("field", "value"), [("n_tokens", -5), ("n_tokens", 0), ("batch_size", 0),
                                               ("dtype", "int8"), ("worker", 2), ("context_len", 1)])
def test_bad_cache_configs(field, value):
    options = {"n_tokens": 100, "num_workers": 2, field: value}
    with pytest.raises(ValueError, match=repr(value) if field != "worker" else "worker 2"):
        CacheConfig(**options)


def test_running_out_of_text_keeps_written_shards(tmp_path, random_model):
    small = TextsSource(_texts(8), name="few-texts")
    with pytest.raises(DataSourceError, match="ran out before shard"):
        _cache(random_model, tmp_path, "0.resid_post", n_tokens=10_000, source=small)
    kept = read_manifest(store_paths(tmp_path, "0.resid_post").manifest)
    assert kept.shards and not kept.complete
    available = len(kept.shards) * 5 * CONTEXT
    result = _cache(random_model, tmp_path, "0.resid_post", n_tokens=available, source=small)
    assert result.tokens_written == 0 and result.complete


def test_source_errors_surface_from_the_tokenising_thread(tmp_path, random_model):
    def broken(seed):
        yield from _texts(20)
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        _cache(random_model, tmp_path, "0.resid_post", n_tokens=10_000, source=GeneratorSource(broken, "broken"))


def test_a_shard_one_site_had_not_listed_is_redone_once(tmp_path, random_model):
    """A kill between two sites' manifest updates: the shard is recomputed for both, listed once."""
    _cache(random_model, tmp_path / "reference", "0.resid_post,1.attn_z")
    _cache(random_model, tmp_path / "store", "0.resid_post,1.attn_z")
    path = store_paths(tmp_path / "store", "1.attn_z").manifest
    manifest = json.loads(path.read_text())
    manifest["shards"], manifest["complete"] = manifest["shards"][:-1], False
    path.write_text(json.dumps(manifest))
    again = _cache(random_model, tmp_path / "store", "0.resid_post,1.attn_z")
    assert again.tokens_written == 5 * CONTEXT
    for site in ("0.resid_post", "1.attn_z"):
        shards = read_manifest(store_paths(tmp_path / "store", site).manifest).shards
        assert [s.index for s in shards] == [0, 1, 2, 3]
    assert _store_bytes(tmp_path / "store") == _store_bytes(tmp_path / "reference")
