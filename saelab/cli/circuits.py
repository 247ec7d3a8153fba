"""`saelab circuits`: run circuit-identification methods on a task, score them, store the results."""

import argparse

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="ioi, greater_than, docstring; reverse or frac_prevs (tracr models); "
                        "required unless --list-methods")
    parser.add_argument("--model", default="saelab-tiny", help="model name or directory (default saelab-tiny)")
    parser.add_argument("--methods", default="random,layer_order,output_change,sae_codes,sae_codes_saelab,eap,"
                        "eap_ig,patching,acdc", help="comma-separated circuit methods (see --list-methods)")
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


def _methods(text: str) -> tuple[str, ...]:
    from saelab.circuits import list_methods

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
    from saelab.circuits.runner import CircuitRunConfig, split_seeds

    config = CircuitRunConfig(task=args.task, model=args.model, methods=_methods(args.methods),
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
