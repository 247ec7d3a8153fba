import json

from saelab.cli import main
from saelab.db import ResultsStore


def write_corpus(folder):
    folder.mkdir()
    for i in range(4):
        (folder / f"doc{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n" for j in range(60)))
    return folder


def test_cache_command_records_sites_in_store(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    ws = tmp_path / "ws"
    code = main(["cache", "--workspace", str(ws), "--model", "saelab-random", "--sites", "1.resid_post,0.attn_z",
                 "--tokens", "1024", "--source", str(corpus), "--context-len", "64", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    rows = ResultsStore(ws / "saelab.duckdb").select("cached_sites", order_by=["site"])
    assert list(rows["site"]) == ["0.attn_z", "1.resid_post"]
    assert all(rows["n_tokens"] >= 1024)
    for path in rows["manifest_path"]:
        manifest = json.loads((ws / path).read_text())
        assert manifest["model"] == "saelab-random"
    runs = ResultsStore(ws / "saelab.duckdb").runs()
    assert list(runs["status"]) == ["done"]


def test_cache_bad_site_is_one_line_error(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    code = main(["cache", "--workspace", str(tmp_path / "ws"), "--model", "saelab-random", "--sites", "7.resid_post",
                 "--tokens", "256", "--source", str(corpus)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "7.resid_post" in err


def test_cache_bad_token_count_is_usage_error(tmp_path, capsys):
    assert main(["cache", "--workspace", str(tmp_path / "ws"), "--sites", "0.resid_pre", "--tokens", "-3"]) == 2
    assert "-3" in capsys.readouterr().err


def test_cache_workers_merge_when_the_last_one_finishes(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    args = ["--model", "saelab-random", "--sites", "1.resid_post", "--tokens", "2048", "--source", str(corpus),
            "--context-len", "64", "--batch-size", "4"]
    ws, single = tmp_path / "ws", tmp_path / "single"
    store_dir = ws / "activations" / "saelab-random" / "1.resid_post"
    assert main(["cache", "--workspace", str(ws), *args, "--worker", "1", "--num-workers", "2"]) == 0
    assert not (store_dir / "manifest.json").exists()  # worker 0 is still to come
    assert ResultsStore(ws / "saelab.duckdb").select("cached_sites").empty
    assert main(["cache", "--workspace", str(ws), *args, "--worker", "0", "--num-workers", "2"]) == 0
    merged = json.loads((store_dir / "manifest.json").read_text())
    assert merged["complete"] and merged["worker"] is None
    assert main(["cache", "--workspace", str(single), *args]) == 0
    alone = json.loads((single / "activations" / "saelab-random" / "1.resid_post" / "manifest.json").read_text())
    assert merged["shards"] == alone["shards"]  # two workers wrote what one worker writes
    rows = ResultsStore(ws / "saelab.duckdb").select("cached_sites")
    assert list(rows["site"]) == ["1.resid_post"] and int(rows["n_tokens"][0]) == sum(
        s["n_contexts"] for s in merged["shards"]) * 64
    assert main(["cache", "--workspace", str(ws), "--model", "saelab-random", "--sites", "1.resid_post", "--merge"]) == 0
    capsys.readouterr()


def test_cache_bad_shard_size_is_usage_error_before_the_workspace_is_touched(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["cache", "--workspace", str(ws), "--sites", "0.resid_pre", "--tokens", "256",
                 "--shard-tokens", "0"]) == 2
    assert "shard_tokens 0 must be a positive integer" in capsys.readouterr().err
    assert not ws.exists()


def test_cache_shard_tokens_sets_the_shards_a_killed_run_resumes_from(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    ws = tmp_path / "ws"
    assert main(["cache", "--workspace", str(ws), "--model", "saelab-random", "--sites", "1.resid_post",
                 "--tokens", "512", "--source", str(corpus), "--context-len", "64", "--shard-tokens", "128"]) == 0
    manifest = json.loads((ws / "activations" / "saelab-random" / "1.resid_post" / "manifest.json").read_text())
    assert [s["n_contexts"] for s in manifest["shards"]] == [2, 2, 2, 2]
    assert "512 tokens computed in" in capsys.readouterr().out
