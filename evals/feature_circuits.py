"""Sparse feature circuits (Marks et al. 2024) of the bundled tasks, with thresholds chosen on a dev seed.

    python evals/feature_circuits.py --model saelab-tiny --task ioi --saes DIR [DIR ...] [--bench]

For each task: node effects on the dev prompts (seed 0), a sweep of T_N with mean-ablation faithfulness and
completeness; T_N = the largest grid value whose dev faithfulness is ≥ 0.9 (fewest nodes that still carry
the task), T_E = T_N / 10 (the authors' default ratio, 0.1 / 0.01); then the circuit on the test prompts
(seed 100) with those thresholds, reported (`--node-threshold T`: a fixed T_N, no dev sweep), beside
same-size baselines (random latents, top mean activation, error terms only) scored by the same ablation code,
and the circuit's latents and effects per dictionary. With an aligned ground truth (data/circuits/MODEL/TASK.json
"alignment", e.g. saelab-ioi-siit) it also counts how many circuit latents sit in the aligned heads and how
much of their |effect| comes from the aligned positions. `--bench` times one attribution-patching circuit
(wall-clock and the process's CPU time: on a shared machine the wall clock mostly measures the others).
Writes JSON to --out.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from saelab.circuits.problem import problem_from_task
from saelab.circuits.runner import task_problem
from saelab.feature_circuits import sparse
from saelab.feature_circuits.baselines import circuit_with_baselines
from saelab.feature_circuits.components import head_split, top_components
from saelab.models import load_model
from saelab.sae.io import load_sae
from saelab.tasks import get_task

log = logging.getLogger("feature_circuits")
REPO = Path(__file__).resolve().parents[1]
GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
TARGET_FAITHFULNESS = 0.9


def sweep(model, placed, problem, measured: sparse.Measured) -> list[dict]:
    rows = []
    for t in GRID:
        keep = sparse.circuit_nodes(measured.effects, t)
        metrics = sparse.ablation_metrics(model, placed, problem, keep)
        n = sum(int(k.acts.sum()) + k.error for k in keep)
        rows.append({"node_threshold": t, "n_nodes": n, **metrics})
    return rows


def choose(rows: list[dict]) -> float:
    ok = [r["node_threshold"] for r in rows if r["faithfulness"] >= TARGET_FAITHFULNESS]
    return max(ok) if ok else min(GRID)


def aligned_counts(model, placed, measured: sparse.Measured, keep, truth: dict, task, data) -> dict:
    """Circuit latents per component (the largest share of the attn_z SAE's decoder norm; `head_split`) and
    how many sit in the heads the circuit file aligns (`truth["alignment"]`), beside an even spread and a
    random choice of as many latents per dictionary; of the aligned latents' |effect|, the fraction at the
    aligned position (per-prompt positions from the task data) beside an even spread over positions."""
    aligned: dict[str, tuple[str, ...]] = {}  # a head may carry two variables at two positions
    for a in truth["alignment"]:
        aligned[a["node"]] = (*aligned.get(a["node"], ()), a["position"])
    effects = [measured.effects.aggregated(i)[0] for i in range(len(placed))]
    split = head_split(model, placed, keep, effects, aligned, measured.effects.activation)
    wanted = []
    for i, (p, k) in enumerate(zip(placed, keep, strict=True)):
        tops = top_components(model, p)
        wanted += [(i, j, aligned[tops[j]]) for j in k.acts.nonzero().flatten().tolist() if tops[j] in aligned]
    at, even = position_fraction(model, placed, task, data, wanted) if wanted else (float("nan"),) * 2
    total_effect = sum(split.effect.values())
    return {"circuit_latents": split.total, "latents_in_aligned_heads": split.aligned,
            "expected_if_spread_evenly_over_heads": split.even,
            "expected_if_chosen_at_random": split.random, "std_if_chosen_at_random": split.random_std,
            "expected_if_chosen_at_random_among_active": split.random_active,
            "aligned_heads": sorted(aligned), "latents_per_component": split.counts,
            "abs_effect_per_component": split.effect,
            "abs_effect_fraction_in_aligned_heads": sum(split.effect.get(a, 0.0) for a in aligned) / total_effect,
            "effect_fraction_at_aligned_position": at, "expected_fraction_if_spread_over_positions": even}


def position_fraction(model, placed, task, data, wanted) -> tuple[float, float]:
    """Σ|per-position attribution effect at the aligned positions| / Σ|effect at all positions| over the
    given (dictionary, latent, position names) triples, on the test prompts; and the same fraction if each
    prompt's |effect| were spread evenly over its positions."""
    problem = problem_from_task(task, data, len(data))
    batch = problem.batches[0]
    clean, _ = sparse.recorded_states(model, placed, batch.clean, batch.end)
    corrupt, _ = sparse.recorded_states(model, placed, batch.corrupted, batch.end)
    grads = sparse.attribution_gradients(model, placed, batch, clean, corrupt,
                                         sparse.FeatureCircuitConfig(node_method="attrib"))
    at, even, total = 0.0, 0.0, 0.0
    rows = torch.arange(len(batch.end))
    for i, j, positions in wanted:
        effect = sparse.position_effects(grads[i], clean[i], corrupt[i]).acts[..., j].abs()
        at += sum(float(effect[rows, data.positions[position]].sum()) for position in positions)
        even += len(positions) * float((effect.sum(1) / (batch.end + 1)).sum())
        total += float(effect.sum())
    return (at / total, even / total) if total else (float("nan"), float("nan"))


def per_dictionary(placed, measured: sparse.Measured, keep) -> list[dict]:
    """Per dictionary: circuit latents, whether its error term is in, its largest |latent effect| and its error
    term's effect (why a circuit can sit in one dictionary and have no edge)."""
    out = []
    for i, (p, k) in enumerate(zip(placed, keep, strict=True)):
        latent, error = measured.effects.aggregated(i)
        out.append({"dictionary": p.name, "circuit_latents": int(k.acts.sum()), "error_in_circuit": k.error,
                    "largest_abs_latent_effect": float(latent.abs().max()), "error_effect": float(error)})
    return out


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saelab-tiny")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--saes", nargs="+", required=True, help="SAE directories")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--method", default="ig", choices=sparse.NODE_METHODS)
    parser.add_argument("--node-threshold", type=float, default=None,
                        help="a fixed T_N (T_E = T_N / 10) instead of the one chosen on the dev prompts")
    parser.add_argument("--draws", type=int, default=5, help="random baseline draws")
    parser.add_argument("--bench", action="store_true", help="only time one attribution-patching circuit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    dicts = {Path(d).name: load_sae(d) for d in args.saes}
    task = get_task(args.task)

    def problem(seed):
        return task_problem(task, model.tokenizer, args.prompts, seed, "tiny", 32)

    if args.bench:
        config = sparse.FeatureCircuitConfig(node_method="attrib", node_threshold=0.1, edge_threshold=0.01)
        test = problem(100)
        start, cpu = time.perf_counter(), time.process_time()
        graph = sparse.feature_circuit(model, test, dicts, config)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        result = {"seconds": seconds, "cpu_seconds": cpu, "threads": args.threads, "metrics": graph.metrics,
                  "params": graph.params}
        args.out.write_text(json.dumps(result, indent=1))
        log.info("%.1f s wall, %.1f s CPU: %s", seconds, cpu, graph.metrics)
        return 0
    placed = sparse.place(model, dicts)
    rows: list[dict] = []
    if args.node_threshold is None:
        dev = problem(0)
        fc = sparse.FeatureCircuitConfig(node_method=args.method, edges=False)
        rows = sweep(model, placed, dev, sparse.measure(model, placed, dev, fc))
    t_n = choose(rows) if args.node_threshold is None else args.node_threshold
    config = sparse.FeatureCircuitConfig(node_method=args.method, node_threshold=t_n, edge_threshold=t_n / 10)
    start = time.perf_counter()
    graph, measured, keep, baselines = circuit_with_baselines(model, placed, problem(100), config, args.draws)
    seconds = time.perf_counter() - start
    result = {"model": args.model, "task": args.task, "dictionaries": list(graph.dictionaries),
              "dev_sweep": rows, "node_threshold": t_n, "edge_threshold": t_n / 10, "test": graph.metrics,
              "per_dictionary": per_dictionary(placed, measured, keep),
              "baselines": {name: score._asdict() for name, score in baselines.items()},
              "seconds_test_with_baselines": seconds, "method": args.method,
              "nodes": [[n.id, n.effect] for n in sorted(graph.nodes, key=lambda n: -abs(n.effect))[:30]]}
    truth_path = REPO / "data" / "circuits" / args.model / f"{args.task}.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    if truth.get("alignment"):
        data = task.generate(model.tokenizer, args.prompts, 100, vocabulary="tiny")
        result["aligned"] = aligned_counts(model, placed, measured, keep, truth, task, data)
    args.out.write_text(json.dumps(result, indent=1))
    log.info(json.dumps({k: v for k, v in result.items() if k not in ("nodes", "dev_sweep")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
