"""`saelab eval`: core metrics of one SAE (and, with --dashboards, its feature dashboards) into the store."""

import argparse
import math
import shlex
from pathlib import Path

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae", required=True, metavar="PATH", help="directory of a saved SAE (cfg.json + sae.safetensors)")
    parser.add_argument("--tokens", default="64k", help="held-out tokens for the core metrics (default 64k)")
    parser.add_argument("--dashboards", action="store_true", help="also compute feature dashboards")
    parser.add_argument("--dashboard-tokens", default="1M", help="corpus tokens for the dashboards (default 1M)")
    parser.add_argument("--model", default=None, help="model name or directory (default: the SAE's model)")
    parser.add_argument("--sae-id", default=None, help="id in the store (default: the SAE directory's name)")
    parser.add_argument("--context-len", type=int, default=128, help="tokens per context, BOS included")
    parser.add_argument("--batch-size", type=int, default=16, help="contexts per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the token order and sampling")


def eval_command(sae_dir: str | Path, sae_id: str, workspace_root: str | Path, dashboards: bool = True) -> str:
    """The exact `saelab eval` command line that evaluates the SAE saved in `sae_dir` into a workspace's store
    under the id `sae_id` (with its dashboards unless `dashboards` is False)."""
    words = ["saelab", "eval", "--sae", str(sae_dir)] + (["--dashboards"] if dashboards else [])
    if Path(sae_dir).name != sae_id:  # eval names the SAE after its directory unless told otherwise
        words += ["--sae-id", sae_id]
    return shlex.join([*words, "--workspace", str(workspace_root)])


ROWS = (("tokens", "n_tokens", "{:,.0f}"), ("MSE", "mse", "{:.4g}"), ("FVU", "fvu", "{:.4f}"),
        ("cosine", "cosine", "{:.4f}"), ("L0", "l0", "{:.2f}"), ("dead latents (never fired in these {n_tokens:,} tokens)", "dead_fraction", "{:.2%}"),
        ("dense latents", "dense_fraction", "{:.2%}"), ("CE clean", "ce_clean", "{:.4f}"),
        ("CE with SAE", "ce_spliced", "{:.4f}"), ("CE zero-ablated", "ce_zero_ablation", "{:.4f}"),
        ("CE mean-ablated", "ce_mean_ablation", "{:.4f}"), ("CE recovered (zero)", "ce_loss_score", "{:.4f}"),
        ("CE recovered (mean)", "ce_recovered_mean", "{:.4f}"), ("KL(model ‖ spliced)", "kl_div", "{:.4g}"),
        ("CE with SAE + error", "ce_with_error", "{:.4f}"))


@command("eval", "core metrics of an SAE (MSE, FVU, L0, CE/KL spliced in) and optional feature dashboards",
         _arguments)
def run_eval_command(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.data.counts import parse_token_count
    from saelab.workflows.eval import EvalRequest, run_eval

    try:
        n_tokens, dashboard_tokens = parse_token_count(args.tokens), parse_token_count(args.dashboard_tokens)
    except ValueError as exc:
        raise UsageError(f"saelab eval: {exc}") from None
    request = EvalRequest(sae_path=args.sae, sae_id=args.sae_id, model=args.model, n_tokens=n_tokens,
                          dashboards=args.dashboards, dashboard_tokens=dashboard_tokens,
                          context_len=args.context_len, batch_size=args.batch_size, seed=args.seed)
    console = Console()  # stage lines on stdout: stderr keeps a failure to one line
    outcome = run_eval(workspace, request, stage=lambda text: console.print(f"saelab eval: {text}", markup=False,
                                                                           soft_wrap=True), progress=True)
    table = Table("metric", "value", title=f"{outcome.sae_id} on {outcome.model}")
    for label, field, form in ROWS:
        value = getattr(outcome.core, field)
        if not (isinstance(value, float) and math.isnan(value)):
            table.add_row(label.format(n_tokens=int(outcome.core.n_tokens)), form.format(value))
    console.print(table)
    if outcome.core.splice_skipped:
        console.print(f"CE/KL not computed: {outcome.core.splice_skipped}")
    if args.dashboards:
        console.print(f"dashboards: {outcome.n_features:,} latents, {outcome.n_examples:,} examples")
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in outcome.seconds.items())
    console.print(f"run {outcome.run_id} ({timing}) recorded in {workspace.db_path}")
    return 0
