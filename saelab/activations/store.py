"""The on-disk activation store: per hook site, memory-mappable .npy shards and a JSON manifest.

Layout (built only by `store_paths`):

    OUT_DIR/<site>/manifest.json                    the merged, authoritative manifest
    OUT_DIR/<site>/manifest.worker-I-of-N.json      one per worker when caching runs as N workers
    OUT_DIR/<site>/shard-00000.acts.npy             [n_tokens, d] float32 | float16 | bfloat16 (as uint16 bits)
    OUT_DIR/<site>/shard-00000.tokens.npy           [n_tokens] records (token int32, doc int64, pos int32)

Every file is written to a temporary name, fsynced and renamed into place; a manifest lists a shard only
after both of its files are in place, so a killed run never leaves a shard the manifest counts.
"""

import json
import mmap
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from saelab.activations.sites import HookSite
from saelab.errors import SaelabError

FORMAT_VERSION = 1
META_DTYPE = np.dtype([("token", "<i4"), ("doc", "<i8"), ("pos", "<i4")])


class ActivationStoreError(SaelabError, ValueError):
    """An activation store that cannot be used as asked: missing or mismatched files, wrong width."""


class StoreDtype(NamedTuple):
    torch_dtype: torch.dtype
    numpy_dtype: np.dtype
    """How the values lie on disk (bfloat16 as its raw uint16 bits)."""


STORE_DTYPES: dict[str, StoreDtype] = {
    "float32": StoreDtype(torch.float32, np.dtype("<f4")),
    "float16": StoreDtype(torch.float16, np.dtype("<f2")),
    "bfloat16": StoreDtype(torch.bfloat16, np.dtype("<u2")),
}


def store_dtype(name: str) -> StoreDtype:
    if name not in STORE_DTYPES:
        raise ValueError(f"activation dtype {name!r} is not one of {', '.join(STORE_DTYPES)}")
    return STORE_DTYPES[name]


def to_disk_array(acts: Tensor, dtype: str) -> np.ndarray:
    """A CPU tensor already in `dtype` as the numpy array written to disk."""
    if dtype == "bfloat16":
        return acts.view(torch.int16).numpy().view(np.uint16)
    return acts.numpy()


def from_disk_array(array: np.ndarray, dtype: str) -> Tensor:
    """Rows read from disk (a private copy, never a view of a memory map) as a tensor in `dtype`."""
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class ShardPaths(NamedTuple):
    acts: Path
    meta: Path


@dataclass(frozen=True)
class StorePaths:
    """The files of one site's store."""

    root: Path
    """The site's directory, OUT_DIR/<site>."""

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def worker_manifest(self, worker: int, num_workers: int) -> Path:
        return self.root / f"manifest.worker-{worker}-of-{num_workers}.json"

    def shard(self, index: int) -> ShardPaths:
        return ShardPaths(self.root / f"shard-{index:05d}.acts.npy", self.root / f"shard-{index:05d}.tokens.npy")


def store_paths(out_dir: str | os.PathLike, site: HookSite | str) -> StorePaths:
    """The one function that names a store's files."""
    return StorePaths(Path(out_dir) / str(site))


@dataclass(frozen=True)
class ShardInfo:
    """One shard: contexts [first_context, first_context + n_contexts) of the packed token stream."""

    index: int
    first_context: int
    n_contexts: int
    n_tokens: int


@dataclass(frozen=True)
class Manifest:
    """What a site's store holds. Fields in `IDENTITY` must match for a run to resume into the store."""

    model: str
    site: str
    hook_name: str
    dtype: str
    d: int
    """Values per token (flattened feature shape)."""
    feature_shape: tuple[int, ...]
    context_len: int
    contexts_per_shard: int
    n_contexts: int
    """Contexts the caching run was asked for (the store is complete when its shards cover them)."""
    source: dict
    seed: int
    shards: tuple[ShardInfo, ...] = ()
    complete: bool = False
    worker: tuple[int, int] | None = None
    """(worker, num_workers) for a worker's partial manifest; None for the merged one."""
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    """Free-form notes (e.g. the token-source description for humans)."""

    IDENTITY = ("model", "site", "dtype", "d", "context_len", "contexts_per_shard", "source", "seed",
                "format_version")

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.shards)

    def identity(self) -> dict:
        return {key: _jsonable(getattr(self, key)) for key in self.IDENTITY}

    def to_json(self) -> str:
        payload = asdict(self)
        payload["n_tokens"] = self.n_tokens
        return json.dumps(_jsonable(payload), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        payload = json.loads(text)
        payload.pop("n_tokens", None)
        payload["shards"] = tuple(ShardInfo(**s) for s in payload["shards"])
        payload["feature_shape"] = tuple(payload["feature_shape"])
        payload["worker"] = tuple(payload["worker"]) if payload.get("worker") else None
        return cls(**payload)


def _jsonable(value):
    """Tuples as lists, recursively, so identities compare equal after a JSON round trip."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """The fixed temporary name a file is written under before it is renamed into place."""
    return path.with_name(path.name + ".tmp")


def commit_file(temp: Path, final: Path) -> None:
    """fsync `temp`, rename it to `final` and fsync the directory, so the rename survives a crash."""
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)
    fsync_dir(final.parent)


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Atomically replace the manifest at `path`."""
    temp = temp_path(path)
    temp.write_text(manifest.to_json())
    commit_file(temp, path)


def read_manifest(path: Path) -> Manifest:
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError:
        raise ActivationStoreError(f"no activation store manifest at {str(path)!r}; cache activations first") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ActivationStoreError(f"activation store manifest {str(path)!r} is unreadable ({exc}); "
                                   "re-run the caching command into a new directory") from None


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpyHeader(NamedTuple):
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    """Bytes before the data."""


def read_npy_header(path: Path) -> NpyHeader:
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version not in _HEADER_READERS:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran_order, dtype = _HEADER_READERS[version](handle)
        if fortran_order:
            raise ValueError("Fortran-ordered arrays are not shards")
        return NpyHeader(tuple(shape), np.dtype(dtype), handle.tell())


def check_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, what: str) -> None:
    """Raise ActivationStoreError unless `path` is an .npy file of exactly `shape` and `dtype` (size included)."""
    if not path.is_file():
        raise ActivationStoreError(f"{what}: file {str(path)!r} is missing; the manifest lists it")
    try:
        header = read_npy_header(path)
    except ValueError as exc:
        raise ActivationStoreError(f"{what}: {str(path)!r} is not a valid .npy file ({exc})") from None
    if header.shape != tuple(shape) or header.dtype != dtype:
        raise ActivationStoreError(f"{what}: {str(path)!r} holds {header.dtype} {header.shape}, the manifest "
                                   f"says {dtype} {tuple(shape)}")
    expected_size = header.offset + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size != expected_size:
        raise ActivationStoreError(f"{what}: {str(path)!r} is {path.stat().st_size} bytes, expected "
                                   f"{expected_size}; the file is truncated or was replaced")


class MappedArray:
    """A read-only memory map of an .npy file whose pages are released after each read, so reading a
    store much larger than memory does not grow the process's resident set."""

    def __init__(self, path: Path) -> None:
        header = read_npy_header(path)
        with open(path, "rb") as handle:
            self._mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        count = int(np.prod(header.shape))
        self.array = np.frombuffer(self._mmap, header.dtype, count, header.offset).reshape(header.shape)
        self._offset = header.offset
        self._row_bytes = header.dtype.itemsize * int(np.prod(header.shape[1:]))

    def __len__(self) -> int:
        return self.array.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """A private copy of rows [start, stop); their pages are dropped from this process afterwards."""
        rows = np.array(self.array[start:stop])
        self._release(start, stop)
        return rows

    def _release(self, start: int, stop: int) -> None:
        if not hasattr(self._mmap, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = (self._offset + start * self._row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        last = min(self._offset + stop * self._row_bytes, len(self._mmap))
        if last > first:
            self._mmap.madvise(mmap.MADV_DONTNEED, first, last - first)


def check_shard(paths: StorePaths, manifest: Manifest, shard: ShardInfo) -> None:
    files = paths.shard(shard.index)
    what = f"store {str(paths.root)!r} shard {shard.index}"
    check_npy(files.acts, (shard.n_tokens, manifest.d), store_dtype(manifest.dtype).numpy_dtype, what)
    check_npy(files.meta, (shard.n_tokens,), META_DTYPE, what)


class SiteStore:
    """A complete site store opened for reading: shards are memory-mapped, rows come back as tensors.

    Rows are addressed globally, 0..n_tokens-1 in shard order.
    """

    def __init__(self, paths: StorePaths, manifest: Manifest) -> None:
        self.paths = paths
        self.manifest = manifest
        self._acts = [MappedArray(paths.shard(s.index).acts) for s in manifest.shards]
        self._meta = [MappedArray(paths.shard(s.index).meta) for s in manifest.shards]
        self._starts = np.cumsum([0] + [s.n_tokens for s in manifest.shards])

    @property
    def site(self) -> HookSite:
        return HookSite.parse(self.manifest.site)

    @property
    def d(self) -> int:
        return self.manifest.d

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def shard_sizes(self) -> list[int]:
        return [s.n_tokens for s in self.manifest.shards]

    def rows(self, start: int, stop: int) -> Tensor:
        """Rows [start, stop) in the stored dtype, read across shard boundaries."""
        return from_disk_array(self._read(self._acts, start, stop), self.manifest.dtype)

    def meta(self, start: int, stop: int) -> np.ndarray:
        """Token id, document index and position in context of rows [start, stop)."""
        return self._read(self._meta, start, stop)

    def _read(self, arrays: list[MappedArray], start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.n_tokens:
            raise IndexError(f"rows [{start}, {stop}) outside store of {self.n_tokens} rows")
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pieces = []
        while start < stop:
            end = min(stop, int(self._starts[first + 1]))
            pieces.append(arrays[first].read(start - int(self._starts[first]), end - int(self._starts[first])))
            start, first = end, first + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def all_rows(self) -> Float[Tensor, "n_tokens d"]:
        """Every row in order, as float32 (for small stores and tests)."""
        return self.rows(0, self.n_tokens).float()


def open_site_store(
    out_dir: str | os.PathLike, site: HookSite | str, expect_d: int | None = None, model: str | None = None
) -> SiteStore:
    """Open a complete site store after checking its manifest against its shard files.

    `expect_d` (and `model`) make a store of the wrong width (or model) an error instead of a silent misuse.
    Nothing is ever deleted or repaired here.
    """
    paths = store_paths(out_dir, site)
    if not paths.manifest.exists() and any(paths.root.glob("manifest.worker-*.json")):
        raise ActivationStoreError(f"store {str(paths.root)!r} holds only workers' manifests; merge them first "
                                   "(merge_worker_manifests, or saelab cache --merge)")
    manifest = read_manifest(paths.manifest)
    _check_openable(paths, manifest, expect_d, model)
    for shard in manifest.shards:
        check_shard(paths, manifest, shard)
    return SiteStore(paths, manifest)


def _check_openable(paths: StorePaths, manifest: Manifest, expect_d: int | None, model: str | None) -> None:
    where = str(paths.root)
    if manifest.format_version != FORMAT_VERSION:
        raise ActivationStoreError(f"store {where!r} has format version {manifest.format_version}; this saelab "
                                   f"reads version {FORMAT_VERSION}")
    if not manifest.complete:
        raise ActivationStoreError(f"store {where!r} is incomplete ({len(manifest.shards)} shards, "
                                   f"{manifest.n_tokens} tokens); re-run the caching command to finish it")
    if expect_d is not None and manifest.d != expect_d:
        raise ActivationStoreError(f"store {where!r} holds site {manifest.site} with width d={manifest.d}, "
                                   f"but the reader expects d={expect_d}")
    if model is not None and manifest.model != model:
        raise ActivationStoreError(f"store {where!r} was cached from model {manifest.model!r}, not {model!r}")


def write_random_store(out_dir: str | os.PathLike, site: str, n_tokens: int, d: int, shard_tokens: int,
                       dtype: str = "float16", seed: int = 0) -> SiteStore:
    """A complete store of standard-normal activations laid out exactly as caching writes it (for benchmarks and
    tests of reading; written chunk by chunk, so its size is not bounded by memory)."""
    if n_tokens % 128 or shard_tokens % 128:
        raise ValueError(f"n_tokens {n_tokens} and shard_tokens {shard_tokens} must be multiples of 128 (one context)")
    paths = store_paths(out_dir, site)
    paths.root.mkdir(parents=True, exist_ok=True)
    rng, numpy_dtype = np.random.default_rng(seed), store_dtype(dtype).numpy_dtype
    shards = []
    for index, first in enumerate(range(0, n_tokens, shard_tokens)):
        n = min(shard_tokens, n_tokens - first)
        acts = np.lib.format.open_memmap(paths.shard(index).acts, "w+", numpy_dtype, (n, d))
        for row in range(0, n, 8192):
            block = torch.from_numpy(rng.standard_normal((min(8192, n - row), d), dtype=np.float32))
            acts[row:row + 8192] = to_disk_array(block.to(store_dtype(dtype).torch_dtype), dtype)
        acts.flush()
        del acts
        np.save(paths.shard(index).meta, np.zeros(n, META_DTYPE))
        shards.append(ShardInfo(index, first // 128, n // 128, n))
    write_manifest(paths.manifest, Manifest(
        model="synthetic", site=site, hook_name="-", dtype=dtype, d=d, feature_shape=(d,), context_len=128,
        contexts_per_shard=shard_tokens // 128, n_contexts=n_tokens // 128, source={"kind": "synthetic"},
        seed=seed, shards=tuple(shards), complete=True))
    return open_site_store(out_dir, site)
