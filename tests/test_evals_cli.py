"""`saelab eval`: metrics, SAE row and dashboards land in the store; bad input is one line."""

import json

import pytest

from saelab.cli.main import main
from saelab.data.sources import TextsSource
from saelab.db import ResultsStore
from saelab.sae import SAE, SAEConfig, save_sae

TEXTS = tuple(f"def function_{i}(x):\n    return x * {i} + {i * i}\n" * 3 for i in range(40))


@pytest.fixture
def small_sources(monkeypatch):
    import saelab.workflows.eval as workflow

    monkeypatch.setattr(workflow, "held_out_source", lambda: TextsSource(TEXTS, name="held"))
    monkeypatch.setattr(workflow, "training_source", lambda: TextsSource(TEXTS[::-1], name="train"))


@pytest.mark.slow
def test_eval_stores_metrics_and_dashboards(tmp_path, small_sources, capsys):
    sae_dir = tmp_path / "saes" / "topk-32"
    save_sae(SAE(SAEConfig("topk", 64, 32, k=4, hook_site="1.resid_post", model_name="saelab-random")), sae_dir)
    workspace = tmp_path / "ws"
    argv = ["--workspace", str(workspace), "eval", "--sae", str(sae_dir), "--tokens", "256", "--dashboards",
            "--dashboard-tokens", "512", "--context-len", "32", "--batch-size", "4"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "FVU" in out and "CE recovered" in out and "32 latents" in out
    # a line as each stage starts, a bar with ETA over each long pass, the dead window named
    words = " ".join(out.split())
    for stage in ("saelab eval: loading the SAE", "saelab eval: core metrics on", "saelab eval: dashboards: 32 latents",
                  "saelab eval: dashboards: building and storing rows"):
        assert stage in words, out
    assert "core metrics: 100%" in err and "dashboards: 100%" in err and "<00:00" in err, err
    store = ResultsStore(workspace / "saelab.duckdb")
    metrics = store.select("eval_metrics", where={"sae_id": "topk-32"})
    values = dict(zip(metrics["metric"], metrics["value"], strict=True))
    assert values["l0"] <= 4 and values["n_tokens"] > 200 and "ce_loss_score" in values
    assert f"never fired in these {values['n_tokens']:,.0f} tokens" in words, out  # the window of dead_fraction
    assert store.select("saes", where={"sae_id": "topk-32"})["site"].tolist() == ["1.resid_post"]
    assert len(store.select("features", where={"sae_id": "topk-32"})) == 32
    examples = store.select("feature_examples", where={"sae_id": "topk-32"})
    assert len(examples) > 0 and set(examples["kind"]) >= {"top", "quantile_0"}
    top = examples[examples["kind"] == "top"]
    assert top["document"].notna().all()  # where each context comes from in the token source
    assert not top.duplicated(["latent", "document"]).any()  # one context per document
    features = store.select("features", where={"sae_id": "topk-32"})
    n_dash = 16 * 32  # --dashboard-tokens 512 at --context-len 32
    for density, quantiles in zip(features["density"], features["quantiles"], strict=True):
        counted = sum(g["count"] for g in json.loads(quantiles)) if density > 0 else 0
        assert counted == round(density * n_dash)  # every firing token, in one group each
    runs = store.runs()
    assert runs.iloc[-1]["status"] == "done" and runs.iloc[-1]["kind"] == "eval"
    # again without dashboards: metrics append, the SAE row is not duplicated
    assert main(argv[:-7] + ["--context-len", "32"]) == 0
    assert len(store.select("saes", where={"sae_id": "topk-32"})) == 1


def test_eval_bad_input_is_one_line(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path), "eval", "--sae", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SAE config" in err
    assert main(["--workspace", str(tmp_path), "eval", "--sae", "x", "--tokens", "lots"]) == 2
