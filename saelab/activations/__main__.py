"""`python -m saelab.activations`: run one caching worker, or merge workers' manifests.

    python -m saelab.activations --model saelab-random --sites 1.resid_post,1.attn_z --tokens 2M \
        --source data/text --out activations --worker 0 --num-workers 2
    torchrun --nproc-per-node 4 -m saelab.activations ...      (RANK / WORLD_SIZE pick the worker)
    python -m saelab.activations --merge --out activations
"""

import argparse
import logging
import sys

from saelab.activations.cache import cache_activations, merge_worker_manifests
from saelab.data import parse_token_count, source_from_spec
from saelab.errors import SaelabError

log = logging.getLogger("saelab.activations")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m saelab.activations", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory (one folder per site)")
    parser.add_argument("--merge", action="store_true", help="merge finished workers' manifests and exit")
    parser.add_argument("--model", help="bundled model name, model directory or HF name")
    parser.add_argument("--sites", help="comma-separated sites, e.g. 1.resid_post,1.attn_z")
    parser.add_argument("--tokens", help="tokens to cache, e.g. 2M")
    parser.add_argument("--source", help="'bundled', 'hub:NAME[:SPLIT]', or text files / directories / globs")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-tokens", type=int, default=131072)
    parser.add_argument("--worker", type=int)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        if args.merge:
            merged = merge_worker_manifests(args.out, args.sites)
            log.info("merged %d site(s): %s", len(merged), ", ".join(merged))
            return 0
        missing = [name for name in ("model", "sites", "tokens", "source") if getattr(args, name) is None]
        if missing:
            raise SaelabError(f"missing --{', --'.join(missing)}")
        result = cache_activations(
            args.model, args.sites, parse_token_count(args.tokens), args.dtype, args.out,
            source_from_spec(args.source), args.seed, args.context_len, args.batch_size, args.shard_tokens,
            args.worker, args.num_workers, args.device, progress=not args.no_progress,
        )
    except (SaelabError, ValueError) as exc:
        log.error("error: %s", exc)
        return 2
    log.info("cached %d tokens (%d computed now) in %.1fs", result.n_tokens, result.tokens_written, result.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
