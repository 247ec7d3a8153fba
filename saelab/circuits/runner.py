"""Run circuit methods on a task over several seeds, score them against the ground truth, build store rows.

Seeds vary the prompt sample and (for the discrete-SAE methods and the random baseline) the initialisation.
Each method gets its own number of prompts (its registry entry names which). Prompt seeds come in two
disjoint splits: defaults are chosen on "dev" seeds (0, 1, …) and numbers are reported on "test" seeds
(100, 101, …); the bundled ground truths use seeds 1000 and 1001.
"""

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from transformer_lens import HookedTransformer

from saelab.circuits.evaluate import Evaluation, evaluate_scores, faithfulness, ranked_circuits
from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import GroundTruth
from saelab.circuits.problem import CircuitProblem, problem_from_task
from saelab.circuits.registry import get_method, run_method
from saelab.circuits.types import CircuitScores

log = logging.getLogger(__name__)
DEFAULT_METHODS = ("random", "layer_order", "output_change", "weight_norm", "sae_codes", "sae_codes_saelab",
                   "eap", "eap_ig", "patching", "acdc")
SPLITS = {"dev": 0, "test": 100}
"""Split name → its first prompt seed; a split holds the 100 seeds from there."""


def split_seeds(split: str, n: int) -> tuple[int, ...]:
    """The first `n` seeds of `split` ("dev": 0.., "test": 100..)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {tuple(SPLITS)}")
    if not 1 <= n <= 100:
        raise ValueError(f"a split holds 1 to 100 seeds, got {n}")
    return tuple(range(SPLITS[split], SPLITS[split] + n))


@dataclass(frozen=True)
class CircuitRunConfig:
    """What `run_circuits` runs: methods × seeds on one task and model."""

    task: str
    """Task registry name ("ioi", "greater_than", "docstring")."""
    model: str
    """Model name as the user gave it (recorded in the results)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Circuit method registry names."""
    seeds: tuple[int, ...] = (0,)
    """Prompt-sampling (and SAE-initialisation) seeds; results are reported as mean ± std over them."""
    n_prompts: int = 32
    """Clean/corrupted pairs for patching, EAP and EAP-IG."""
    sae_prompts: int = 10
    """Positive (and as many negative) prompts for saelab's discrete-SAE variants."""
    paper_sae_prompts: int = 250
    """Positive (and as many negative) prompts for the paper protocol of the discrete-SAE method."""
    acdc_prompts: int = 16
    """Pairs for ACDC (each of its many forward passes runs all of them)."""
    faithfulness_prompts: int = 0
    """Pairs for the faithfulness curve of each result (0: skip the curve)."""
    batch_size: int = 32
    vocabulary: str = "tiny"
    """Task word lists: "tiny" for the bundled models, "canonical" for GPT-2-tokenised models."""
    method_configs: dict[str, Any] = field(default_factory=dict, hash=False)
    """Per-method config objects overriding the registry defaults (seeds are still applied)."""
    split: str | None = None
    """"dev" or "test" if the seeds are claimed to lie in that split (checked); None: no claim."""

    def __post_init__(self) -> None:
        for name in self.methods:
            get_method(name)
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.split is not None and set(self.seeds) - set(split_seeds(self.split, 100)):
            raise ValueError(f"seeds {self.seeds} are not all in the {self.split!r} split "
                             f"({SPLITS.get(self.split, '?')}..+99)")
        for name in ("n_prompts", "sae_prompts", "paper_sae_prompts", "acdc_prompts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.faithfulness_prompts < 0:
            raise ValueError(f"faithfulness_prompts must be ≥ 0, got {self.faithfulness_prompts}")

    def prompts_for(self, method: str) -> int:
        return getattr(self, get_method(method).prompt_count)


class MethodRun(NamedTuple):
    """One method on one seed: its scores, its config, and how it fares against the ground truth."""

    circuit_run_id: str
    method: str
    seed: int
    config: Any
    scores: CircuitScores
    evaluation: Evaluation | None
    faithfulness: list[tuple[int, float]] | None


def method_config(config: CircuitRunConfig, method: str, seed: int) -> Any:
    """The method's config (override or default) with its `seed` field, if any, set to `seed`."""
    spec = get_method(method)
    base = config.method_configs.get(method) or spec.default_config()
    names = {f.name for f in dataclasses.fields(base)}
    return dataclasses.replace(base, seed=seed) if "seed" in names else base


ProblemFactory = Callable[[int, int], CircuitProblem]
"""(n_prompts, seed) → a problem with that many clean/corrupted pairs sampled with that seed."""


def task_problem(task, tokenizer, n: int, seed: int, vocabulary: str, batch_size: int) -> CircuitProblem:
    return problem_from_task(task, task.generate(tokenizer, n, seed, vocabulary=vocabulary), batch_size)


def task_problems(config: CircuitRunConfig, tokenizer) -> ProblemFactory:
    """Problems of `config.task` (its default corruption) tokenised by `tokenizer`."""
    from saelab.tasks import get_task

    task = get_task(config.task)
    return lambda n, seed: task_problem(task, tokenizer, n, seed, config.vocabulary, config.batch_size)


def run_circuits(model: HookedTransformer, config: CircuitRunConfig, problems: ProblemFactory,
                 truth: GroundTruth | None = None, progress: Callable[[str], None] | None = None
                 ) -> list[MethodRun]:
    """Every method × seed of `config` on problems from `problems`, each scored against `truth` if given.

    Faithfulness curves (if asked for) use one fixed problem drawn with seed 10,000."""
    graph = Graph.from_config(model.cfg)
    report = progress or log.info
    faith_problem = problems(config.faithfulness_prompts, 10_000) if config.faithfulness_prompts else None
    runs = []
    for seed in config.seeds:
        for method in config.methods:
            report(f"{config.task}: {method} (seed {seed}, {config.prompts_for(method)} prompts)")
            method_cfg = method_config(config, method, seed)
            scores = run_method(method, model, problems(config.prompts_for(method), seed), method_cfg)
            evaluation = evaluate_scores(scores, truth, graph) if truth is not None else None
            curve = None
            if faith_problem is not None:
                by_edges = get_method(method).edge_scope == "all"
                curve = faithfulness(model, faith_problem, ranked_circuits(graph, scores, by_edges))
            runs.append(MethodRun(uuid.uuid4().hex, method, seed, method_cfg, scores, evaluation, curve))
            report(_summary(runs[-1]))
    return runs


def _summary(run: MethodRun) -> str:
    text = f"  {run.method}: {run.scores.seconds:.2f} s, peak {run.scores.peak_memory_mb:.0f} MB"
    if run.evaluation is not None:
        values = run.evaluation.values
        text += f", node AUC {values.get('node_auc', float('nan')):.3f}"
        if "edge_auc" in values:
            text += f", edge AUC {values['edge_auc']:.3f}"
    return text


def config_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), default=str, sort_keys=True)


def result_rows(run: MethodRun, task: str, model: str, truth_name: str | None, run_id: str | None
                ) -> dict[str, list[dict[str, Any]]]:
    """Rows for circuit_runs, circuit_scores and circuit_evals (table name → rows)."""
    runs = [{"circuit_run_id": run.circuit_run_id, "run_id": run_id, "task": task, "model": model,
             "method": run.method, "config": config_json(run.config), "seed": run.seed,
             "seconds": run.scores.seconds, "peak_memory_mb": run.scores.peak_memory_mb}]
    scores = [
        {"circuit_run_id": run.circuit_run_id, "level": "node", "node": n.name, "target": None, "score": v}
        for n, v in run.scores.node_scores.items()
    ]
    if run.scores.edge_scores is not None:
        scores += [{"circuit_run_id": run.circuit_run_id, "level": "edge", "node": e.sender.name,
                    "target": e.receiver.name, "score": v} for e, v in run.scores.edge_scores.items()]
    evals = []
    if run.evaluation is not None:
        evals = [
            {
                "circuit_run_id": run.circuit_run_id,
                "ground_truth": truth_name,
                "metric": name,
                "value": value,
                "curve": json.dumps(run.evaluation.curves.get(name))
                if name in run.evaluation.curves
                else None,
            }
            for name, value in run.evaluation.values.items()
        ]
    if run.faithfulness is not None:
        evals.append({"circuit_run_id": run.circuit_run_id, "ground_truth": truth_name or "none",
                      "metric": "faithfulness", "value": mean_faithfulness(run.faithfulness),
                      "curve": json.dumps(run.faithfulness)})
    return {"circuit_runs": runs, "circuit_scores": scores, "circuit_evals": evals}


def mean_faithfulness(curve: Sequence[tuple[int, float]]) -> float:
    """The curve's mean normalised metric over the sampled circuit sizes (each weighted alike)."""
    return sum(v for _, v in curve) / len(curve) if curve else float("nan")


def write_results(store, runs: Sequence[MethodRun], task: str, model: str, truth_name: str | None,
                  run_id: str | None = None) -> int:
    """Insert every run's rows with `store.insert` (a `saelab.db.ResultsStore`); returns rows written."""
    written = 0
    for run in runs:
        for table, rows in result_rows(run, task, model, truth_name, run_id).items():
            if rows:
                written += store.insert(table, rows)
    return written
