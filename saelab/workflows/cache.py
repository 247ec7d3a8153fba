"""Cache activations in a workspace: shards under `activations/<model>/`, each finished site recorded in the
store's `cached_sites`; several workers split the shards and the last one to finish merges their manifests."""

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from saelab.activations.cache import CacheConfig
from saelab.db import ResultsStore
from saelab.workflows.storage import cached_site_rows
from saelab.workspace import Workspace

if TYPE_CHECKING:
    from saelab.activations import CacheResult, SiteCacheResult
    from saelab.activations.store import Manifest


@dataclass(frozen=True)
class CacheRequest:
    """What `saelab cache` caches."""

    model: str
    """Model name or directory."""
    sites: str
    """Comma-separated hook sites, e.g. "1.resid_post,1.attn_z"."""
    n_tokens: int
    """Tokens to cache (rounded up to whole contexts)."""
    dtype: str = "float32"
    """Stored dtype: float32, float16 or bfloat16."""
    source: str = "bundled"
    """Token source (see `saelab.data.source_from_spec`)."""
    context_len: int = 128
    """Tokens per context, BOS included."""
    batch_size: int = 32
    """Contexts per forward pass."""
    shard_tokens: int = 131072
    """Tokens per shard (the unit a killed run resumes from)."""
    seed: int = 0
    """Seed of the token order."""
    worker: int | None = None
    """This worker's index (with num_workers); None: one worker, or torchrun's RANK."""
    num_workers: int | None = None
    """Independent workers splitting the shards."""

    def __post_init__(self) -> None:  # the layout's own checks, before anything is loaded or written
        CacheConfig(self.n_tokens, self.dtype, self.context_len, self.batch_size, self.shard_tokens,
                    self.seed)


class CacheOutcome(NamedTuple):
    run_id: str
    result: "CacheResult"
    merged: bool
    """True when this worker was the last to finish and merged every worker's manifests."""


def cache_in_workspace(workspace: Workspace, request: CacheRequest, model=None, progress: bool = True
                       ) -> CacheOutcome:
    """Cache `request` into the workspace (resuming what a killed run left) and record the run and its sites.
    `model`: request.model already loaded. Everything the user typed is checked before the workspace is
    touched."""
    from saelab.activations import cache_activations
    from saelab.data.sources import checked_source

    source = checked_source(request.source)
    model = checked_model(request.model, request.sites, model)
    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run("cache", name=request.model, config=asdict(request))
    try:
        result = cache_activations(
            request.model, request.sites, request.n_tokens, dtype=request.dtype,
            out_dir=workspace.activations_for(request.model), source=source, seed=request.seed,
            context_len=request.context_len, batch_size=request.batch_size, shard_tokens=request.shard_tokens,
            worker=request.worker, num_workers=request.num_workers, model=model, progress=progress,
        )
    except Exception as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    merged = None if result.complete else _merge_when_all_finished(result.out_dir, request.sites)
    sites = list(result.sites.values()) if result.complete else merged
    if sites is not None:
        store.insert("cached_sites", cached_site_rows(workspace, run_id, request.model, sites))
    note = worker_note(result, merged is not None)
    store.finish_run(run_id, "done", f"{result.n_tokens} tokens, {len(result.sites)} sites{note}")
    return CacheOutcome(run_id, result, merged is not None)


def checked_model(name: str, sites: str, model=None):
    """The model `name` (loaded unless given), after checking that it has every one of `sites`."""
    from saelab.activations import parse_sites
    from saelab.models import load_model

    model = model if model is not None else load_model(name)
    for site in parse_sites(sites):
        site.validate(model.cfg)
    return model


def worker_note(result: "CacheResult", merged: bool) -> str:
    """What became of a worker's part: "" for a single worker's run."""
    if result.complete:
        return ""
    if merged:
        return " (merged: every worker has finished)"
    return " (this worker's part; the last worker to finish merges them)"


class MergeOutcome(NamedTuple):
    run_id: str
    sites: list[str]


def merge_in_workspace(workspace: Workspace, model: str, sites: str) -> MergeOutcome:
    """Join the finished workers' manifests of `sites` (comma-separated) and record the merged sites."""
    from saelab.activations.cache import merge_worker_manifests

    checked_model(model, sites)
    merged = merged_results(workspace.activations_for(model),
                            merge_worker_manifests(workspace.activations_for(model), sites))
    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run("cache", name=model, config={"merge": True, "sites": sites, "model": model})
    store.insert("cached_sites", cached_site_rows(workspace, run_id, model, merged))
    store.finish_run(run_id, "done", f"merged {len(merged)} sites")
    return MergeOutcome(run_id, [site.site for site in merged])


def merged_results(out_dir: Path, merged: "dict[str, Manifest]") -> "list[SiteCacheResult]":
    """Each merged site's manifest as the SiteCacheResult a single worker's run returns."""
    from saelab.activations import SiteCacheResult
    from saelab.activations.store import store_paths

    return [SiteCacheResult(m.site, m.hook_name, store_paths(out_dir, m.site).manifest, m.n_tokens, m.d,
                            m.dtype, m.feature_shape) for m in merged.values()]


def _merge_when_all_finished(out_dir: Path, sites: str) -> "list[SiteCacheResult] | None":
    """The merged sites if every worker has finished, else None (another worker is still running)."""
    from saelab.activations import ActivationStoreError
    from saelab.activations.cache import merge_worker_manifests

    try:
        return merged_results(out_dir, merge_worker_manifests(out_dir, sites))
    except ActivationStoreError:
        return None
