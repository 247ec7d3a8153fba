"""`saelab train`: train a sweep of SAEs in one pass over the data (flags or a TOML file)."""

import argparse
import itertools
import tomllib
from pathlib import Path

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace

_USES_K = {"topk", "batchtopk", "vq"}
_USES_L1 = {"relu_l1", "relu_l1_anthropic", "gated"}


def _csv(kind):
    def parse(text: str):
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None

    return parse


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with the run and its [[sae]] entries (a sweep)")
    parser.add_argument("--model", help="model name or directory (default: the bundled model)")
    parser.add_argument("--sites", help="comma-separated hook sites, e.g. 2.resid_post,1.attn_z")
    parser.add_argument("--arch", type=_csv(str), default=["topk"], help="architectures, comma-separated")
    parser.add_argument("--width", type=_csv(int), default=[4096], help="latents, comma-separated")
    parser.add_argument("--k", type=_csv(int), default=[32], help="k of topk/batchtopk/vq, comma-separated")
    parser.add_argument("--l1", type=_csv(float), default=[5.0], help="L1 coefficients, comma-separated")
    parser.add_argument("--tokens", default="2M", help="activation rows per SAE, e.g. 500k, 5M (default 2M)")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per step (default 4096)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate of every SAE (default: per architecture, 3e-3 for topk and "
                             "batchtopk, 4e-4 for the others)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--source", default="bundled", help="token source when streaming (default bundled)")
    parser.add_argument("--checkpoint-every", default="500k",
                        help="tokens between checkpoints a killed run resumes from, e.g. 100k (default 500k)")


def spec_from_args(args: argparse.Namespace):
    """A TrainSpec from flags (a grid over sites x arch x width x k x l1) or from a TOML file."""
    from saelab.data.counts import parse_token_count
    from saelab.models import get_default_model_name
    from saelab.workflows.train import SAESpec, TrainSpec

    if args.config is not None:
        return spec_from_toml(args.config)
    if not args.sites:
        raise UsageError("saelab train: give --sites (e.g. --sites 2.resid_post) or --config FILE")
    entries = []
    for site, arch, width, k, l1 in itertools.product(args.sites.split(","), args.arch, args.width, args.k, args.l1):
        entry = SAESpec(site=site.strip(), architecture=arch, width=width, k=k if arch in _USES_K else 32,
                        l1_coefficient=l1 if arch in _USES_L1 else 5.0)
        if entry not in entries:
            entries.append(entry)
    counts = {}
    for flag, text in (("--tokens", args.tokens), ("--checkpoint-every", args.checkpoint_every)):
        try:
            counts[flag] = parse_token_count(text)
        except ValueError as exc:
            raise UsageError(f"saelab train: {flag}: {exc}") from None
    return TrainSpec(model=args.model or get_default_model_name(), saes=tuple(entries), tokens=counts["--tokens"],
                     batch_size=args.batch_size, lr=args.lr, seed=args.seed, source=args.source,
                     checkpoint_every_tokens=counts["--checkpoint-every"])


def spec_from_toml(path: Path):
    from saelab.data.counts import parse_token_count
    from saelab.errors import SaelabError
    from saelab.fields import check_field_types
    from saelab.models import get_default_model_name
    from saelab.workflows.train import SAESpec, TrainSpec

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SaelabError(f"cannot read training config {str(path)!r}: {exc}") from None
    entries = raw.pop("sae", [])
    where = f"training config {str(path)!r}"
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise SaelabError(f"{where}: each SAE is a [[sae]] table, got sae = {entries!r}")
    for number, entry in enumerate(entries, 1):
        check_field_types(SAESpec, entry, f"{where}, [[sae]] number {number}")
    if isinstance(raw.get("tokens"), str):
        raw["tokens"] = parse_token_count(raw["tokens"])
    check_field_types(TrainSpec, raw, where)
    try:
        saes = tuple(SAESpec(**entry) for entry in entries)
        return TrainSpec(model=raw.pop("model", None) or get_default_model_name(), saes=saes, **raw)
    except TypeError as exc:
        raise SaelabError(f"{where}: {exc}") from None


@command("train", "train sparse autoencoders on a model's activations (one pass, many SAEs)", _arguments)
def run_train(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.training.distributed import current_world
    from saelab.workflows.train import train_in_workspace

    spec = spec_from_args(args)
    result = train_in_workspace(workspace, spec)
    if not current_world().is_main:
        return 0
    console = Console()
    table = Table("SAE", "path", title=f"run {result.run_id}" + (" (reused: already trained)" if result.reused else ""))
    for sae_id in result.sae_ids:
        table.add_row(sae_id, workspace.relative(result.paths[sae_id]))
    console.print(table)
    return 0
