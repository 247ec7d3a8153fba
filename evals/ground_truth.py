"""Compute the causal ground-truth circuit of a task on a bundled model and write it to data/circuits/.

    python evals/ground_truth.py --model saelab-tiny --task ioi
    python evals/ground_truth.py --model saelab-tiny-attn --task docstring

Node effects: resample ablation of each head / MLP (the `patching` circuit method). Edge effects: path
patching of every single edge (its receiver alone reads the sender's corrupted output); edges into the
logits are the heads' direct paths. Both are thresholded by a fraction of the clean-minus-corrupted metric
gap (see GroundTruthRule). The same is computed on a second prompt seed; its effects and the agreement of the
two circuits are recorded under "check_seed" and "agreement".
Writes data/circuits/{model}/{task}.json and {task}_heads.png (per-head effects heat map).
"""

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

from saelab.circuits.ground_truth import (
    GroundTruth,
    GroundTruthRule,
    agreement,
    compute_ground_truth,
    to_json,
)
from saelab.circuits.io import ground_truth_path, save_ground_truth
from saelab.circuits.runner import task_problem
from saelab.models import load_model
from saelab.tasks import get_task

log = logging.getLogger("ground_truth")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saelab-tiny")
    parser.add_argument("--task", required=True, choices=("ioi", "greater_than", "docstring"))
    parser.add_argument("--prompts", type=int, default=64, help="prompt pairs (default 64)")
    parser.add_argument("--seed", type=int, default=1000, help="prompt seed of the stored circuit (default 1000)")
    parser.add_argument("--check-seed", type=int, default=1001, help="second prompt seed for the agreement check")
    parser.add_argument("--node-fraction", type=float, default=GroundTruthRule.node_fraction)
    parser.add_argument("--edge-fraction", type=float, default=GroundTruthRule.edge_fraction)
    parser.add_argument("--vocabulary", default="tiny", choices=("tiny", "canonical"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="output JSON (default data/circuits/MODEL/TASK.json)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: small models, and a busy machine)")
    parser.add_argument("--no-plot", action="store_true", help="skip the heat-map PNG")
    return parser.parse_args(argv)


def compute(model, args: argparse.Namespace, seed: int) -> GroundTruth:
    task = get_task(args.task)
    problem = task_problem(task, model.tokenizer, args.prompts, seed, args.vocabulary, args.batch_size)
    rule = GroundTruthRule(args.node_fraction, args.edge_fraction)
    meta = {"prompts": {"seed": seed, "n": args.prompts, "vocabulary": args.vocabulary,
                        "corruption": task.default_corruption}}
    return compute_ground_truth(model, problem, args.model, rule, meta)


def plot_heads(truth: GroundTruth, n_layers: int, n_heads: int, path: Path) -> Path | None:
    """Heat map of per-head resample-ablation effects relative to the metric gap; circuit heads boxed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; skipping %s", path)
        return None
    grid = torch.zeros(n_layers, n_heads)
    for node, value in truth.node_effects.items():
        if node.kind == "head":
            grid[node.layer, node.head] = value / truth.gap
    limit = float(grid.abs().max()) or 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n_heads, 1.0 + 0.55 * n_layers))
    image = ax.imshow(grid.numpy(), cmap="RdBu", vmin=-limit, vmax=limit)
    for node in truth.nodes:
        if node.kind == "head":
            ax.add_patch(plt.Rectangle((node.head - 0.5, node.layer - 0.5), 1, 1, fill=False, lw=2, ec="black"))
    ax.set(xlabel="head", ylabel="layer", xticks=range(n_heads), yticks=range(n_layers),
           title=f"{truth.task} on {truth.model}: head effect / gap")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.model)
    start = time.perf_counter()
    truth = compute(model, args, args.seed)
    check = compute(model, args, args.check_seed)
    agree = agreement(truth, check)
    command = "python evals/ground_truth.py " + " ".join(shlex.quote(a) for a in argv)
    check_json = to_json(check)
    second = {"seed": args.check_seed, **{k: check_json[k] for k in ("metric", "nodes", "edges", "node_effects",
                                                                       "edge_effects")}}
    truth = truth._replace(meta={**truth.meta, "agreement": {"seeds": [args.seed, args.check_seed], **agree},
                                 "check_seed": second, "command": command,
                                 "seconds": round(time.perf_counter() - start, 1)})
    out = args.out or ground_truth_path(args.model, args.task)
    save_ground_truth(truth, out)
    log.info("%s: %d nodes %s, %d edges; gap %.3f; seed agreement: node Jaccard %.2f, edge Jaccard %.2f -> %s",
             args.task, len(truth.nodes), sorted(n.name for n in truth.nodes), len(truth.edges), truth.gap,
             agree["node_jaccard"], agree["edge_jaccard"], out)
    if not args.no_plot:
        plot_heads(truth, model.cfg.n_layers, model.cfg.n_heads, out.with_name(f"{args.task}_heads.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
