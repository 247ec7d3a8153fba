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
                        help="token source: bundled, files:GLOB[,GLOB], hub:NAME[:SPLIT], or paths "
                             "(default bundled)")
    parser.add_argument("--context-len", type=int, default=128, help="tokens per context, BOS included")
    parser.add_argument("--batch-size", type=int, default=32, help="contexts per forward pass")
    parser.add_argument("--shard-tokens", type=int, default=131072,
                        help="tokens per shard, the unit a killed run resumes from (default 131072)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the token order")
    parser.add_argument("--worker", type=int, default=None,
                        help="this worker's index (with --num-workers; under torchrun, RANK picks it)")
    parser.add_argument("--num-workers", type=int, default=None, help="independent workers splitting the shards")
    parser.add_argument("--merge", action="store_true",
                        help="only join finished workers' manifests (the last worker to finish does it itself)")


@command("cache", "cache activations of hook sites to disk (resumes where a killed run stopped)", _arguments)
def run_cache(args: argparse.Namespace, workspace: Workspace) -> int:
    from rich.console import Console
    from rich.table import Table

    from saelab.activations import parse_site_pairs, sites_of_pairs
    from saelab.data.counts import parse_token_count
    from saelab.models import get_default_model_name
    from saelab.workflows.cache import CacheRequest, cache_in_workspace, merge_in_workspace, worker_note

    try:
        n_tokens = parse_token_count(args.tokens)
    except ValueError as exc:
        raise UsageError(f"saelab cache: --tokens: {exc}") from None
    # a transcoder's IN:OUT pair caches both of its sites; a bad site or pair is a bad value (exit 1, as in train)
    sites = ",".join(map(str, sites_of_pairs(parse_site_pairs(args.sites))))
    try:
        request = CacheRequest(model=args.model or get_default_model_name(), sites=sites,
                               n_tokens=n_tokens, dtype=args.dtype, source=args.source,
                               context_len=args.context_len, batch_size=args.batch_size,
                               shard_tokens=args.shard_tokens, seed=args.seed, worker=args.worker,
                               num_workers=args.num_workers)
    except ValueError as exc:
        raise UsageError(f"saelab cache: {exc}") from None
    console = Console()
    if args.merge:
        merged = merge_in_workspace(workspace, request.model, request.sites)
        console.print(f"merged the workers' manifests of {', '.join(merged.sites)}; run {merged.run_id}")
        return 0
    outcome = cache_in_workspace(workspace, request)
    result = outcome.result
    table = Table("site", "width", "tokens", "dtype", "manifest",
                  title=f"cached activations of {request.model}")
    for site in result.sites.values():
        table.add_row(site.site, str(site.d), f"{site.n_tokens:,}", site.dtype,
                      workspace.relative(site.manifest_path))
    console.print(table)
    if note := worker_note(result, outcome.merged):
        console.print(note.strip(" ()"))
    rate = result.tokens_written / max(result.seconds, 1e-9)
    console.print(f"{result.tokens_written:,} tokens computed in {result.seconds:.1f} s ({rate:,.0f} tok/s); "
                  f"run {outcome.run_id}")
    return 0
