"""`saelab demo`: the whole loop on the bundled model."""

import argparse

from saelab.cli.main import command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name or directory (default: the bundled model; see `saelab models`)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens to run through the model (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="the smallest version of every step")
    parser.add_argument("--no-app", action="store_true", help="do not start the web app at the end")


@command("demo", "run the whole loop on the bundled model and record it in the workspace", _arguments)
def run_demo_command(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.demo import DemoConfig, run_demo
    from saelab.models import get_default_model_name

    if args.tokens <= 0:
        from saelab.cli.main import UsageError
        raise UsageError(f"saelab demo: --tokens must be positive, got {args.tokens}")
    console = Console()
    model = args.model or get_default_model_name()
    result = run_demo(workspace, DemoConfig(model=model, n_tokens=args.tokens, seed=args.seed))
    table = Table("step", "seconds", "result", title=f"saelab demo ({model})")
    for step in result.steps:
        table.add_row(step.name, f"{step.seconds:.2f}", step.detail)
    console.print(table)
    console.print(f"run {result.run_id} recorded in {result.db_path}")
    console.print(f"workspace: {workspace.root}")
    return 0
