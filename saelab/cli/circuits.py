"""`saelab circuits`: run circuit-identification methods on a task, score them, store the results."""

import argparse

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="ioi, greater_than, docstring; reverse or frac_prevs (tracr models); "
                        "required unless --list-methods")
    parser.add_argument("--model", default=None, help="model name or directory (default saelab-tiny; with "
                        "--features, the model the dictionaries were trained on)")
    parser.add_argument("--methods", default=None, help="comma-separated circuit methods (see --list-methods; "
                        "default: the circuit table's, saelab.circuits.runner.DEFAULT_METHODS)")
    parser.add_argument("--seeds", type=int, default=1, help="number of prompt seeds of the split (default 1)")
    parser.add_argument("--split", default="test", choices=("dev", "test"),
                        help="prompt seeds: test 100.. (default; report these) or dev 0.. (choose settings on these)")
    parser.add_argument("--prompts", type=int, default=32, help="prompt pairs for patching/EAP/EAP-IG (default 32)")
    parser.add_argument("--sae-prompts", type=int, default=10,
                        help="positive and negative prompts for saelab's discrete-SAE variants (default 10)")
    parser.add_argument("--paper-sae-prompts", type=int, default=250,
                        help="positive and negative prompts for sae_codes, the paper's protocol (default 250)")
    parser.add_argument("--acdc-prompts", type=int, default=16, help="prompt pairs for ACDC (default 16)")
    parser.add_argument("--faithfulness", type=int, default=0, metavar="N",
                        help="also measure faithfulness curves on N prompt pairs (default 0: skip)")
    parser.add_argument("--vocabulary", default="tiny", choices=("tiny", "canonical"),
                        help="task word lists: tiny (bundled models) or canonical (GPT-2 tokenizer)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default 0: torch's default; 1 is often faster for small models)")
    parser.add_argument("--list-methods", action="store_true", help="list the methods and exit")
    features = parser.add_argument_group("feature circuits (Marks et al. 2024) over SAE/transcoder latents")
    features.add_argument("--features", action="store_true",
                          help="build a sparse feature circuit over --dicts instead of head-level methods")
    features.add_argument("--dicts", default="", metavar="IDS",
                          help="comma-separated sae ids (as stored) or SAE directories: SAEs and transcoders")
    features.add_argument("--node-method", default="ig", choices=("ig", "attrib"),
                          help="node effects by integrated gradients (default, the paper) or attribution patching")
    features.add_argument("--node-threshold", type=float, default=0.1, help="T_N (default 0.1)")
    features.add_argument("--edge-threshold", type=float, default=0.01, help="T_E (default 0.01)")
    features.add_argument("--no-edges", action="store_true", help="nodes only")


def _methods(text: str | None) -> tuple[str, ...]:
    from saelab.circuits import list_methods
    from saelab.circuits.runner import DEFAULT_METHODS

    if text is None:
        return DEFAULT_METHODS
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in list_methods()]
    if not names or unknown:
        raise UsageError(f"saelab circuits: unknown method(s) {unknown or text!r}; choose from {', '.join(list_methods())}")
    return names


@command("circuits", "run circuit-identification methods on a task and score them", _arguments)
def run_circuits_command(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console

    from saelab.circuits import METHODS

    console = Console()
    if args.list_methods:
        for name in sorted(METHODS):
            console.print(f"{name:16} {METHODS[name].description}")
        return 0
    if not args.task:
        raise UsageError("saelab circuits: give --task (ioi, greater_than or docstring), or --list-methods")
    if args.threads < 0:
        raise UsageError(f"saelab circuits: --threads must be ≥ 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not 1 <= args.seeds <= 100:
        raise UsageError(f"saelab circuits: --seeds must be in 1..100, got {args.seeds}")
    if args.features or args.dicts:
        return _feature_circuit(args, workspace, console)
    from saelab.circuits.runner import CircuitRunConfig, split_seeds

    config = CircuitRunConfig(task=args.task, model=args.model or "saelab-tiny", methods=_methods(args.methods),
                              seeds=split_seeds(args.split, args.seeds), n_prompts=args.prompts,
                              sae_prompts=args.sae_prompts, paper_sae_prompts=args.paper_sae_prompts,
                              acdc_prompts=args.acdc_prompts, faithfulness_prompts=args.faithfulness,
                              vocabulary=args.vocabulary, split=args.split)
    return _run(config, workspace, console)


def _run(config, workspace: Workspace, console) -> int:
    from saelab.circuits.io import ground_truth_path
    from saelab.workflows.circuits import run_circuits_in_workspace

    result = run_circuits_in_workspace(workspace, config, progress=console.print)
    if result.ground_truth is None:
        console.print(f"[yellow]no ground truth at {ground_truth_path(config.model, config.task)}: "
                      "scores are stored without AUCs[/yellow]")
    _print_table(console, result.summary, f"{config.task} on {config.model}")
    console.print(f"run {result.run_id} recorded in {workspace.db_path}")
    return 0


def _print_table(console, rows, title: str) -> None:
    from rich.table import Table

    from saelab.circuits.summary import stat_text

    table = Table("method", "node AUC", "node AP", "edge AUC", "edge AP", "seconds", "peak MB", title=title)
    for row in rows:
        table.add_row(row.method, row.node_auc_text, stat_text(row.node_ap, row.n_seeds), row.edge_auc_text,
                      stat_text(row.edge_ap, row.n_seeds), f"{row.seconds:.2f}", f"{row.peak_mb:.0f}")
    console.print(table)


def _feature_circuit(args: argparse.Namespace, workspace: Workspace, console) -> int:
    """`saelab circuits --features`: checks everything it can before the model loads, then builds, stores
    and summarises the circuit."""
    from saelab.circuits.runner import split_seeds
    from saelab.feature_circuits.sparse import FeatureCircuitConfig
    from saelab.tasks import get_task
    from saelab.workflows.feature_graphs import feature_circuit_in_workspace, model_of, resolve_dictionaries

    if not args.features:
        raise UsageError("saelab circuits: --dicts builds a feature circuit; add --features")
    specs = [s.strip() for s in args.dicts.split(",") if s.strip()]
    if not specs:
        raise UsageError("saelab circuits --features: give --dicts, comma-separated sae ids or SAE directories")
    if not 1 <= args.prompts <= 10_000:
        raise UsageError(f"saelab circuits: --prompts must be in 1..10000, got {args.prompts}")
    try:
        config = FeatureCircuitConfig(node_method=args.node_method, node_threshold=args.node_threshold,
                                      edge_threshold=args.edge_threshold, edges=not args.no_edges)
        get_task(args.task)
    except ValueError as exc:
        raise UsageError(f"saelab circuits: {exc}") from None
    dictionaries = resolve_dictionaries(workspace, specs)
    model = model_of(dictionaries, args.model)
    console.print(f"feature circuit of {args.task} on {model}: {args.prompts} prompt pairs, "
                  f"{len(dictionaries)} dictionaries", markup=False, soft_wrap=True)
    run = feature_circuit_in_workspace(workspace, args.task, dictionaries, model, args.prompts,
                                       split_seeds(args.split, 1)[0], config, args.vocabulary)
    print_graph_summary(console, run, workspace)
    return 0


def print_graph_summary(console, run, workspace: Workspace) -> None:
    """Nodes, edges, the graph's metrics and where it is stored (shared by `saelab graph`)."""
    graph = run.graph
    errors = sum(n.kind == "error" for n in graph.nodes)
    latents = sum(n.kind == "latent" for n in graph.nodes)
    console.print(f"nodes: {len(graph.nodes)} ({latents} latents, {errors} error terms); edges: {len(graph.edges)}",
                  markup=False)
    shown = {k: v for k, v in graph.metrics.items() if not k.startswith("n_")}
    console.print("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()), markup=False, soft_wrap=True)
    console.print(f"built in {run.seconds:.1f} s; graph {run.graph_id} stored in {workspace.db_path} "
                  f"(app: /feature_graphs?graph={run.graph_id})", markup=False, soft_wrap=True)
