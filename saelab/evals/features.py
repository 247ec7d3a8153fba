"""Feature dashboards: per-latent statistics and examples over a token corpus, computed in one streaming pass.

For every latent: density (fraction of tokens it fires on), mean activation *when firing*, max activation, a
histogram of its non-zero activations (fixed log-spaced bins, so batches add up without a second pass), the
top-`n_top` activating tokens with ±`window` tokens of context and the latent's activation on each (at most one
per document: a document's best token), examples from quantile groups of its non-zero activation distribution,
top and bottom logit effects, and (attn_z SAEs) weight-based head attribution.

Streaming: each batch's non-zero latent entries that beat their latent's current k-th best are ranked per
latent by one segmented sort (sort by score, then stably by latent); the best k per latent form a candidate
buffer, merged with the running buffer by `torch.topk` over the concatenation (only for latents that have
candidates). Context windows are gathered for the candidates while their batch is in memory. Quantile
examples come from a uniform random sample of each latent's firing tokens (random priority keys kept by the
same top-k machinery). With document ids, a batch's entries are first cut to the best per (latent, document)
and a merge drops the weaker of two entries from one document, so the top list holds each document once.
No Python loop runs over latents or tokens while streaming.

Quantile groups have exact ranges and counts (not exactly equal counts) without keeping every activation: fine log-spaced bins (`quantile_bins_per_decade`;
exact counts) are grouped into `n_quantiles` runs of consecutive bins, bin b joining group ⌊n · (firing tokens in bins below b) / all
firing tokens⌋, so each group starts where the cumulative share passes q/n and holds about 1/n of the
activations (a bin is never split, so a bin holding more than 1/n leaves a group empty). Per-bin minima and
maxima are streamed too, so each group's range [lowest, highest activation in it] and count are those of all
the latent's firing tokens, not of a sample. Keeping every activation for exact equal-count quantiles would
cost 8 bytes per firing token (8 GB for 1M tokens at L0 1,000); this costs 16 bytes per latent and bin
(8 KB per latent at the default 64 bins per decade over 8 decades).

Logit effects follow the direct path: the latent's decoder direction mapped into the residual stream (through
W_O for attn_z, W_out for mlp_post, the sum over heads for head_result), through the final LayerNorm taken as
linear (centred and scaled by its weight, the per-token normalisation ignored, as dashboards do), then W_U.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.evals.attention import head_attribution
from saelab.evals.core import keep_mask
from saelab.evals.splice import capturing_hook, sae_site, sae_target_site
from saelab.sae import SAE


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboards collect."""

    n_top: int = 20
    """Top-activating examples kept per latent."""
    window: int = 8
    """Context tokens kept on each side of an example's token."""
    n_quantiles: int = 5
    """Groups the firing-activation distribution is split into for quantile examples."""
    per_quantile: int = 5
    """Examples shown per quantile group."""
    sample_size: int = 50
    """Firing tokens sampled uniformly per latent to draw the quantile examples from."""
    bins_per_decade: int = 8
    """Histogram resolution (log-spaced bins)."""
    quantile_bins_per_decade: int = 64
    """Resolution of the bins the quantile groups are made of (finer than the histogram's, so the groups come
    out near equal: on saelab-tiny's 2.resid_post TopK SAE over 65k tokens the largest of 5 groups holds a median
    23% of a latent's firing tokens at 64 per decade, 39% at 8). Costs 16 bytes per latent and bin."""
    histogram_range: tuple[float, float] = (1e-4, 1e4)
    """Activations outside this range fall into the first / last bin."""
    n_logits: int = 10
    """Top and bottom logit effects kept per latent."""
    batch_size: int = 16
    """Contexts per forward pass."""
    skip_bos: bool = True
    """Treat activations on BOS tokens as zero (BOS activations are outliers that would crowd every top list)."""
    seed: int = 0
    """Seed of the quantile sampling."""

    def __post_init__(self) -> None:
        for name in ("n_top", "n_quantiles", "per_quantile", "sample_size", "bins_per_decade",
                     "quantile_bins_per_decade", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.window < 0 or self.n_logits < 0:
            raise ValueError(f"window and n_logits must be ≥ 0, got {self.window}, {self.n_logits}")
        low, high = self.histogram_range
        if not 0 < low < high:
            raise ValueError(f"histogram_range must be 0 < low < high, got {self.histogram_range}")

    @property
    def width(self) -> int:
        return 2 * self.window + 1

    def histogram_edges(self) -> Float[Tensor, " n_bins_plus_1"]:
        return self._log_edges(self.bins_per_decade)

    def quantile_edges(self) -> Float[Tensor, " n_bins_plus_1"]:
        return self._log_edges(self.quantile_bins_per_decade)

    def _log_edges(self, per_decade: int) -> Float[Tensor, " n_bins_plus_1"]:
        low, high = (math.log10(v) for v in self.histogram_range)
        n_bins = max(1, round((high - low) * per_decade))
        return torch.logspace(low, high, n_bins + 1, dtype=torch.float64)


class ExampleBuffer(NamedTuple):
    """Per latent, the examples kept so far, best `score` first along the second axis."""

    score: Float[Tensor, "d_sae n"]
    """What the buffer ranks by: the activation (top examples) or a random key (quantile sample; −1 = empty)."""
    activation: Float[Tensor, "d_sae n"]
    token_index: Int[Tensor, "d_sae n"]
    """Flat index into the [n_contexts, pos] token set."""
    window: Float[Tensor, "d_sae n width"]
    """The latent's activation on the tokens index − window .. index + window (0 outside the context)."""


class BinStatistics(NamedTuple):
    """Non-zero activations per latent and log-spaced bin."""

    count: Int[Tensor, "d_sae n_bins"]
    low: Float[Tensor, "d_sae n_bins"]
    """Smallest activation in the bin (+inf where empty)."""
    high: Float[Tensor, "d_sae n_bins"]
    """Largest activation in the bin (0 where empty)."""


class DashboardState(NamedTuple):
    """Running sums and buffers of the streaming pass."""

    n_tokens: int
    fire_counts: Int[Tensor, " d_sae"]
    act_sum: Float[Tensor, " d_sae"]
    act_max: Float[Tensor, " d_sae"]
    histogram: Int[Tensor, "d_sae n_bins"]
    quantile_bins: BinStatistics
    """Count, smallest and largest activation per latent in the (finer) quantile bins."""
    top: ExampleBuffer
    sample: ExampleBuffer


class QuantileGroups(NamedTuple):
    """Each latent's firing activations in `n_quantiles` groups of consecutive quantile bins (see the module
    docstring); all statistics are over every firing token, weakest group first."""

    edges: Float[Tensor, " n_bins_plus_1"]
    """The quantile bins' edges."""
    bin_group: Int[Tensor, "d_sae n_bins"]
    """The group of each bin (−1 for empty bins)."""
    count: Int[Tensor, "d_sae n_quantiles"]
    """Firing tokens in each group (0: the group is empty)."""
    low: Float[Tensor, "d_sae n_quantiles"]
    """Smallest activation in the group (+inf when empty)."""
    high: Float[Tensor, "d_sae n_quantiles"]
    """Largest activation in the group (0 when empty)."""


class LogitEffects(NamedTuple):
    """Top and bottom direct logit effects per latent, largest magnitude first."""

    top_values: Float[Tensor, "d_sae n"]
    top_ids: Int[Tensor, "d_sae n"]
    bottom_values: Float[Tensor, "d_sae n"]
    bottom_ids: Int[Tensor, "d_sae n"]


class FeatureDashboards(NamedTuple):
    """Everything the dashboards show, as tensors; `feature_rows` / `example_rows` turn it into store rows."""

    n_tokens: int
    density: Float[Tensor, " d_sae"]
    mean_act: Float[Tensor, " d_sae"]
    """Mean activation over the tokens the latent fires on (NaN for latents that never fire)."""
    max_act: Float[Tensor, " d_sae"]
    histogram_edges: Float[Tensor, " n_bins_plus_1"]
    histogram: Int[Tensor, "d_sae n_bins"]
    top: ExampleBuffer
    """At most one example per document (per token when no document ids were given)."""
    sample: ExampleBuffer
    quantiles: QuantileGroups
    tokens: Int[Tensor, "n_contexts pos"]
    documents: Int[Tensor, "n_contexts pos"] | None
    """The document each token comes from (None: not known)."""
    logits: LogitEffects | None
    logits_skipped: str
    """Why there are no logit effects ("" when there are)."""
    head_attribution: Float[Tensor, "d_sae n_heads"] | None


# ---------------------------------------------------------------- streaming top-k


def empty_buffer(d_sae: int, size: int, width: int) -> ExampleBuffer:
    return ExampleBuffer(
        torch.full((d_sae, size), -1.0), torch.zeros(d_sae, size), torch.zeros(d_sae, size, dtype=torch.long),
        torch.zeros(d_sae, size, width),
    )


class Firing(NamedTuple):
    """The non-zero entries of one batch's latents [n_tokens, d_sae], token-major."""

    token: Int[Tensor, " nnz"]
    latent: Int[Tensor, " nnz"]
    activation: Float[Tensor, " nnz"]


def firing_entries(latents: Float[Tensor, "n_tokens d_sae"]) -> Firing:
    token, latent = latents.nonzero(as_tuple=True)
    return Firing(token, latent, latents[token, latent])


def windows(
    latents: Float[Tensor, "n_tokens d_sae"], token: Int[Tensor, " m"], latent: Int[Tensor, " m"],
    context_len: int, window: int,
) -> Float[Tensor, "m width"]:
    """Each (token, latent)'s activations on the tokens around it (0 where the window leaves the context).
    Batches hold whole contexts, so a token's position in its context is token % context_len."""
    offsets = torch.arange(-window, window + 1, device=token.device)
    position = (token % context_len)[:, None] + offsets
    inside = (position >= 0) & (position < context_len)
    neighbour = (token[:, None] + offsets).clamp(0, latents.shape[0] - 1)
    return latents[neighbour, latent[:, None].expand_as(neighbour)] * inside


def segmented_top(latent: Int[Tensor, " m"], score: Float[Tensor, " m"], d_sae: int, k: int) -> tuple[Tensor, Tensor]:
    """The entries among m that rank in the top k of their latent by score: (entry ids, their rank)."""
    by_score = score.argsort(descending=True, stable=True)
    grouped = by_score[latent[by_score].argsort(stable=True)]
    counts = torch.bincount(latent, minlength=d_sae)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(grouped.numel(), device=latent.device) - starts[latent[grouped]]
    keep = rank < k
    return grouped[keep], rank[keep]


def best_per_document(
    latent: Int[Tensor, " m"], document: Int[Tensor, " m"], score: Float[Tensor, " m"]
) -> Int[Tensor, " kept"]:
    """The entries among m that score best within their (latent, document) pair (the first on ties)."""
    if latent.numel() == 0:
        return latent
    document = document - document.min()
    _, pair = torch.unique(latent * (int(document.max()) + 1) + document, return_inverse=True)
    chosen, _ = segmented_top(pair, score, int(pair.max()) + 1, 1)
    return chosen


def candidates(
    buffer: ExampleBuffer, latents: Float[Tensor, "n_tokens d_sae"], entries: Firing, score: Float[Tensor, " nnz"],
    offset: int, context_len: int, window: int, documents: Int[Tensor, " n_tokens"] | None = None,
) -> ExampleBuffer:
    """A buffer-shaped set of this batch's best entries per latent (empty slots score −1); with the batch's
    `documents`, only each document's best entry per latent. Only entries that beat the latent's current k-th
    best are ranked, so late in a stream few are touched."""
    d_sae, k = buffer.score.shape
    beats = (score > buffer.score[entries.latent, -1]).nonzero().squeeze(1)
    if documents is not None:
        beats = beats[best_per_document(entries.latent[beats], documents[entries.token[beats]], score[beats])]
    chosen, rank = segmented_top(entries.latent[beats], score[beats], d_sae, k)
    chosen = beats[chosen]
    token, latent = entries.token[chosen], entries.latent[chosen]
    new = empty_buffer(d_sae, k, buffer.window.shape[2])
    new.score[latent, rank] = score[chosen]
    new.activation[latent, rank] = entries.activation[chosen]
    new.token_index[latent, rank] = token + offset
    new.window[latent, rank] = windows(latents, token, latent, context_len, window)
    return new


def drop_repeated_documents(joined: ExampleBuffer, documents: Int[Tensor, " n_tokens"]) -> ExampleBuffer:
    """Empty (score −1, activation 0) every entry of a row whose document an entry with a higher score (or an
    equal one earlier in the row) already holds."""
    order = joined.score.argsort(dim=1, descending=True, stable=True)
    score = joined.score.gather(1, order)
    document = documents[joined.token_index.gather(1, order)]
    rank = torch.arange(document.shape[1], device=document.device).expand_as(document)
    document = torch.where(score >= 0, document, -1 - rank)  # empty entries: distinct negative documents
    # sorted by (document, score rank): an entry repeats its document when the one before it has the same one;
    # O(entries) memory per row, where comparing every pair of entries took O(entries²)
    by_document = (document * document.shape[1] + rank).argsort(dim=1)
    grouped = document.gather(1, by_document)
    repeat = torch.zeros_like(grouped, dtype=torch.bool)
    repeat[:, 1:] = grouped[:, 1:] == grouped[:, :-1]
    repeated_sorted = torch.zeros_like(repeat).scatter(1, by_document, repeat)
    repeated = torch.zeros_like(repeated_sorted).scatter(1, order, repeated_sorted)
    return joined._replace(score=joined.score.masked_fill(repeated, -1.0),
                           activation=joined.activation.masked_fill(repeated, 0.0))


def merge(buffer: ExampleBuffer, new: ExampleBuffer, documents: Int[Tensor, " n_tokens"] | None = None) -> ExampleBuffer:
    """Keep, per latent, the best `buffer`-many examples of both (one topk over the concatenation), touching
    only the latents that have new candidates; with `documents` (of every token of the stream), only the best
    example of each document."""
    rows = (new.score[:, 0] >= 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return buffer
    joined = ExampleBuffer(*(torch.cat([a[rows], b[rows]], dim=1) for a, b in zip(buffer, new, strict=True)))
    if documents is not None:
        joined = drop_repeated_documents(joined, documents)
    _, order = joined.score.topk(buffer.score.shape[1], dim=1)
    merged = (joined.score.gather(1, order), joined.activation.gather(1, order),
              joined.token_index.gather(1, order),
              joined.window.gather(1, order[..., None].expand(-1, -1, joined.window.shape[2])))
    return ExampleBuffer(*(whole.index_copy(0, rows, part) for whole, part in zip(buffer, merged, strict=True)))


def histogram_bins(values: Float[Tensor, " m"], edges: Float[Tensor, " n_bins_plus_1"]) -> Int[Tensor, " m"]:
    """The log-spaced bin of each activation: bin b holds edges[b] <= value < edges[b + 1]; values below the
    first edge or from the last edge up fall into the end bins."""
    n_bins = len(edges) - 1
    values = values.double()
    return (torch.bucketize(values, edges.to(values.device), right=True) - 1).clamp(0, n_bins - 1)


def histogram_counts(entries: Firing, d_sae: int, edges: Float[Tensor, " n_bins_plus_1"]) -> Int[Tensor, "d_sae n_bins"]:
    """Counts of non-zero activations per latent in log-spaced bins (outliers clamped into the end bins)."""
    n_bins = len(edges) - 1
    flat = entries.latent * n_bins + histogram_bins(entries.activation, edges)
    return torch.bincount(flat, minlength=d_sae * n_bins).view(d_sae, n_bins)


def empty_bins(d_sae: int, n_bins: int) -> BinStatistics:
    return BinStatistics(torch.zeros(d_sae, n_bins, dtype=torch.long), torch.full((d_sae, n_bins), math.inf),
                         torch.zeros(d_sae, n_bins))


def add_to_bins_(bins: BinStatistics, entries: Firing, edges: Float[Tensor, " n_bins_plus_1"]) -> BinStatistics:
    """Fold one batch's non-zero activations into `bins` in place (O(non-zeros), whatever the bin count;
    outliers clamped into the end bins) and return it."""
    n_bins = len(edges) - 1
    flat = entries.latent * n_bins + histogram_bins(entries.activation, edges)
    bins.count.view(-1).index_add_(0, flat, torch.ones_like(flat))
    bins.low.view(-1).scatter_reduce_(0, flat, entries.activation, "amin")
    bins.high.view(-1).scatter_reduce_(0, flat, entries.activation, "amax")
    return bins


def quantile_groups(bins: BinStatistics, edges: Float[Tensor, " n_bins_plus_1"], n_quantiles: int) -> QuantileGroups:
    """Group each latent's bins: bin b joins group ⌊n · (count in bins below b) / count⌋ (integer maths, so a
    bin starting exactly at a share of q/n opens group q); empty bins join none."""
    histogram = bins.count
    below = histogram.cumsum(1) - histogram
    total = histogram.sum(1, keepdim=True).clamp_min(1)
    group = torch.where(histogram > 0, (n_quantiles * below) // total, -1)
    slot = torch.where(group >= 0, group, n_quantiles)  # empty bins into a spare slot, dropped below
    d_sae = histogram.shape[0]
    count = torch.zeros(d_sae, n_quantiles + 1, dtype=torch.long).scatter_add(1, slot, histogram)
    low = torch.full((d_sae, n_quantiles + 1), math.inf).scatter_reduce(1, slot, bins.low.float(), "amin")
    high = torch.zeros(d_sae, n_quantiles + 1).scatter_reduce(1, slot, bins.high.float(), "amax")
    return QuantileGroups(edges, group, count[:, :-1], low[:, :-1], high[:, :-1])


def init_state(d_sae: int, cfg: DashboardConfig) -> DashboardState:
    n_bins = len(cfg.histogram_edges()) - 1
    return DashboardState(
        0, torch.zeros(d_sae, dtype=torch.long), torch.zeros(d_sae, dtype=torch.float64), torch.zeros(d_sae),
        torch.zeros(d_sae, n_bins, dtype=torch.long), empty_bins(d_sae, len(cfg.quantile_edges()) - 1),
        empty_buffer(d_sae, cfg.n_top, cfg.width),
        empty_buffer(d_sae, cfg.sample_size, cfg.width),
    )


def update_state(
    state: DashboardState, latents: Float[Tensor, "n_tokens d_sae"], offset: int, context_len: int,
    cfg: DashboardConfig, generator: torch.Generator, documents: Int[Tensor, " n_stream_tokens"] | None = None,
) -> DashboardState:
    """Fold one batch of latents (tokens of whole contexts, flattened; flat indices start at `offset`);
    `documents`, when known, holds the document of every token of the whole stream (flat).

    Negative latents (not produced by saelab's architectures) are treated as zero."""
    latents = latents.clamp_min(0)
    d_sae = latents.shape[1]
    entries = firing_entries(latents)
    keys = torch.rand(entries.activation.shape, generator=generator).to(latents.device)
    batch_documents = None if documents is None else documents[offset:offset + latents.shape[0]]
    top = candidates(state.top, latents, entries, entries.activation, offset, context_len, cfg.window,
                     batch_documents)
    sample = candidates(state.sample, latents, entries, keys, offset, context_len, cfg.window)
    return DashboardState(
        n_tokens=state.n_tokens + latents.shape[0],
        fire_counts=state.fire_counts + torch.bincount(entries.latent, minlength=d_sae),
        act_sum=state.act_sum.index_add(0, entries.latent, entries.activation.double()),
        act_max=state.act_max.scatter_reduce(0, entries.latent, entries.activation, "amax"),
        histogram=state.histogram + histogram_counts(entries, d_sae, cfg.histogram_edges()),
        quantile_bins=add_to_bins_(state.quantile_bins, entries, cfg.quantile_edges()),
        top=merge(state.top, top, documents),
        sample=merge(state.sample, sample),
    )


# ---------------------------------------------------------------- logit effects

def unembed_directions(model: HookedTransformer, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """Residual directions through the final LayerNorm taken as linear (centred, times its weight), then W_U."""
    if model.cfg.normalization_type in ("LN", "LNPre"):
        directions = directions - directions.mean(-1, keepdim=True)
    weight = getattr(model.ln_final, "w", None)
    if weight is not None:
        directions = directions * weight.to(directions.dtype)
    return directions @ model.W_U.to(directions.dtype)


@torch.no_grad()
def logit_effects(
    model: HookedTransformer, sae: SAE, site: HookSite, n: int, chunk: int = 512
) -> tuple[LogitEffects | None, str]:
    """Top and bottom `n` direct logit effects of each latent, or None and the reason they are skipped."""
    if site.kind.residual_map is None:
        return None, f"site kind {site.kind.name!r} has no linear path to the residual stream"
    if n == 0:
        return None, "n_logits is 0"
    directions = site.kind.residual_map(sae.W_dec.detach().float(), model, site.layer)
    n = min(n, model.cfg.d_vocab)
    parts = []
    for block in directions.split(chunk):
        effects = unembed_directions(model, block)
        top, bottom = effects.topk(n, dim=1), effects.topk(n, dim=1, largest=False)
        parts.append((top.values, top.indices, bottom.values, bottom.indices))
    return LogitEffects(*(torch.cat(column) for column in zip(*parts, strict=True))), ""


# ---------------------------------------------------------------- the pass


@torch.no_grad()
def batch_latents(
    model: HookedTransformer, sae: SAE, site: HookSite, tokens: Int[Tensor, "batch pos"], skip_bos: bool
) -> Float[Tensor, "batch_pos d_sae"]:
    """Inference latents of every token of the batch (BOS tokens zeroed if `skip_bos`), flattened."""
    captured: dict[HookSite, Tensor] = {}
    model.run_with_hooks(tokens, fwd_hooks=[capturing_hook(site, model, captured)], stop_at_layer=site.layer + 1)
    latents = sae.encode(captured[site].flatten(0, 1).to(sae.cfg.torch_dtype)).float()
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    return latents * keep_mask(tokens, bos, skip_bos).flatten()[:, None]


@torch.no_grad()
def stream_dashboards(
    model: HookedTransformer, sae: SAE, site: HookSite, tokens: Int[Tensor, "n_contexts pos"], cfg: DashboardConfig,
    progress: bool = False, documents: Int[Tensor, "n_contexts pos"] | None = None,
) -> DashboardState:
    """The streaming pass over `tokens` (a progress bar over tokens, with ETA, if `progress`)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    state = init_state(sae.cfg.d_sae, cfg)
    context_len = tokens.shape[1]
    flat_documents = None if documents is None else documents.flatten()
    with tqdm(total=tokens.numel(), unit="tok", unit_scale=True, desc="dashboards", disable=not progress) as bar:
        for start in range(0, tokens.shape[0], cfg.batch_size):
            part = tokens[start:start + cfg.batch_size].to(model.cfg.device)
            latents = batch_latents(model, sae, site, part, cfg.skip_bos).cpu()
            state = update_state(state, latents, start * context_len, context_len, cfg, generator, flat_documents)
            bar.update(part.numel())
    return state


def compute_dashboards(
    model: HookedTransformer,
    sae: SAE,
    tokens: Int[Tensor, "n_contexts pos"],
    cfg: DashboardConfig = DashboardConfig(),
    site: "HookSite | str | None" = None,
    progress: bool = False,
    documents: Int[Tensor, "n_contexts pos"] | None = None,
) -> FeatureDashboards:
    """Dashboards of every latent of `sae` over `tokens` (packed contexts), at its config's site unless given;
    a progress bar with ETA over the streaming pass if `progress`. With `documents` (the document of each
    token, as `saelab.data.pack_contexts` numbers them) the top examples hold each document at most once. A
    transcoder's latents are read at its input site and their logit effects go through its output site, where
    its decoder writes."""
    if documents is not None and documents.shape != tokens.shape:
        raise ValueError(f"documents has shape {tuple(documents.shape)}, tokens {tuple(tokens.shape)}; give one "
                         "document id per token")
    site = sae_site(sae, model, site)
    tokens = tokens.cpu()
    documents = None if documents is None else documents.cpu().long()
    state = stream_dashboards(model, sae, site, tokens, cfg, progress, documents)
    written = sae_target_site(sae, model, site)  # where the decoder writes: a transcoder's output site
    logits, skipped = logit_effects(model, sae, written, cfg.n_logits)
    attribution = head_attribution(sae.W_dec, model.cfg.n_heads).cpu() if written.kind.name == "attn_z" else None
    fires = state.fire_counts.double()
    return FeatureDashboards(
        n_tokens=state.n_tokens, density=(fires / max(state.n_tokens, 1)).float(),
        mean_act=(state.act_sum / fires).float(), max_act=state.act_max, histogram_edges=cfg.histogram_edges(),
        histogram=state.histogram, top=state.top, sample=state.sample,
        quantiles=quantile_groups(state.quantile_bins, cfg.quantile_edges(), cfg.n_quantiles),
        tokens=tokens, documents=documents,
        logits=None if logits is None else LogitEffects(*(t.cpu() for t in logits)), logits_skipped=skipped,
        head_attribution=attribution,
    )
