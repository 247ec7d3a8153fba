import hashlib
import json

import pandas as pd
import pytest

from saelab.cli import main
from saelab.db import ResultsStore
from saelab.sae import load_sae


def write_corpus(folder):
    folder.mkdir()
    for i in range(3):
        (folder / f"doc{i}.py").write_text(
            "".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(80))
        )
    return folder


def tree_digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


TRAIN = ["train", "--model", "saelab-random", "--sites", "1.resid_post", "--arch", "topk,relu_l1",
         "--width", "128", "--k", "8", "--tokens", "4096", "--batch-size", "256"]


@pytest.mark.slow
def test_train_streams_records_and_reuses(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    ws = tmp_path / "ws"
    assert main([*TRAIN, "--workspace", str(ws), "--source", str(corpus)]) == 0, capsys.readouterr().err
    store = ResultsStore(ws / "saelab.duckdb")
    saes = store.select("saes", order_by=["architecture"])
    assert list(saes["architecture"]) == ["relu_l1", "topk"]
    # k only in the ids (and k column) of architectures that use it
    relu_id, topk_id = saes["sae_id"]
    assert "-k" not in relu_id and "-w128-k8-" in topk_id and pd.isna(saes["k"][0]) and saes["k"][1] == 8
    for path in saes["path"]:
        sae = load_sae(ws / path)
        assert sae.cfg.hook_site == "1.resid_post" and sae.cfg.d_sae == 128
    metrics = store.select("training_metrics")
    assert {"loss", "fvu", "l0", "dead_fraction"} <= set(metrics["metric"])
    assert list(store.runs()["status"]) == ["done"]
    # without --lr each SAE trains at its architecture's default, recorded with the run and in its metric rows
    recorded = json.loads(store.runs()["config"][0])["peak_lr"]
    peak = {sae_id.split("-")[1]: lr for sae_id, lr in recorded.items()}
    assert peak == {"topk": 3e-3, "relu_l1": 4e-4}
    lrs = metrics[metrics["metric"] == "lr"].merge(saes[["sae_id", "architecture"]], on="sae_id")
    assert lrs.groupby("architecture")["value"].max().to_dict() == pytest.approx(peak)

    out, err = capsys.readouterr()
    assert "saelab train: loading saelab-random" in out and "note:" not in out  # 4096 = 16 batches of 256
    words = " ".join(out.split())
    for text in (
        "FVU",
        "L0",
        "dead",
        relu_id,
        topk_id,
        "idle for the last 1,024 training tokens",
    ):  # a quarter
        assert text in words, out
    assert f"saelab eval --sae {ws / 'saes' / topk_id} --dashboards --workspace {ws}" in words
    before = tree_digest(ws)
    assert main([*TRAIN, "--workspace", str(ws), "--source", str(corpus)]) == 0
    assert "reused" in capsys.readouterr().out
    assert tree_digest(ws) == before


def test_train_says_when_it_rounds_the_token_count(tmp_path, capsys, monkeypatch):
    import saelab.workflows.train as workflow

    def stop(workspace, spec, progress=True):
        raise KeyboardInterrupt  # the setup lines are printed before any training starts

    monkeypatch.setattr(workflow, "train_in_workspace", stop)
    args = [a if a != "4096" else "5000" for a in TRAIN]
    assert main([*args, "--workspace", str(tmp_path)]) == 130
    out = " ".join(capsys.readouterr().out.split())
    assert "5,000 tokens is not a whole number of batches of 256; training 19 steps = 4,864 tokens" in out, (
        out
    )


def test_train_help_lists_architectures_and_rejects_an_unknown_one_before_loading(
    tmp_path, capsys, monkeypatch
):
    import saelab.models
    from saelab.sae import ARCHITECTURES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in ARCHITECTURES), help_text

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --arch was checked")

    monkeypatch.setattr(saelab.models, "load_model", no_model)
    assert (
        main(["train", "--sites", "1.resid_post", "--arch", "topk,nosucharch", "--workspace", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown architecture 'nosucharch'; choose from batchtopk" in err, err
    assert not (tmp_path / "saelab.duckdb").exists()


@pytest.mark.parametrize("bad, message", [
    (["--k", "500"], "k"),
    (["--width", "0"], "d_sae"),
    (["--sites", "9.resid_post"], "9.resid_post"),
])
def test_bad_training_input_is_one_line_and_changes_nothing(tmp_path, capsys, bad, message):
    ws = tmp_path / "ws"
    corpus = write_corpus(tmp_path / "corpus")
    assert main(["cache", "--model", "saelab-random", "--sites", "1.resid_post", "--tokens", "512",
                 "--source", str(corpus), "--context-len", "64", "--workspace", str(ws)]) == 0
    before = tree_digest(ws)
    capsys.readouterr()
    args = list(TRAIN)
    flag = bad[0]
    if flag in args:
        args[args.index(flag) + 1] = bad[1]
    code = main([*args, "--workspace", str(ws)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and message in err, err
    assert tree_digest(ws) == before


def test_flag_grid_sets_k_and_l1_only_where_the_architecture_uses_them():
    import argparse

    from saelab.cli.train import _arguments, spec_from_args
    from saelab.workflows.train import SAESpec

    parser = argparse.ArgumentParser()
    _arguments(parser)
    args = parser.parse_args(["--model", "saelab-random", "--sites", "1.resid_post", "--arch",
                              "topk,relu_l1,relu_l1_anthropic,gated,jumprelu", "--k", "4,8", "--l1", "1,2"])
    entries = spec_from_args(args).saes
    grid = sorted((e.architecture, e.k, e.l1_coefficient) for e in entries)
    default_k, default_l1 = SAESpec.k, SAESpec.l1_coefficient
    assert grid == sorted(
        [
            ("topk", 4, default_l1),
            ("topk", 8, default_l1),
            ("jumprelu", default_k, default_l1),
            *[
                (arch, default_k, l1)
                for arch in ("relu_l1", "relu_l1_anthropic", "gated")
                for l1 in (1.0, 2.0)
            ],
        ]
    )
