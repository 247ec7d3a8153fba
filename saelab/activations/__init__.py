"""Activations: typed hook sites, position selection, one-pass collection, the on-disk store and batches."""

from saelab.activations.batches import BatchConfig, ShuffledBatches, store_batches, stream_batches
from saelab.activations.cache import (
    CacheConfig,
    CacheResult,
    NonFiniteActivationError,
    SiteCacheResult,
    cache_activations,
    merge_worker_manifests,
    worker_from_env,
)
from saelab.activations.collect import collect, forward_sites
from saelab.activations.positions import Positions
from saelab.activations.sites import (
    SITE_KINDS,
    HookSite,
    SiteKind,
    SitePair,
    get_site_kind,
    parse_site_pairs,
    parse_sites,
    register_site_kind,
    sites_of_pairs,
    stop_layer,
)
from saelab.activations.store import (
    STORE_DTYPES,
    ActivationStoreError,
    Manifest,
    ShardInfo,
    SiteStore,
    StorePaths,
    open_site_store,
    read_manifest,
    store_paths,
)

__all__ = [
    "SITE_KINDS",
    "STORE_DTYPES",
    "ActivationStoreError",
    "BatchConfig",
    "CacheConfig",
    "CacheResult",
    "HookSite",
    "Manifest",
    "NonFiniteActivationError",
    "Positions",
    "ShardInfo",
    "ShuffledBatches",
    "SiteCacheResult",
    "SiteKind",
    "SitePair",
    "SiteStore",
    "StorePaths",
    "cache_activations",
    "collect",
    "forward_sites",
    "get_site_kind",
    "merge_worker_manifests",
    "open_site_store",
    "parse_site_pairs",
    "parse_sites",
    "read_manifest",
    "register_site_kind",
    "sites_of_pairs",
    "stop_layer",
    "store_batches",
    "store_paths",
    "stream_batches",
    "worker_from_env",
]
