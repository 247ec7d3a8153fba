"""Sparse feature circuits (Marks et al. 2024) of the bundled tasks, with thresholds chosen on a dev seed.

    python evals/feature_circuits.py --model saelab-tiny --task ioi --saes DIR [DIR ...] [--bench]

For each task: node effects on the dev prompts (seed 0), a sweep of T_N with mean-ablation faithfulness and
completeness; T_N = the largest grid value whose dev faithfulness is ≥ 0.9 (fewest nodes that still carry
the task), T_E = T_N / 10 (the authors' default ratio, 0.1 / 0.01); then the circuit on the test prompts
(seed 100) with those thresholds, reported. With an aligned ground truth (data/circuits/MODEL/TASK.json
"alignment", e.g. saelab-ioi-siit) it also counts how many circuit latents sit in the aligned heads and how
much of their |effect| comes from the aligned positions. `--bench` times one attribution-patching circuit.
Writes JSON to --out.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from saelab.circuits.runner import task_problem
from saelab.feature_circuits import sparse
from saelab.feature_circuits.components import component_shares
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


def aligned_counts(model, placed, graph, truth: dict, data) -> dict:
    """Circuit latents whose largest head share is an aligned head, and of those latents' |effect| the
    fraction at the aligned position (per-prompt positions from the task data)."""
    aligned = {a["node"]: a["position"] for a in truth.get("alignment", [])}
    by_site = {str(p.write): (i, p) for i, p in enumerate(placed)}
    latents = [n for n in graph.nodes if n.kind == "latent"]
    in_heads, at_position = 0, []
    for node in latents:
        i, p = by_site[node.site]
        nodes, shares = component_shares(model, p)
        if not nodes:
            continue
        top = nodes[int(shares[node.index].argmax())]
        if top.name in aligned:
            in_heads += 1
            at_position.append((i, node.index, aligned[top.name]))
    fraction = position_fraction(model, placed, data, at_position) if at_position else float("nan")
    return {"circuit_latents": len(latents), "latents_in_aligned_heads": in_heads,
            "aligned_heads": sorted(aligned), "effect_fraction_at_aligned_position": fraction}


def position_fraction(model, placed, data, wanted) -> float:
    """Σ|per-position attribution effect at the aligned position| / Σ|effect at all positions| over the
    given (dictionary, latent, position name) triples, on the test prompts."""
    problem = task_problem(get_task("ioi"), model.tokenizer, len(data), 100, "tiny", len(data))
    batch = problem.batches[0]
    clean, _ = sparse.recorded_states(model, placed, batch.clean, batch.end)
    corrupt, _ = sparse.recorded_states(model, placed, batch.corrupted, batch.end)
    grads = sparse.attribution_gradients(model, placed, batch, clean, corrupt,
                                         sparse.FeatureCircuitConfig(node_method="attrib"))
    at, total = 0.0, 0.0
    rows = torch.arange(len(batch.end))
    for i, j, position in wanted:
        effect = sparse.position_effects(grads[i], clean[i], corrupt[i]).acts[..., j].abs()
        at += float(effect[rows, data.positions[position.lower() if position == "end" else position]].sum())
        total += float(effect.sum())
    return at / total if total else float("nan")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saelab-tiny")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--saes", nargs="+", required=True, help="SAE directories")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--method", default="ig", choices=sparse.NODE_METHODS)
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
        start = time.perf_counter()
        graph = sparse.feature_circuit(model, test, dicts, config)
        seconds = time.perf_counter() - start
        result = {"seconds": seconds, "threads": args.threads, "metrics": graph.metrics, "params": graph.params}
        args.out.write_text(json.dumps(result, indent=1))
        log.info("%.1f s: %s", seconds, graph.metrics)
        return 0
    placed = sparse.place(model, dicts)
    dev = problem(0)
    measured = sparse.measure(model, placed, dev, sparse.FeatureCircuitConfig(node_method=args.method, edges=False))
    rows = sweep(model, placed, dev, measured)
    t_n = choose(rows)
    config = sparse.FeatureCircuitConfig(node_method=args.method, node_threshold=t_n, edge_threshold=t_n / 10)
    start = time.perf_counter()
    graph = sparse.feature_circuit(model, problem(100), dicts, config)
    seconds = time.perf_counter() - start
    result = {"model": args.model, "task": args.task, "dictionaries": list(graph.dictionaries),
              "dev_sweep": rows, "node_threshold": t_n, "edge_threshold": t_n / 10, "test": graph.metrics,
              "seconds_test": seconds, "method": args.method,
              "nodes": [[n.id, n.effect] for n in sorted(graph.nodes, key=lambda n: -abs(n.effect))[:30]]}
    truth_path = REPO / "data" / "circuits" / args.model / f"{args.task}.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    if truth.get("alignment"):
        data = task.generate(model.tokenizer, args.prompts, 100, vocabulary="tiny")
        result["aligned"] = aligned_counts(model, placed, graph, truth, data)
    args.out.write_text(json.dumps(result, indent=1))
    log.info(json.dumps({k: v for k, v in result.items() if k not in ("nodes", "dev_sweep")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
