"""Circuit identification in a workspace: methods × seeds on a task, scored against the model's ground truth
(where one ships), everything written to the store."""

from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.workspace import Workspace

DEMO_METHODS = ("random", "layer_order", "output_change", "weight_norm", "sae_codes", "eap", "patching")
"""The baselines first: every circuit table the demo prints shows them beside the methods."""
DEMO_TASKS = ("ioi", "greater_than", "docstring")
BY_CONSTRUCTION = (("ioi", "saelab-ioi-siit"), ("ioi", "saelab-ioi-siit-copies"))
"""(task, bundled model) pairs whose circuits are known by construction; the demo's circuit step runs them too."""


class CircuitSummary(NamedTuple):
    """One method's node AUC on a task, as the demo reports it."""

    task: str
    method: str
    node_auc: float
    seconds: float
    model: str = ""
    """The model the circuit was identified on (the demo's, or one whose circuit is known by construction)."""
    ground_truth: str = ""
    """What the node AUC is scored against: "patching", "by construction", or "" (no ground truth)."""


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


def demo_circuits(workspace: Workspace, demo_model: str, model, seed: int, quick: bool,
                  circuits: list[CircuitSummary]) -> str:
    """The demo's step: the baselines and a few methods on each task of the demo's model `demo_model`
    (`model`, loaded; a task is skipped, with the reason, where the model cannot do it), then on the bundled
    models whose circuits are known by construction (each loaded once, here). Appends to `circuits`; returns a
    note."""
    from saelab.models import get_bundled, load_model

    notes = [_demo_task(workspace, task, demo_model, model, seed, quick, circuits, demo_model)
             for task in DEMO_TASKS]
    for task, name in BY_CONSTRUCTION:
        bundled = get_bundled(name)
        if name != demo_model and bundled is not None and bundled.available:
            notes.append(_demo_task(workspace, task, name, load_model(name), seed, quick, circuits,
                                    demo_model))
    return "; ".join(notes)


def _demo_task(workspace: Workspace, task: str, model_name: str, model, seed: int, quick: bool,
               circuits: list[CircuitSummary], demo_model: str) -> str:
    from saelab.circuits.io import ground_truth_kind
    from saelab.circuits.runner import CircuitRunConfig

    store = ResultsStore(workspace.db_path)
    where = task if model_name == demo_model else f"{task} on {model_name}"
    kind = ground_truth_kind(model_name, task)
    if not store.select("circuit_runs", where={"task": task, "model": model_name}).empty:
        _summaries_from_store(store, task, model_name, kind, circuits)
        return f"{where} reused"
    config = CircuitRunConfig(task=task, model=model_name, methods=DEMO_METHODS, seeds=(seed,),
                              n_prompts=8 if quick else 32, sae_prompts=10, acdc_prompts=8 if quick else 16)
    try:
        result = run_circuits_in_workspace(workspace, config, model=model)
    except ValueError as exc:  # e.g. a byte-level tokenizer splits the task's names
        return f"{where} skipped ({str(exc)[:80]})"
    for row in result.summary:
        auc = row.node_auc[0] if row.node_auc is not None else float("nan")
        circuits.append(CircuitSummary(task, row.method, auc, row.seconds, model_name, kind))
    return f"{where} ({'scored against ' + kind if result.ground_truth else 'no ground truth'})"


def _summaries_from_store(store: ResultsStore, task: str, model: str, kind: str,
                          circuits: list[CircuitSummary]) -> None:
    runs = store.select("circuit_runs", where={"task": task, "model": model})
    for _, run in runs.iterrows():
        evals = store.select("circuit_evals", where={"circuit_run_id": run["circuit_run_id"]})
        values = dict(zip(evals["metric"], evals["value"], strict=True))
        circuits.append(CircuitSummary(task, run["method"], values.get("node_auc", float("nan")), run["seconds"],
                                       model, kind))
