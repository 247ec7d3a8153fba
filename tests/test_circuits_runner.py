"""Methods × seeds through the runner, store rows, the summary table, and the CLI."""

import json

import pytest

from saelab.circuits import SAECodesConfig
from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import compute_ground_truth
from saelab.circuits.io import load_ground_truth, save_ground_truth
from saelab.circuits.runner import CircuitRunConfig, result_rows, run_circuits, write_results
from saelab.circuits.summary import markdown_table, summary_rows
from saelab.testing.planted_circuit import planted_model, planted_problem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted_runs():
    model = planted_model()
    truth = compute_ground_truth(model, planted_problem(12, seed=99, batch_size=12), "planted")
    config = CircuitRunConfig(task="planted", model="planted", methods=("sae_codes_saelab", "eap", "patching"),
                              seeds=(0, 1), n_prompts=12, sae_prompts=8, faithfulness_prompts=8,
                              method_configs={"sae_codes_saelab": SAECodesConfig(steps=100)})
    messages = []
    runs = run_circuits(model, config, lambda n, seed: planted_problem(n, seed, batch_size=8), truth, messages.append)
    return model, truth, runs, messages


def test_runner_runs_every_method_and_seed_and_reports_progress(planted_runs):
    _, _, runs, messages = planted_runs
    assert [(r.method, r.seed) for r in runs] == [(m, s) for s in (0, 1) for m in ("sae_codes_saelab", "eap", "patching")]
    assert {r.config.seed for r in runs if r.method == "sae_codes_saelab"} == {0, 1}  # the seed reaches the SAE
    assert all(r.evaluation.values["node_auc"] == 1.0 for r in runs)
    assert any("node AUC 1.000" in m for m in messages)
    eap = next(r for r in runs if r.method == "eap")
    sizes = [n for n, _ in eap.faithfulness]
    assert sizes == sorted(sizes) and eap.faithfulness[-1][1] == pytest.approx(1.0, abs=1e-5)
    assert max(v for _, v in eap.faithfulness[:-1]) == pytest.approx(1.0, abs=1e-5)  # the circuit is enough


def test_summary_aggregates_seeds_into_mean_and_std(planted_runs):
    _, _, runs, _ = planted_runs
    rows = {r.method: r for r in summary_rows(runs, "planted", "planted")}
    assert rows["eap"].n_seeds == 2 and rows["eap"].node_auc == (1.0, 0.0)
    assert rows["eap"].node_auc_text == "1.000 ± 0.000"
    assert rows["patching"].edge_auc is None and rows["patching"].edge_auc_text == "—"
    assert rows["sae_codes_saelab"].edge_auc_heads_only
    table = markdown_table(list(rows.values()), [("planted", "planted", "planted")])
    assert table.splitlines()[0] == "| method | planted |" and "| eap | 1.000 ± 0.000 / 1.000 ± 0.000 / " in table


def test_store_rows_round_trip(planted_runs, tmp_path):
    from saelab.db import ResultsStore

    model, _, runs, _ = planted_runs
    store = ResultsStore(tmp_path / "s.duckdb").initialize()
    written = write_results(store, runs, "planted", "planted", "planted/toy", run_id=None)
    graph = Graph.from_config(model.cfg)
    per_run = len(graph.nodes)
    assert len(store.select("circuit_runs")) == len(runs)
    eap = next(r for r in runs if r.method == "eap")
    scores = store.select("circuit_scores", where={"circuit_run_id": eap.circuit_run_id})
    assert (scores["level"] == "node").sum() == per_run and (scores["level"] == "edge").sum() == graph.n_edges
    evals = store.select("circuit_evals", where={"circuit_run_id": eap.circuit_run_id, "metric": "node_auc"})
    assert evals["value"].tolist() == [1.0] and json.loads(evals["curve"][0])["tpr"][-1] == 1.0
    assert written == sum(len(rows) for r in runs for rows in result_rows(r, "planted", "planted", "x", None).values())


def test_ground_truth_file_round_trip(planted_runs, tmp_path):
    model, truth, _, _ = planted_runs
    path = save_ground_truth(truth, tmp_path / "planted" / "toy.json")
    again = load_ground_truth(path, Graph.from_config(model.cfg))
    assert again.nodes == truth.nodes and again.edges == truth.edges
    assert again.node_effects == pytest.approx({n: round(v, 6) for n, v in truth.node_effects.items()}, abs=1e-5)
    with pytest.raises(ValueError, match="no ground-truth file"):
        load_ground_truth(tmp_path / "missing.json", Graph.from_config(model.cfg))


def test_prompt_counts_come_from_the_registry_and_splits_are_disjoint():
    from saelab.circuits.runner import split_seeds

    config = CircuitRunConfig(task="ioi", model="m", sae_prompts=10, paper_sae_prompts=250, acdc_prompts=16,
                              n_prompts=32)
    assert [config.prompts_for(m) for m in ("sae_codes", "sae_codes_saelab", "acdc", "eap", "output_change")] == [
        250, 10, 16, 32, 32]
    assert split_seeds("dev", 5) == (0, 1, 2, 3, 4) and split_seeds("test", 5) == (100, 101, 102, 103, 104)
    assert not set(split_seeds("dev", 100)) & set(split_seeds("test", 100))
    CircuitRunConfig(task="ioi", model="m", seeds=(100, 104), split="test")
    with pytest.raises(ValueError, match="not all in the 'test' split"):
        CircuitRunConfig(task="ioi", model="m", seeds=(0, 100), split="test")


def test_table_reads_methods_against_the_baselines():
    from saelab.circuits.summary import SummaryRow, column_table, reading

    def row(method, auc, std=0.01):
        return SummaryRow("t", "m", method, 5, (auc, std), None, False, 1.0, 0.0)

    rows = [row("random", 0.5, 0.1), row("layer_order", 0.9), row("sae_codes", 0.8), row("eap", 0.99),
            row("patching", 0.9)]
    assert "baseline layer_order wins" in reading(rows[2], rows)
    assert reading(rows[3], rows).startswith("above every baseline")
    assert "against itself" in reading(rows[3], rows)
    assert reading(rows[0], rows) == "baseline"
    assert "ties baseline layer_order" in reading(rows[4], rows)
    table = column_table(rows, "t", "m")
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == [
        "| layer_order", "| random", "| sae_codes", "| eap", "| patching"]


def test_run_config_validates():
    with pytest.raises(ValueError, match="unknown circuit method"):
        CircuitRunConfig(task="ioi", model="m", methods=("eap", "magic"))
    with pytest.raises(ValueError, match="seeds"):
        CircuitRunConfig(task="ioi", model="m", seeds=())


def test_cli_lists_methods(capsys):
    from saelab.cli.main import main

    assert main(["circuits", "--task", "ioi", "--list-methods"]) == 0
    out = capsys.readouterr().out
    assert "sae_codes" in out and "acdc" in out and "eap_ig" in out
    assert all(name in out for name in ("random", "layer_order", "output_change", "sae_codes_saelab"))


def test_cli_rejects_unknown_method(capsys):
    from saelab.cli.main import main

    assert main(["circuits", "--task", "ioi", "--methods", "eap,magic"]) == 2
    assert "magic" in capsys.readouterr().err
