"""Caching activations to disk: one model pass per batch serves every site, shards are written atomically,
and re-running the same command resumes where a killed run stopped.

Shard k holds contexts [k * S, (k + 1) * S) of the packed token stream, whatever the number of workers:
worker i of N writes the shards with k % N == i, so N workers and one worker write identical files, and
`merge_worker_manifests` joins the workers' manifests.
"""

import errno
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from saelab.activations.background import OrderedCommits, prefetched
from saelab.activations.collect import forward_sites
from saelab.activations.sites import HookSite, parse_sites
from saelab.activations.store import (
    META_DTYPE,
    ActivationStoreError,
    Manifest,
    ShardInfo,
    check_shard,
    commit_file,
    read_manifest,
    store_dtype,
    store_paths,
    temp_path,
    to_disk_array,
    write_manifest,
)
from saelab.capacity import CapacityError, no_space_message, require_disk
from saelab.data import PackedContext, TextSource, iter_contexts
from saelab.data.packing import describe_short
from saelab.data.sources import DataSourceError, source_from_spec
from saelab.errors import SaelabError

log = logging.getLogger(__name__)


class NonFiniteActivationError(SaelabError, ValueError):
    """A NaN or infinite activation: the run stops, naming the site, shard and token position."""


@dataclass(frozen=True)
class CacheConfig:
    """How much to cache and how to lay it out; names no model, site or source."""

    n_tokens: int
    """Tokens to cache, rounded up to whole contexts."""
    dtype: str = "float32"
    """Stored dtype: float32, float16 or bfloat16."""
    context_len: int = 128
    """Tokens per context (BOS included)."""
    batch_size: int = 32
    """Contexts per forward pass."""
    shard_tokens: int = 131072
    """Target tokens per shard, rounded down to whole contexts (at least one context)."""
    seed: int = 0
    """Seed of the token source's order."""
    worker: int = 0
    """This worker's index, 0 <= worker < num_workers."""
    num_workers: int = 1
    """Independent workers splitting the shards."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "context_len", "batch_size", "shard_tokens", "num_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} {value!r} must be a positive integer")
        store_dtype(self.dtype)
        if not 0 <= self.worker < self.num_workers:
            raise ValueError(
                f"worker {self.worker} must lie in 0..{self.num_workers - 1} (num_workers {self.num_workers})"
            )
        if self.context_len < 2:
            raise ValueError(f"context_len {self.context_len} must be at least 2 (BOS plus one token)")

    @property
    def n_contexts(self) -> int:
        return math.ceil(self.n_tokens / self.context_len)

    @property
    def contexts_per_shard(self) -> int:
        return max(1, self.shard_tokens // self.context_len)

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_contexts / self.contexts_per_shard)

    def shard(self, index: int) -> ShardInfo:
        first = index * self.contexts_per_shard
        n = min(self.contexts_per_shard, self.n_contexts - first)
        return ShardInfo(index, first, n, n * self.context_len)

    def worker_shards(self) -> list[ShardInfo]:
        return [self.shard(k) for k in range(self.worker, self.n_shards, self.num_workers)]


class SiteCacheResult(NamedTuple):
    """What the results store records about one cached site."""

    site: str
    hook_name: str
    manifest_path: Path
    n_tokens: int
    d: int
    dtype: str
    feature_shape: tuple[int, ...]


class CacheResult(NamedTuple):
    out_dir: Path
    sites: dict[str, SiteCacheResult]
    n_tokens: int
    """Tokens in this worker's part of the store (the whole store for a single worker)."""
    tokens_written: int
    """Tokens this call computed (less than n_tokens when it resumed)."""
    seconds: float
    complete: bool
    """True when `manifest.json` is final; False for one of several workers (merge them next)."""


def new_manifest(model_name: str, site: HookSite, model: HookedTransformer, config: CacheConfig,
                 source: dict) -> Manifest:
    """The manifest of a run that has written nothing yet; `source` is the token source's description."""
    worker = (config.worker, config.num_workers) if config.num_workers > 1 else None
    return Manifest(
        model=model_name,
        site=str(site),
        hook_name=site.hook_name,
        dtype=config.dtype,
        d=site.width(model.cfg),
        feature_shape=site.feature_shape(model.cfg),
        context_len=config.context_len,
        contexts_per_shard=config.contexts_per_shard,
        n_contexts=config.n_contexts,
        source=source,
        seed=config.seed,
        worker=worker,
    )


class SiteWriter:
    """Writes one site's shards (through temporary memory maps) and keeps its manifest current."""

    def __init__(self, out_dir: Path, site: HookSite, manifest: Manifest, config: CacheConfig) -> None:
        self.site = site
        self.paths = store_paths(out_dir, site)
        self.config = config
        self.torch_dtype = store_dtype(config.dtype).torch_dtype
        self.manifest_path = (self.paths.worker_manifest(config.worker, config.num_workers)
                              if config.num_workers > 1 else self.paths.manifest)
        self.manifest = _resumable(self.paths, self.manifest_path, manifest, config)
        self._open: dict[int, np.memmap] = {}
        """Shards being written, by index: the one being computed and the one being committed."""

    def completed(self) -> set[int]:
        return {s.index for s in self.manifest.shards}

    def shard_bytes(self, shard: ShardInfo) -> int:
        """Disk space one shard's two files take (activations and token metadata), headers aside."""
        itemsize = np.dtype(store_dtype(self.config.dtype).numpy_dtype).itemsize
        return shard.n_tokens * (self.manifest.d * itemsize + np.dtype(META_DTYPE).itemsize)

    def begin(self, shard: ShardInfo) -> None:
        """Open the shard's temporary memory map with every block allocated on disk: a full disk is then an
        OSError here (a one-line CapacityError), not a SIGBUS when a row is written into the map."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        path = temp_path(self.paths.shard(shard.index).acts)
        what = f"shard {shard.index} of {self.site}"
        require_disk(self.paths.root, self.shard_bytes(shard), what)
        acts = np.lib.format.open_memmap(
            path,
            mode="w+",
            dtype=store_dtype(self.config.dtype).numpy_dtype,
            shape=(shard.n_tokens, self.manifest.d),
        )
        self._open[shard.index] = acts
        try:
            with open(path, "rb+") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.path.getsize(path))
        except OSError as exc:
            self.abort()
            if exc.errno != errno.ENOSPC:
                raise
            raise CapacityError(no_space_message(self.paths.root, self.shard_bytes(shard),
                                                 shutil.disk_usage(self.paths.root).free, what)) from None

    def abort(self) -> None:
        """Drop the shards being written and their temporary files (after an error; a kill leaves them to be
        overwritten by the next run)."""
        for index in list(self._open):
            del self._open[index]
            files = self.paths.shard(index)
            for temp in (temp_path(files.acts), temp_path(files.meta)):
                temp.unlink(missing_ok=True)

    def write(self, act: Tensor, shard: ShardInfo, first_row: int) -> None:
        """Store activations [batch, pos, *feature] at rows first_row.. of the open shard."""
        rows = act.reshape(act.shape[0] * act.shape[1], -1)
        check_finite(rows, str(self.site), shard, first_row, self.config)
        rows = rows.to(self.torch_dtype).cpu()
        self._open[shard.index][first_row:first_row + rows.shape[0]] = to_disk_array(rows, self.config.dtype)

    def finish(self, shard: ShardInfo, meta: np.ndarray) -> None:
        """Commit the shard's two files, then list it in the manifest."""
        files = self.paths.shard(shard.index)
        acts = self._open.pop(shard.index)
        acts.flush()
        del acts
        with open(temp_path(files.meta), "wb") as handle:
            np.save(handle, meta)
        commit_file(temp_path(files.acts), files.acts)
        commit_file(temp_path(files.meta), files.meta)
        # A shard another site had not yet listed is redone for every site: replace, never duplicate.
        shards = {s.index: s for s in self.manifest.shards} | {shard.index: shard}
        self.save(complete=False, shards=tuple(shards[i] for i in sorted(shards)))

    def save(self, complete: bool, shards: tuple[ShardInfo, ...] | None = None) -> None:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.manifest = replace(self.manifest, shards=self.manifest.shards if shards is None else shards,
                                complete=complete)
        write_manifest(self.manifest_path, self.manifest)

    def result(self) -> SiteCacheResult:
        m = self.manifest
        return SiteCacheResult(
            m.site, m.hook_name, self.manifest_path, m.n_tokens, m.d, m.dtype, m.feature_shape
        )


def _resumable(paths, manifest_path: Path, fresh: Manifest, config: CacheConfig) -> Manifest:
    """The manifest to continue from: `fresh` with the still-valid shards of an earlier run's manifest."""
    if not manifest_path.exists():
        return fresh
    old = read_manifest(manifest_path)
    if old.identity() != fresh.identity():
        changed = [k for k, v in old.identity().items() if v != fresh.identity()[k]]
        raise ActivationStoreError(
            f"store {str(paths.root)!r} was cached with different settings ({', '.join(changed)} differ); "
            "use a new output directory or the same settings"
        )
    kept = tuple(s for s in old.shards if s.index < config.n_shards and s == config.shard(s.index))
    for shard in kept:
        check_shard(paths, old, shard)
    return replace(fresh, shards=kept)


def check_finite(rows: Tensor, site: str, shard: ShardInfo, first_row: int, config: CacheConfig) -> None:
    """Stop on the first NaN, infinite or (in the stored dtype) overflowing value, naming where it is.

    One min/max pass decides (NaN propagates through both); the element-wise search runs only on failure.
    """
    limit = torch.finfo(store_dtype(config.dtype).torch_dtype).max
    low, high = torch.aminmax(rows)
    if bool(low >= -limit) and bool(high <= limit):
        return
    row, feature = (~(rows.abs() <= limit)).nonzero()[0].tolist()
    context, position = divmod(shard.first_context * config.context_len + first_row + row, config.context_len)
    value = rows[row, feature].item()
    hint = f" (overflows {config.dtype}; cache as float32 or bfloat16)" if math.isfinite(value) else ""
    raise NonFiniteActivationError(
        f"site {site}: activation {value} in shard {shard.index} at context {context}, position {position}, "
        f"feature {feature}{hint}"
    )


def shard_meta(contexts: Sequence[PackedContext], context_len: int) -> np.ndarray:
    """Token id, document index and position in context of every row of a shard."""
    meta = np.empty(len(contexts) * context_len, META_DTYPE)
    meta["token"] = np.concatenate([c.tokens for c in contexts])
    meta["doc"] = np.concatenate([c.doc for c in contexts])
    meta["pos"] = np.tile(np.arange(context_len, dtype=np.int32), len(contexts))
    return meta


def shard_groups(contexts: Iterable[PackedContext], config: CacheConfig,
                 todo: Sequence[ShardInfo]) -> Iterator[tuple[ShardInfo, list[PackedContext]]]:
    """The contexts of each shard in `todo`, reading the stream only as far as the last of them."""
    pending = {s.index: s for s in todo}
    group: list[PackedContext] = []
    for context in contexts if pending else ():
        index = context.index // config.contexts_per_shard
        if index in pending:
            group.append(context)
            if len(group) == pending[index].n_contexts:
                yield pending.pop(index), group
                group = []
                if not pending:
                    return
    if pending:
        raise _ran_out(config, min(pending))


def _ran_out(config: CacheConfig, shard_index: int) -> DataSourceError:
    return DataSourceError(f"the token source ran out before shard {shard_index} of {config.n_shards} "
                           f"({config.n_tokens} tokens asked for); ask for fewer tokens (the shards already "
                           "written are kept and reused) or add text")


def worker_from_env(worker: int | None, num_workers: int | None) -> tuple[int, int]:
    """(worker, num_workers) from the arguments, else torchrun's RANK / WORLD_SIZE, else (0, 1)."""
    if worker is None and num_workers is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if worker is None or num_workers is None:
        raise ValueError(f"give both worker and num_workers (got worker={worker}, num_workers={num_workers})")
    return worker, num_workers


def cache_activations(
    model_name: str,
    sites: "str | Iterable[HookSite | str]",
    n_tokens: int,
    dtype: str = "float32",
    out_dir: str | os.PathLike = "activations",
    source: "TextSource | str | None" = None,
    seed: int = 0,
    context_len: int = 128,
    batch_size: int = 32,
    shard_tokens: int = 131072,
    worker: int | None = None,
    num_workers: int | None = None,
    device: str = "cpu",
    model: HookedTransformer | None = None,
    progress: bool = True,
) -> CacheResult:
    """Cache activations of `sites` for `n_tokens` tokens of `source` into `out_dir/<site>/`.

    Re-running the same call resumes: shards the manifests already list are skipped. With several workers
    (arguments or torchrun's RANK/WORLD_SIZE) each writes its own shards and manifest part; call
    `merge_worker_manifests(out_dir)` once all have finished. `source` is a TextSource or a spec such as
    "bundled" or a path (see `saelab.data.source_from_spec`); `model` skips loading `model_name`.
    """
    if source is None:
        raise DataSourceError("no token source given; pass text files, a generator source or 'bundled'")
    if isinstance(source, str):
        source = source_from_spec(source)
    worker, num_workers = worker_from_env(worker, num_workers)
    config = CacheConfig(n_tokens, dtype, context_len, batch_size, shard_tokens, seed, worker, num_workers)
    if model is None:
        from saelab.models import load_model

        model = load_model(model_name, device=device)
    parsed = [site.validate(model.cfg) for site in parse_sites(sites)]
    if context_len > model.cfg.n_ctx:
        raise ValueError(f"context_len {context_len} exceeds the model's n_ctx {model.cfg.n_ctx}")
    description = source.describe()
    writers = [
        SiteWriter(Path(out_dir), site, new_manifest(model_name, site, model, config, description), config)
        for site in parsed
    ]
    done = set.intersection(*(w.completed() for w in writers))
    todo = [s for s in config.worker_shards() if s.index not in done]
    start = time.perf_counter()
    written = run_shards(model, parsed, config, iter_contexts(source, model.tokenizer, context_len, seed),
                         writers, todo, progress)
    for writer in writers:
        writer.save(complete=True)
    log.info("cached %d tokens of %d sites from %s in %.1fs", written, len(parsed), describe_short(source),
             time.perf_counter() - start)
    results = {str(w.site): w.result() for w in writers}
    return CacheResult(Path(out_dir), results, writers[0].manifest.n_tokens, written,
                       time.perf_counter() - start, num_workers == 1)


def run_shards(model: HookedTransformer, sites: list[HookSite], config: CacheConfig,
               contexts: Iterable[PackedContext], writers: list[SiteWriter], todo: list[ShardInfo],
               progress: bool) -> int:
    """Compute and write the shards in `todo`; returns the number of tokens written.

    Tokenising runs ahead on one helper thread and each shard's files are committed on another while the
    next shard is computed; a shard is listed in a manifest only after its files are committed.
    """
    bar = tqdm(total=sum(s.n_tokens for s in todo), unit="tok", unit_scale=True, disable=not progress,
               desc=f"caching {len(sites)} site(s)")
    commits, written = OrderedCommits(), 0
    try:
        for shard, group in prefetched(shard_groups(contexts, config, todo)):
            for writer in writers:
                writer.begin(shard)
            compute_shard(model, sites, config, shard, group, writers, bar)
            meta = shard_meta(group, config.context_len)
            commits.barrier()  # at most one shard is being committed while the next is computed
            for writer in writers:
                commits.submit(writer.finish, shard, meta)
            written += shard.n_tokens
    except BaseException:
        with suppress(Exception):  # the error to report is the one that stopped the loop
            commits.close()
        for writer in writers:
            writer.abort()
        raise
    finally:
        commits.close()
        bar.close()
    return written


def compute_shard(model: HookedTransformer, sites: list[HookSite], config: CacheConfig, shard: ShardInfo,
                  group: list[PackedContext], writers: list[SiteWriter], bar: tqdm) -> None:
    """Run the shard's contexts through the model in batches and hand each site's rows to its writer."""
    for offset in range(0, len(group), config.batch_size):
        batch = group[offset:offset + config.batch_size]
        tokens = torch.from_numpy(np.stack([c.tokens for c in batch])).to(model.cfg.device)
        with torch.inference_mode():
            acts = forward_sites(model, tokens, sites)
            for writer in writers:
                writer.write(acts[writer.site], shard, offset * config.context_len)
        bar.update(tokens.numel())


def merge_worker_manifests(out_dir: str | os.PathLike, sites: "Iterable[HookSite | str] | None" = None
                           ) -> dict[str, Manifest]:
    """Join the finished workers' manifest parts of each site into its final `manifest.json`."""
    out_dir = Path(out_dir)
    names = [str(s) for s in parse_sites(sites)] if sites is not None else sorted(
        p.name for p in out_dir.iterdir() if any(p.glob("manifest.worker-*.json")))
    if not names:
        raise ActivationStoreError(
            f"no worker manifests under {str(out_dir)!r}; run the caching workers first"
        )
    return {name: merge_site(out_dir, name) for name in names}


def merge_site(out_dir: Path, site: str) -> Manifest:
    paths = store_paths(out_dir, site)
    parts = [read_manifest(p) for p in sorted(paths.root.glob("manifest.worker-*.json"))]
    if not parts:
        raise ActivationStoreError(f"no worker manifests in {str(paths.root)!r}")
    num_workers = parts[0].worker[1]
    found = sorted(p.worker[0] for p in parts if p.worker[1] == num_workers)
    if found != list(range(num_workers)) or len(parts) != num_workers:
        raise ActivationStoreError(f"store {str(paths.root)!r} has worker manifests {found} of {num_workers} "
                                   "(and maybe parts of another worker count); run the missing workers")
    unfinished = [p.worker[0] for p in parts if not p.complete or p.identity() != parts[0].identity()]
    if unfinished:
        raise ActivationStoreError(f"store {str(paths.root)!r}: workers {unfinished} have not finished "
                                   "(or used other settings); re-run them, then merge")
    shards = tuple(sorted((s for p in parts for s in p.shards), key=lambda s: s.index))
    covered = sum(s.n_contexts for s in shards)
    if [s.index for s in shards] != list(range(len(shards))) or covered != parts[0].n_contexts:
        raise ActivationStoreError(f"store {str(paths.root)!r}: the workers' shards cover {covered} of "
                                   f"{parts[0].n_contexts} contexts; re-run the workers, then merge")
    merged = replace(parts[0], shards=shards, complete=True, worker=None)
    for shard in shards:
        check_shard(paths, merged, shard)
    write_manifest(paths.manifest, merged)
    return merged
