"""`saelab demo`: the whole loop on the bundled model, then the web app over its results."""

import argparse
import math

from saelab.cli.main import command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model name or directory (default: the bundled model; see `saelab models`)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="the smallest version of every step (minutes)")
    parser.add_argument("--no-circuits", action="store_true", help="skip the circuit-identification step")
    parser.add_argument("--no-app", action="store_true", help="do not start the web app at the end")
    parser.add_argument("--port", type=int, default=8501, help="port of the web app (default 8501)")


def _fmt(value: float, form: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else form.format(value)


@command("demo", "run the whole loop on the bundled model, record it in the workspace, open the app", _arguments)
def run_demo_command(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.models import get_default_model_name
    from saelab.workflows.demo import DemoConfig, run_demo

    console = Console()
    model = args.model or get_default_model_name()
    cfg = DemoConfig(model=model, quick=args.quick, seed=args.seed, circuits=not args.no_circuits)
    with console.status(f"saelab demo on {model} (workspace {workspace.root}) …") as status:
        def on_step(name, step) -> None:
            if step is None:
                status.update(f"saelab demo on {model}: {name} …")
            else:
                console.print(f"[green]✓[/green] {name} ({step.seconds:.1f} s): {step.detail}")

        result = run_demo(workspace, cfg, on_step)
    steps = Table("step", "seconds", "result", title=f"saelab demo ({model})")
    for step in result.steps:
        steps.add_row(step.name, f"{step.seconds:.1f}", step.detail)
    console.print(steps)
    saes = Table("SAE", "architecture", "site", "FVU", "L0", "CE recovered", title="SAEs")
    for sae in result.saes:
        saes.add_row(sae.sae_id, sae.architecture, sae.site, _fmt(sae.fvu, "{:.3f}"), _fmt(sae.l0, "{:.1f}"),
                     _fmt(sae.ce_recovered, "{:.3f}"))
    console.print(saes)
    if result.circuits:
        circuits = Table("task", "model", "ground truth", "method", "node AUC", "seconds",
                         title="circuit identification (baselines: random, layer_order, output_change, "
                               "weight_norm)")
        for row in result.circuits:
            circuits.add_row(row.task, row.model, row.ground_truth or "none", row.method,
                             _fmt(row.node_auc, "{:.3f}"), f"{row.seconds:.1f}")
        console.print(circuits)
    console.print(f"run {result.run_id} recorded in {result.db_path}")
    if args.no_app:
        console.print(f"browse it with: saelab app --workspace {workspace.root}")
        return 0
    from saelab.cli.app import run_server, streamlit_command

    console.print(f"saelab app: http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    return run_server(streamlit_command(workspace, port=args.port))
