"""`saelab cache`: cache activations of hook sites to the workspace and record them in the store."""

import argparse

from saelab.cli.main import UsageError, command
from saelab.workspace import Workspace


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model name or directory (default: the bundled model)")
    parser.add_argument("--sites", required=True, help="comma-separated hook sites, e.g. 1.resid_post,1.attn_z; a "
                                                       "transcoder's IN:OUT pair (1.resid_mid:1.mlp_out) caches both")
    parser.add_argument("--tokens", default="1M", help="tokens to cache, e.g. 500k, 2M (default 1M)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--source", default="bundled",
                        help="token source: bundled, files:GLOB[,GLOB], hub:NAME[:SPLIT], or paths (default bundled)")
    parser.add_argument("--context-len", type=int, default=128, help="tokens per context, BOS included")
    parser.add_argument("--batch-size", type=int, default=32, help="contexts per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed of the token order")
    parser.add_argument("--worker", type=int, default=None, help="this worker's index (with --num-workers)")
    parser.add_argument("--num-workers", type=int, default=None, help="independent workers splitting the shards")
    parser.add_argument("--merge", action="store_true",
                        help="only join finished workers' manifests (the last worker to finish does it itself)")


@command("cache", "cache activations of hook sites to disk (resumes where a killed run stopped)", _arguments)
def run_cache(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.activations import cache_activations, parse_site_pairs, sites_of_pairs
    from saelab.activations.cache import merge_worker_manifests
    from saelab.data.counts import parse_token_count
    from saelab.data.sources import source_from_spec
    from saelab.db import ResultsStore
    from saelab.models import get_default_model_name, load_model

    try:
        n_tokens = parse_token_count(args.tokens)
    except ValueError as exc:
        raise UsageError(f"saelab cache: --tokens: {exc}") from None
    try:
        sites = sites_of_pairs(parse_site_pairs(args.sites))
    except ValueError as exc:
        raise UsageError(f"saelab cache: --sites: {exc}") from None
    site_list = ",".join(map(str, sites))  # a transcoder's pair caches both of its sites
    model = args.model or get_default_model_name()
    # Validate everything a user typed before the workspace is touched: a bad value changes nothing.
    source = source_from_spec(args.source)
    if hasattr(source, "check_utf8"):
        source.check_utf8()
    loaded = load_model(model)
    for site in sites:
        site.validate(loaded.cfg)
    console = Console()
    if args.merge:
        merged = merge_worker_manifests(workspace.activations_for(model), site_list)
        store = ResultsStore(workspace.create().db_path).initialize()
        run_id = store.start_run("cache", name=model, config={"merge": True, "sites": site_list, "model": model})
        store.insert("cached_sites", _merged_rows(workspace, run_id, model, merged))
        store.finish_run(run_id, "done", f"merged {len(merged)} sites")
        console.print(f"merged the workers' manifests of {', '.join(merged)}; run {run_id}")
        return 0
    store = ResultsStore(workspace.create().db_path).initialize()
    config = {k: v for k, v in vars(args).items() if k not in ("command", "verbose")}
    run_id = store.start_run("cache", name=model, config={**config, "model": model, "n_tokens": n_tokens})
    try:
        result = cache_activations(
            model,
            site_list,
            n_tokens,
            dtype=args.dtype,
            out_dir=workspace.activations_for(model),
            source=source,
            seed=args.seed,
            context_len=args.context_len,
            batch_size=args.batch_size,
            worker=args.worker,
            num_workers=args.num_workers,
            model=loaded,
        )
    except Exception as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    merged = None if result.complete else _merge_when_all_finished(result.out_dir, site_list)
    if result.complete:
        store.insert("cached_sites", _site_rows(workspace, run_id, model, [
            (s.site, s.dtype, s.d, s.n_tokens, s.manifest_path) for s in result.sites.values()]))
    elif merged is not None:
        store.insert("cached_sites", _merged_rows(workspace, run_id, model, merged))
    note = "" if result.complete else (" (merged: every worker has finished)" if merged is not None else
                                       " (this worker's part; the last worker to finish merges them)")
    store.finish_run(run_id, "done", f"{result.n_tokens} tokens, {len(result.sites)} sites{note}")
    table = Table("site", "width", "tokens", "dtype", "manifest", title=f"cached activations of {model}")
    for site in result.sites.values():
        table.add_row(site.site, str(site.d), f"{site.n_tokens:,}", site.dtype, workspace.relative(site.manifest_path))
    console.print(table)
    if note:
        console.print(note.strip(" ()"))
    rate = result.tokens_written / max(result.seconds, 1e-9)
    console.print(f"{result.tokens_written:,} tokens computed in {result.seconds:.1f} s ({rate:,.0f} tok/s); "
                  f"run {run_id}")
    return 0


def _merge_when_all_finished(out_dir, sites: str):
    """The merged manifests if every worker has finished, else None (another worker is still running)."""
    from saelab.activations import ActivationStoreError
    from saelab.activations.cache import merge_worker_manifests

    try:
        return merge_worker_manifests(out_dir, sites)
    except ActivationStoreError:
        return None


def _merged_rows(workspace: Workspace, run_id: str, model: str, merged: dict) -> list[dict]:
    from saelab.activations.store import store_paths

    out_dir = workspace.activations_for(model)
    return _site_rows(workspace, run_id, model, [
        (m.site, m.dtype, m.d, m.n_tokens, store_paths(out_dir, m.site).manifest) for m in merged.values()])


def _site_rows(workspace: Workspace, run_id: str, model: str, sites: list[tuple]) -> list[dict]:
    """`cached_sites` rows from (site, dtype, d, n_tokens, manifest path) of each site."""
    return [{"run_id": run_id, "model": model, "site": site, "dtype": dtype, "d": d, "n_tokens": n_tokens,
             "manifest_path": workspace.relative(manifest)} for site, dtype, d, n_tokens, manifest in sites]
