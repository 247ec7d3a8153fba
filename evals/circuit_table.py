"""The circuit-identification table: methods × tasks on the bundled models, against causal ground truths.

    python evals/circuit_table.py --seeds 3                 # run everything, store it, write the table
    python evals/circuit_table.py --from-store              # rebuild the table from the results store

Each cell is "node AUC ± std / edge AUC / seconds" (AUC over heads against data/circuits/MODEL/TASK.json;
† marks an edge AUC over head → head pairs for methods that score no other edges). Writes the results to
the workspace store and the table to benchmarks/results/circuit_table.md.
"""

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

import torch

from saelab.circuits.graph import Graph
from saelab.circuits.io import find_ground_truth
from saelab.circuits.runner import (
    DEFAULT_METHODS,
    CircuitRunConfig,
    run_circuits,
    task_problems,
    write_results,
)
from saelab.circuits.summary import RunRecord, markdown_table, records_from_runs, summarize, time_ratio
from saelab.db import ResultsStore
from saelab.models import bundled_models, load_model
from saelab.workspace import Workspace

log = logging.getLogger("circuit_table")
REPO = Path(__file__).resolve().parents[1]
COLUMNS = (("IOI", "ioi", "saelab-tiny"), ("greater-than", "greater_than", "saelab-tiny"),
           ("docstring", "docstring", "saelab-tiny"), ("docstring (attn-only)", "docstring", "saelab-tiny-attn"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None, help="workspace (default $SAELAB_WORKSPACE or ./saelab-workspace)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--sae-prompts", type=int, default=10)
    parser.add_argument("--acdc-prompts", type=int, default=16)
    parser.add_argument("--faithfulness", type=int, default=0)
    parser.add_argument("--columns", default=",".join(f"{t}@{m}" for _, t, m in COLUMNS),
                        help="TASK@MODEL pairs to run (default: all four columns)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: small models, and a busy machine)")
    parser.add_argument("--from-store", action="store_true", help="only rebuild the table from stored results")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "circuit_table.md")
    return parser.parse_args(argv)


def available(model: str) -> bool:
    return any(m.name == model and m.available for m in bundled_models())


def run_column(store: ResultsStore, task: str, model_name: str, args: argparse.Namespace) -> list[RunRecord]:
    model = load_model(model_name)
    truth = find_ground_truth(model_name, task, Graph.from_config(model.cfg))
    if truth is None:
        log.warning("no ground truth for %s on %s: run evals/ground_truth.py first; skipping", task, model_name)
        return []
    config = CircuitRunConfig(task=task, model=model_name, methods=tuple(args.methods.split(",")),
                              seeds=tuple(range(args.seeds)), n_prompts=args.prompts, sae_prompts=args.sae_prompts,
                              acdc_prompts=args.acdc_prompts, faithfulness_prompts=args.faithfulness)
    run_id = store.start_run("circuit_table", f"{task}/{model_name}", {"methods": list(config.methods),
                                                                       "seeds": list(config.seeds)})
    runs = run_circuits(model, config, task_problems(config, model.tokenizer), truth, progress=log.info)
    write_results(store, runs, task, model_name, f"{model_name}/{task}", run_id)
    store.finish_run(run_id, "done", f"{len(runs)} method runs")
    return records_from_runs(runs, task, model_name)


def records_from_store(store: ResultsStore) -> list[RunRecord]:
    """The latest results of each (task, model, method, seed) in the store."""
    latest: dict[tuple, dict] = {}
    for row in store.select("circuit_runs", order_by=["created_at"]).to_dict("records"):
        latest[(row["task"], row["model"], row["method"], int(row["seed"]))] = row
    values: dict[str, dict[str, float]] = {}
    for row in store.select("circuit_evals").to_dict("records"):
        values.setdefault(row["circuit_run_id"], {})[row["metric"]] = float(row["value"])
    return [RunRecord(task, model, method, seed, float(row["seconds"]), float(row["peak_memory_mb"]),
                      values.get(row["circuit_run_id"], {}))
            for (task, model, method, seed), row in latest.items()]


def write_table(records: list[RunRecord], out: Path) -> str:
    rows = summarize(records)
    columns = [c for c in COLUMNS if any(r.task == c[1] and r.model == c[2] for r in rows)]
    header = (f"<!-- generated by evals/circuit_table.py on {platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads -->\n"
              "Cells: node AUC over heads (mean ± std over seeds) / edge AUC / wall-clock seconds per run. "
              "† edge AUC over head → head pairs.\n\n")
    text = header + markdown_table(rows, [(h, t, m) for h, t, m in columns])
    ratios = [(h, time_ratio(rows, t, m)) for h, t, m in columns]
    ratios = [f"{h} ×{r:.0f}" for h, r in ratios if r is not None]
    if ratios:
        text += "\nACDC time / discrete-SAE time: " + ", ".join(ratios) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps([r._asdict() for r in rows], indent=1, default=str) + "\n")
    return text


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    workspace = Workspace.resolve(str(args.workspace) if args.workspace else None)
    store = ResultsStore(workspace.db_path).initialize()
    if not args.from_store:
        for pair in args.columns.split(","):
            task, model = pair.split("@")
            if not available(model):
                log.warning("model %s is not available yet; skipping %s", model, task)
                continue
            run_column(store, task, model, args)
    text = write_table(records_from_store(store), args.out)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
