"""`saelab graph`: the attribution graph of one prompt through transcoders (Ameisen, Lindsey et al. 2025),
stored in the workspace and summarised."""

import argparse

from saelab.cli.circuits import print_graph_summary
from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", required=True, help="the text to attribute (BOS is prepended)")
    parser.add_argument("--transcoders", required=True, metavar="IDS",
                        help="comma-separated sae ids (as stored) or directories of transcoders, one per MLP")
    parser.add_argument("--model", default=None,
                        help="model name or directory (default: the transcoders' model)")
    parser.add_argument("--node-threshold", type=float, default=0.8,
                        help="keep the nodes holding this share of the influence on the logits (default 0.8)")
    parser.add_argument("--edge-threshold", type=float, default=0.98,
                        help="then the edges holding this share of the edge influence (default 0.98)")
    parser.add_argument("--max-logits", type=int, default=10,
                        help="at most this many logit nodes (default 10)")
    parser.add_argument("--logit-prob", type=float, default=0.95,
                        help="logit nodes: the likeliest next tokens up to this probability mass "
                             "(default 0.95)")


@command("graph", "attribution graph of one prompt through transcoders, stored for the app", _arguments)
def run_graph_command(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console

    from saelab.feature_circuits.attribution import AttributionConfig
    from saelab.workflows.feature_graphs import attribution_graph_in_workspace, model_of, resolve_dictionaries

    if not args.prompt.strip():
        raise UsageError("saelab graph: --prompt is empty; give the text to attribute, e.g. "
                         "--prompt \"The war lasted from 1732 to 17\"")
    specs = [s.strip() for s in args.transcoders.split(",") if s.strip()]
    if not specs:
        raise UsageError("saelab graph: --transcoders is empty; give sae ids or directories of transcoders")
    try:
        config = AttributionConfig(max_n_logits=args.max_logits, desired_logit_prob=args.logit_prob,
                                   node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    except ValueError as exc:
        raise UsageError(f"saelab graph: {exc}") from None
    transcoders = resolve_dictionaries(workspace, specs, transcoders=True)
    model = model_of(transcoders, args.model)
    console = Console()
    console.print(f"attribution graph of {args.prompt!r} on {model} through {len(transcoders)} transcoders",
                  markup=False, soft_wrap=True)
    run = attribution_graph_in_workspace(workspace, args.prompt, transcoders, model, config)
    print_graph_summary(console, run, workspace)
    return 0
