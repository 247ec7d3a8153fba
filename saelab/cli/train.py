"""`saelab train`: train a sweep of SAEs in one pass over the data (flags or a TOML file)."""

import argparse
import itertools
import shlex
import tomllib
from pathlib import Path

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def train_command(model: str, sites: str, workspace_root: str | Path) -> str:
    """The exact `saelab train` command line that trains an SAE (default architecture and width) of `model` at
    `sites` into a workspace; it ends by printing the `saelab eval --dashboards` command for the new SAE."""
    return shlex.join(["saelab", "train", "--model", model, "--sites", sites, "--workspace", str(workspace_root)])


class _ArchitectureNames:
    """The registered architectures as argparse `choices`, read only when needed: building the parser for any
    subcommand must not import torch, but `--help` lists the names and parsing rejects an unknown one before
    any model loads."""

    def names(self) -> list[str]:
        from saelab.sae import ARCHITECTURES
        from saelab.workflows.train import TRANSCODER_ARCHS

        return [*ARCHITECTURES.names(), *TRANSCODER_ARCHS]

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, value) -> bool:  # `value` is the parsed comma-separated list
        return all(name in self.names() for name in value)


ARCHITECTURE_CHOICES = _ArchitectureNames()


def _architectures(text: str) -> list[str]:
    names = _csv(str)(text)
    unknown = [name for name in names if name not in ARCHITECTURE_CHOICES.names()]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown architecture {', '.join(map(repr, unknown))}; choose from "
                                         f"{', '.join(ARCHITECTURE_CHOICES)}")
    return names


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
    parser.add_argument("--sites", help="comma-separated hook sites, e.g. 2.resid_post,1.attn_z; a transcoder's "
                                        "IN:OUT pair, e.g. 1.resid_mid:1.mlp_out")
    parser.add_argument("--arch", type=_architectures, default=["topk"], choices=ARCHITECTURE_CHOICES, metavar="ARCH",
                        help="architectures, comma-separated, from: %(choices)s (default topk); transcoder and "
                             "skip_transcoder are TopK (skip-)transcoders on IN:OUT pairs, and IN:OUT pairs with "
                             "another architecture make transcoders of it")
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
    from saelab.workflows.train import TrainSpec

    if args.config is not None:
        return spec_from_toml(args.config)
    if not args.sites:
        raise UsageError("saelab train: give --sites (e.g. --sites 2.resid_post) or --config FILE")
    entries = []
    for pair, arch, width, k, l1 in itertools.product(_site_pairs(args.sites), args.arch, args.width, args.k, args.l1):
        entry = _entry(pair, arch, width, k, l1)
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


def _site_pairs(text: str):
    """The --sites list as SitePairs, parsed before any model loads: a bad site or pair is a one-line ValueError
    (exit 1, as a bad site of `saelab cache`)."""
    from saelab.activations import parse_site_pairs

    return parse_site_pairs(text)


def _entry(pair, arch: str, width: int, k: int, l1: float):
    """The SAESpec of one grid point: an SAE of one site, or a transcoder of an IN:OUT pair."""
    from saelab.sae import get_architecture
    from saelab.workflows.train import TRANSCODER_ARCHS, SAESpec

    name, skip = TRANSCODER_ARCHS.get(arch, (arch, False))
    architecture = get_architecture(name)
    if arch in TRANSCODER_ARCHS and pair.output is None:
        raise UsageError(f"saelab train: --arch {arch} needs IN:OUT site pairs, e.g. --sites "
                         f"{pair.input}:{pair.input.layer}.mlp_out; got the single site {str(pair.input)!r}")
    if pair.output is not None and not architecture.transcoder:
        raise UsageError(f"saelab train: architecture {name!r} cannot be a transcoder ({pair.input}:{pair.output}); "
                         "use --arch transcoder, skip_transcoder, or another architecture")
    return SAESpec(site=str(pair.input), architecture=name, width=width,
                   k=k if architecture.uses_k else SAESpec.k,
                   l1_coefficient=l1 if architecture.uses_l1 else SAESpec.l1_coefficient,
                   output_site=str(pair.output) if pair.output is not None else "", skip_connection=skip)


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


def _setup_lines(spec) -> list[str]:
    """What the command says before its progress bar appears: what it loads, and any rounding of --tokens."""
    sites = sorted({f"{e.site}:{e.output_site}" if e.output_site else e.site for e in spec.saes})
    lines = [f"saelab train: loading {spec.model} and preparing {len(spec.saes)} SAE(s) on {', '.join(sites)}; "
             "the progress bar starts with the first batch"]
    steps = spec.tokens // spec.batch_size
    if steps * spec.batch_size != spec.tokens:
        lines.append(f"note: {spec.tokens:,} tokens is not a whole number of batches of {spec.batch_size:,}; "
                     f"training {steps:,} steps = {steps * spec.batch_size:,} tokens per SAE")
    return lines


def final_training_metrics(workspace: Workspace, run_id: str) -> dict[str, dict[str, float]]:
    """SAE id -> metric -> its value at the last logged step of the run."""
    from saelab.db import ResultsStore

    rows = ResultsStore(workspace.db_path).select("training_metrics", where={"run_id": run_id})
    last = rows.sort_values("step").groupby(["sae_id", "metric"]).tail(1)
    return {sae_id: dict(zip(group["metric"], group["value"], strict=True))
            for sae_id, group in last.groupby("sae_id")}


def _summary(console, workspace: Workspace, spec, result, seconds: float) -> None:
    from rich.table import Table

    from saelab.cli.eval import eval_command
    from saelab.workflows.train import scheduled_trainer_config

    window = scheduled_trainer_config(spec.tokens, spec.batch_size).dead_window_tokens
    final = final_training_metrics(workspace, result.run_id)
    title = f"run {result.run_id}" + (" (reused: already trained)" if result.reused else f", {seconds:.0f} s")
    table = Table("FVU", "L0", "dead", title=title)
    table.add_column("SAE (under saes/)", overflow="fold")
    for sae_id in result.sae_ids:
        values = final.get(sae_id, {})
        cells = [f"{values[m]:{form}}" if m in values else "-"
                 for m, form in (("fvu", ".4f"), ("l0", ".1f"), ("dead_fraction", ".1%"))]
        table.add_row(*cells, sae_id)
    console.print(table)
    console.print(f"FVU and L0 of the last logged training batch; dead: share of latents idle for the last "
                  f"{window:,} training tokens (a quarter of the run, at most 1M). Next, evaluate one on held-out "
                  "tokens and compute its dashboards:")
    first = result.sae_ids[0]
    console.print(f"  {eval_command(result.paths[first], first, workspace.root)}", soft_wrap=True, markup=False)


@command("train", "train sparse autoencoders on a model's activations (one pass, many SAEs)", _arguments)
def run_train(args: argparse.Namespace, workspace: Workspace) -> int:
    import os
    import time

    from rich.console import Console

    from saelab.training.distributed import current_world
    from saelab.workflows.train import train_in_workspace

    start = time.perf_counter()
    spec = spec_from_args(args)
    console = Console()
    if os.environ.get("RANK", "0") == "0":  # stdout: stderr keeps a failure to one line
        for line in _setup_lines(spec):
            console.print(line, markup=False, soft_wrap=True)
    result = train_in_workspace(workspace, spec)
    if not current_world().is_main:
        return 0
    _summary(console, workspace, spec, result, time.perf_counter() - start)
    return 0
