"""Shuffled training batches through a mixing buffer, from stores on disk or straight from the model.

The batch sequence is a pure function of the seed: the data are cut into windows of at most
`buffer_tokens` rows, each window is loaded whole and its rows are permuted by a generator seeded with
(seed, window). A position in the sequence is (window, offset), which is all `state_dict()` needs to
resume exactly. Peak memory is one window (per site), not the store.

From a store, window w of epoch e holds `chunks_per_buffer` chunks of contiguous rows drawn from a
permutation of all chunks of the store (seeded by (seed, e)), so each window mixes distant parts of it.
From the model, window w holds the next `buffer_tokens` tokens of the token stream.
"""

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.collect import forward_sites
from saelab.activations.sites import HookSite, parse_sites
from saelab.activations.store import ActivationStoreError, SiteStore, open_site_store
from saelab.data import PackedContext, TextSource, iter_contexts

Batch = dict[str, Float[Tensor, "batch d"]]


@dataclass(frozen=True)
class BatchConfig:
    """How training batches are drawn."""

    batch_size: int
    """Token rows per batch."""
    buffer_tokens: int = 262144
    """Rows in the mixing buffer (per site); bounds memory. At least batch_size."""
    chunks_per_buffer: int = 32
    """Contiguous chunks a store window is assembled from (more: better mixing, smaller reads)."""
    seed: int = 0
    """Seed of the batch order."""
    epochs: int | None = None
    """Passes over a store before stopping (None: forever). Streams stop when their tokens run out."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "buffer_tokens", "chunks_per_buffer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} {value!r} must be a positive integer")
        if self.buffer_tokens < self.batch_size:
            raise ValueError(
                f"buffer_tokens {self.buffer_tokens} must be at least batch_size {self.batch_size}"
            )
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs {self.epochs} must be positive or None")


Permutation = Callable[[int], Tensor]
"""n -> the window's row order, a permutation of range(n)."""


@runtime_checkable
class WindowSource(Protocol):
    """Loads window w deterministically, rows already in the order `permutation(n)` gives
    (site text -> float32 [n, d]), or None past the end."""

    def load(self, window: int, permutation: Permutation) -> dict[str, Tensor] | None: ...

    def describe(self) -> dict: ...


class ShuffledBatches:
    """An iterator of batches (site text -> Float[Tensor, "batch d"]) with `state_dict` for exact resume.

    Batches are slices of the current window (the last batch of a window is a copy); changing one in
    place touches no other batch. Peak memory is about one window per site (float32) plus a chunk.
    """

    def __init__(
        self, windows: WindowSource, config: BatchConfig, device: str | torch.device = "cpu"
    ) -> None:
        self.windows = windows
        self.config = config
        self.device = torch.device(device)
        self._window, self._offset = 0, 0
        self._data: dict[str, Tensor] | None = None
        self._rows = 0

    def __iter__(self) -> "ShuffledBatches":
        return self

    def __next__(self) -> Batch:
        pieces: list[dict[str, Tensor]] = []
        need = self.config.batch_size
        while need:
            if not self._ensure_window():
                raise StopIteration
            take = min(need, self._rows - self._offset)
            piece = {site: data[self._offset:self._offset + take] for site, data in self._data.items()}
            if self._offset + take == self._rows:  # a copy, so a batch kept by the caller frees the window
                piece = {site: rows.clone() for site, rows in piece.items()}
            pieces.append(piece)
            self._offset += take
            need -= take
        if len(pieces) == 1:
            return {site: rows.to(self.device) for site, rows in pieces[0].items()}
        return {site: torch.cat([p[site] for p in pieces]).to(self.device) for site in pieces[0]}

    def _ensure_window(self) -> bool:
        """Load the (shuffled) window holding the next row; False at the end of the data."""
        while self._data is None or self._offset >= self._rows:
            if self._data is not None:
                self._window, self._offset, self._data = self._window + 1, 0, None
            data = self.windows.load(self._window, self._permutation(self._window))
            if data is None:
                return False
            self._data, self._rows = data, next(iter(data.values())).shape[0]
        return True

    def _permutation(self, window: int) -> Permutation:
        seed = _mix(self.config.seed, window)
        return lambda n: torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def state_dict(self) -> dict:
        """The position in the batch sequence (small, JSON-able)."""
        return {"window": self._window, "offset": self._offset, "source": self.windows.describe(),
                "batch_size": self.config.batch_size, "buffer_tokens": self.config.buffer_tokens,
                "chunks_per_buffer": self.config.chunks_per_buffer, "seed": self.config.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()` of an iterator over the same data with the same settings."""
        mine = self.state_dict()
        changed = [k for k in mine if k not in ("window", "offset") and state.get(k) != mine[k]]
        if changed:
            raise ValueError(
                f"batch state was saved with different {', '.join(changed)}; resume with the same "
                "data and batch settings"
            )
        self._window, self._offset, self._data = int(state["window"]), int(state["offset"]), None
        if self._offset and self._ensure_window() is False:
            raise ValueError(f"batch state points past the end of the data (window {self._window})")


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class StoreWindows:
    """Windows of chunks drawn across the shards of one or more site stores with the same token rows."""

    def __init__(self, stores: Sequence[SiteStore], config: BatchConfig) -> None:
        check_same_rows(stores)
        self.stores = list(stores)
        self.config = config
        self.n_rows = stores[0].n_tokens
        self.chunk_rows = max(1, config.buffer_tokens // config.chunks_per_buffer)
        self.n_chunks = math.ceil(self.n_rows / self.chunk_rows)
        self.chunks_per_window = max(1, config.buffer_tokens // self.chunk_rows)
        self.windows_per_epoch = math.ceil(self.n_chunks / self.chunks_per_window)
        self._epoch_order: tuple[int, np.ndarray] | None = None

    def load(self, window: int, permutation: Permutation) -> dict[str, Tensor] | None:
        epoch, within = divmod(window, self.windows_per_epoch)
        if self.config.epochs is not None and epoch >= self.config.epochs:
            return None
        chunks = self._chunk_order(epoch)[
            within * self.chunks_per_window : (within + 1) * self.chunks_per_window
        ]
        spans = [(int(c) * self.chunk_rows, min((int(c) + 1) * self.chunk_rows, self.n_rows)) for c in chunks]
        places = torch.argsort(permutation(sum(b - a for a, b in spans)))
        return {str(store.site): _scatter_rows(store, spans, places) for store in self.stores}

    def _chunk_order(self, epoch: int) -> np.ndarray:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            rng = np.random.default_rng(_mix(self.config.seed, epoch, 1))
            self._epoch_order = (epoch, rng.permutation(self.n_chunks))
        return self._epoch_order[1]

    def describe(self) -> dict:
        return {"kind": "store", "sites": [str(s.site) for s in self.stores], "n_tokens": self.n_rows,
                "model": self.stores[0].manifest.model, "source": self.stores[0].manifest.source}


def _scatter_rows(store: SiteStore, spans: Sequence[tuple[int, int]], places: Tensor) -> Float[Tensor, "n d"]:
    """The rows of `spans`, the i-th of them at `places[i]`, as one float32 tensor filled chunk by chunk
    (memory: the result plus one chunk)."""
    out = torch.empty(len(places), store.d, dtype=torch.float32)
    row = 0
    for start, stop in spans:
        out.index_copy_(0, places[row:row + stop - start], store.rows(start, stop).float())
        row += stop - start
    return out


def check_same_rows(stores: Sequence[SiteStore]) -> None:
    """Stores batched together must hold the same token rows (same model, source, seed and shards)."""
    if not stores:
        raise ValueError("no stores given")
    first = stores[0].manifest
    for store in stores[1:]:
        m = store.manifest
        same = (m.model, m.source, m.seed, m.context_len, m.shards) == (
            first.model, first.source, first.seed, first.context_len, first.shards)
        if not same:
            raise ActivationStoreError(
                f"stores {first.site} and {m.site} hold different token rows (model, "
                "source, seed or shards differ); cache them in one run to batch them together"
            )


def store_batches(out_dir, sites: "str | Iterable[HookSite | str]", config: BatchConfig,
                  expect_d: dict[str, int] | None = None, device: str = "cpu") -> ShuffledBatches:
    """Shuffled batches from cached stores of `sites` under `out_dir` (all with the same token rows).

    `expect_d` maps site text -> the width the consumer expects; a store of another width is an error.
    """
    parsed = parse_sites(sites)
    expect_d = expect_d or {}
    stores = [open_site_store(out_dir, site, expect_d=expect_d.get(str(site))) for site in parsed]
    return ShuffledBatches(StoreWindows(stores, config), config, device)


class StreamWindows:
    """Windows of consecutive contexts run through the model on demand (no disk)."""

    def __init__(
        self,
        model: HookedTransformer,
        sites: Sequence[HookSite],
        source: TextSource,
        context_len: int,
        config: BatchConfig,
        model_batch_size: int = 32,
        n_tokens: int | None = None,
        source_seed: int = 0,
    ) -> None:
        self.model, self.sites, self.source = model, list(sites), source
        self.context_len, self.config, self.model_batch_size = context_len, config, model_batch_size
        self.source_seed = source_seed
        self.contexts_per_window = max(1, config.buffer_tokens // context_len)
        self.max_contexts = None if n_tokens is None else math.ceil(n_tokens / context_len)
        self._stream: Iterator[PackedContext] | None = None
        self._next_context = 0

    def load(self, window: int, permutation: Permutation) -> dict[str, Tensor] | None:
        contexts = self._contexts(window * self.contexts_per_window, self.contexts_per_window)
        if not contexts:
            return None
        tokens = torch.from_numpy(np.stack([c.tokens for c in contexts]))
        places = torch.argsort(permutation(tokens.numel()))
        out = {str(s): torch.empty(tokens.numel(), s.width(self.model.cfg)) for s in self.sites}
        row = 0
        for batch in tokens.split(self.model_batch_size):
            with torch.inference_mode():
                acts = forward_sites(self.model, batch.to(self.model.cfg.device), self.sites)
                for site, act in acts.items():
                    rows = act.reshape(batch.numel(), -1).float().cpu()
                    out[str(site)].index_copy_(0, places[row:row + batch.numel()], rows)
            row += batch.numel()
        return out

    def _contexts(self, first: int, count: int) -> list[PackedContext]:
        """Contexts [first, first + count) of the stream (restarting it only when asked to go back)."""
        if self.max_contexts is not None:
            count = min(count, self.max_contexts - first)
        if count <= 0:
            return []
        if self._stream is None or first < self._next_context:
            self._stream = iter_contexts(
                self.source, self.model.tokenizer, self.context_len, self.source_seed
            )
            self._next_context = 0
        out = []
        for context in self._stream:
            self._next_context = context.index + 1
            if context.index >= first:
                out.append(context)
            if len(out) == count:
                break
        return out

    def describe(self) -> dict:
        return {
            "kind": "stream",
            "sites": [str(s) for s in self.sites],
            "source": self.source.describe(),
            "source_seed": self.source_seed,
            "context_len": self.context_len,
            "n_tokens_limit": self.max_contexts,
        }


def stream_batches(model: HookedTransformer, sites: "str | Iterable[HookSite | str]", source: TextSource,
                   config: BatchConfig, context_len: int = 128, model_batch_size: int = 32,
                   n_tokens: int | None = None, source_seed: int = 0) -> ShuffledBatches:
    """Shuffled batches computed from the model as they are needed, without touching disk."""
    parsed = [site.validate(model.cfg) for site in parse_sites(sites)]
    if context_len > model.cfg.n_ctx:
        raise ValueError(f"context_len {context_len} exceeds the model's n_ctx {model.cfg.n_ctx}")
    windows = StreamWindows(
        model, parsed, source, context_len, config, model_batch_size, n_tokens, source_seed
    )
    return ShuffledBatches(windows, config, model.cfg.device)
