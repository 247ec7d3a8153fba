"""Circuit identification in a workspace: methods × seeds on a task, scored against the model's ground truth
(where one ships), everything written to the store."""

from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.workspace import Workspace

DEMO_METHODS = ("sae_codes", "eap", "patching")
DEMO_TASKS = ("ioi", "greater_than", "docstring")


class CircuitsResult(NamedTuple):
    run_id: str
    runs: list
    """MethodRun per method and seed."""
    summary: list
    """SummaryRow per method (mean ± std over seeds)."""
    ground_truth: str | None


def run_circuits_in_workspace(workspace: Workspace, config, model=None, progress=None) -> CircuitsResult:
    """Run `config` (a CircuitRunConfig) and record the run and its results in the workspace's store."""
    from saelab.circuits.graph import Graph
    from saelab.circuits.io import find_ground_truth
    from saelab.circuits.runner import run_circuits, task_problems, write_results
    from saelab.circuits.summary import summary_rows
    from saelab.models import load_model
    from saelab.tasks import get_task

    get_task(config.task)
    model = model if model is not None else load_model(config.model)
    truth = find_ground_truth(config.model, config.task, Graph.from_config(model.cfg))
    truth_name = f"{config.model}/{config.task}" if truth is not None else None
    problems = task_problems(config, model.tokenizer)
    problems(2, 0)  # fails now, before the store is touched, if the tokenizer cannot express the task
    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run("circuits", f"{config.task}/{config.model}",
                             {"methods": list(config.methods), "seeds": list(config.seeds)})
    try:
        runs = run_circuits(model, config, problems, truth, progress=progress)
        with store.transaction() as tx:  # a circuit run's row, scores and evaluations: all stored or none
            write_results(tx, runs, config.task, config.model, truth_name, run_id)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done", f"{len(runs)} method runs")
    return CircuitsResult(run_id, runs, summary_rows(runs, config.task, config.model), truth_name)


def demo_circuits(workspace: Workspace, cfg, model, circuits: list) -> str:
    """The demo's step: a few methods on each task, skipped (with the reason) where the model cannot do it."""
    from saelab.circuits.runner import CircuitRunConfig
    from saelab.demo import CircuitSummary

    store = ResultsStore(workspace.db_path)
    notes = []
    for task in DEMO_TASKS:
        done = store.select("circuit_runs", where={"task": task, "model": cfg.model})
        if not done.empty:
            notes.append(f"{task} reused")
            _summaries_from_store(store, task, cfg.model, circuits)
            continue
        config = CircuitRunConfig(task=task, model=cfg.model, methods=DEMO_METHODS, seeds=(cfg.seed,),
                                  n_prompts=8 if cfg.quick else 32, sae_prompts=10,
                                  acdc_prompts=8 if cfg.quick else 16)
        try:
            result = run_circuits_in_workspace(workspace, config, model=model)
        except ValueError as exc:  # e.g. a byte-level tokenizer splits the task's names
            notes.append(f"{task} skipped ({str(exc)[:80]})")
            continue
        for row in result.summary:
            auc = row.node_auc[0] if row.node_auc is not None else float("nan")
            circuits.append(CircuitSummary(task, row.method, auc, row.seconds))
        notes.append(f"{task} ({'scored' if result.ground_truth else 'no ground truth'})")
    return "; ".join(notes)


def _summaries_from_store(store: ResultsStore, task: str, model: str, circuits: list) -> None:
    from saelab.demo import CircuitSummary

    runs = store.select("circuit_runs", where={"task": task, "model": model})
    for _, run in runs.iterrows():
        evals = store.select("circuit_evals", where={"circuit_run_id": run["circuit_run_id"]})
        values = dict(zip(evals["metric"], evals["value"], strict=True))
        circuits.append(CircuitSummary(task, run["method"], values.get("node_auc", float("nan")), run["seconds"]))
