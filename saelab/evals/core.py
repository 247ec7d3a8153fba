"""Core SAE metrics on a held-out token set: reconstruction, sparsity, and the model with the SAE spliced in.

For a transcoder everything below is about its target: x̂ = reconstruct(input) against the activation at the
output site (e.g. the MLP output), read from the same forward pass as the input, and spliced in place of it.

Reconstruction: MSE (squared error summed over d_in, averaged over tokens), FVU (total squared error over the
total variance of x around its mean), cosine similarity of x̂ and x, L0 (mean and its distribution), dead
latents (never fire on the tokens) and dense latents (fire on more than `dense_threshold` of them).

Splicing: the site's activation is replaced by x̂ at every token (BOS tokens keep x when `skip_bos`, since
their activations are outliers an SAE is not meant to model). Next-token cross-entropy is compared with the
clean model and with zero- and mean-ablation of the site: CE recovered = (CE_ablated − CE_spliced) /
(CE_ablated − CE_clean), so 1 means the SAE loses nothing and 0 means it is as bad as the ablation.
KL(model ‖ spliced) is averaged over tokens. The same runs with the SAE error x − x̂ added back must give
the clean model exactly (`ce_with_error`, `kl_with_error`): a check of the splicing itself.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.evals.splice import (
    capturing_hook,
    run_with_replacement,
    sae_site,
    sae_target_site,
    splice_unsupported,
)
from saelab.sae import SAE

EVAL_KIND = "core"


@dataclass(frozen=True)
class CoreEvalConfig:
    """How the core metrics are computed (the token set itself is an argument)."""

    batch_size: int = 16
    """Contexts per forward pass."""
    dense_threshold: float = 0.1
    """A latent firing on more than this fraction of tokens counts as dense."""
    skip_bos: bool = True
    """Leave BOS tokens out of the reconstruction metrics and keep their true activation when splicing."""
    splice: bool = True
    """Compute the CE / KL metrics (four extra forward passes per batch)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if not 0 < self.dense_threshold <= 1:
            raise ValueError(f"dense_threshold must be in (0, 1], got {self.dense_threshold}")


class Reconstruction(NamedTuple):
    """An SAE's inference-time latents and reconstruction of a batch of inputs."""

    x_hat: Float[Tensor, "n d_target"]
    latents: Float[Tensor, "n d_sae"]


class CoreStats(NamedTuple):
    """Sums over tokens that `finalize_core` turns into metrics; add two with `add_stats`."""

    n_tokens: float
    sse: float
    sum_x: Float[Tensor, " d_in"]
    sum_x_sq: Float[Tensor, " d_in"]
    cosine_sum: float
    l0_counts: Int[Tensor, " d_sae_plus_1"]
    fire_counts: Int[Tensor, " d_sae"]
    n_predictions: float
    ce_clean: float
    ce_spliced: float
    ce_zero: float
    ce_mean: float
    ce_with_error: float
    kl_spliced: float
    kl_with_error: float


class CoreMetrics(NamedTuple):
    """Core metrics of one SAE on one token set. Splice metrics are NaN when `splice_skipped` says why."""

    n_tokens: int
    mse: float
    fvu: float
    cosine: float
    l0: float
    l0_histogram: Int[Tensor, " d_sae_plus_1"]
    """Tokens with exactly l active latents, for l = 0..d_sae."""
    dead_fraction: float
    dense_fraction: float
    ce_clean: float
    ce_spliced: float
    ce_zero_ablation: float
    ce_mean_ablation: float
    ce_loss_score: float
    """CE recovered relative to zero-ablation."""
    ce_recovered_mean: float
    """CE recovered relative to mean-ablation."""
    kl_div: float
    """Mean KL(model ‖ model with the SAE spliced in) per token."""
    ce_with_error: float
    kl_with_error: float
    splice_skipped: str
    """Why the splice metrics were not computed ("" when they were)."""


@torch.no_grad()
def reconstruct(sae: SAE, x: Float[Tensor, "n d_in"]) -> Reconstruction:
    """Inference latents (`sae.encode`) and their decoding plus any skip term (as `SAE.reconstruct`), in x's
    dtype."""
    x_sae = x.to(sae.cfg.torch_dtype)
    latents = sae.encode(x_sae)
    return Reconstruction((sae.decode(latents) + sae.skip(x_sae)).to(x.dtype), latents)


def keep_mask(tokens: Int[Tensor, "batch pos"], bos_id: int | None, skip_bos: bool) -> Bool[Tensor, "batch pos"]:
    """Tokens whose activations the SAE is evaluated on: all, or all but position 0 and BOS separators."""
    keep = torch.ones_like(tokens, dtype=torch.bool)
    if skip_bos:
        keep[:, 0] = False
        if bos_id is not None:
            keep &= tokens != bos_id
    return keep


def _bos_id(model: HookedTransformer) -> int | None:
    tokenizer = getattr(model, "tokenizer", None)
    return None if tokenizer is None else tokenizer.bos_token_id


@torch.no_grad()
def site_mean(
    model: HookedTransformer, site: HookSite, batches: list[Int[Tensor, "_batch pos"]], skip_bos: bool = True
) -> Float[Tensor, " d_in"]:
    """Mean SAE-shaped activation at `site` over the kept tokens of `batches` (for mean-ablation)."""
    total, count = None, 0
    for tokens in batches:
        captured: dict[HookSite, Tensor] = {}
        model.run_with_hooks(tokens, fwd_hooks=[capturing_hook(site, model, captured)],
                             stop_at_layer=site.layer + 1)
        x = captured[site][keep_mask(tokens, _bos_id(model), skip_bos)].double()
        total = x.sum(0) if total is None else total + x.sum(0)
        count += x.shape[0]
    if count == 0:
        raise ValueError("no tokens left to average over; give more tokens")
    return (total / count).float()


def next_token_ce(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> float:
    """Summed next-token cross-entropy over every prediction of the batch."""
    return float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum"))


def kl_sum(clean_logprobs: Float[Tensor, "n d_vocab"], logits: Float[Tensor, "batch pos d_vocab"]) -> float:
    """Σ over predictions of KL(clean ‖ other), given the clean log-probabilities of the same predictions."""
    other = logits[:, :-1].flatten(0, 1).float().log_softmax(-1)
    return float((clean_logprobs.exp() * (clean_logprobs - other)).sum())


def _reconstruction_stats(x: Tensor, rec: Reconstruction, d_sae: int) -> tuple:
    active = (rec.latents > 0).sum(-1)
    return (
        float(x.shape[0]),
        float((rec.x_hat - x).double().pow(2).sum()),
        x.double().sum(0),
        x.double().pow(2).sum(0),
        float(F.cosine_similarity(rec.x_hat.double(), x.double(), dim=-1).sum()),
        torch.bincount(active, minlength=d_sae + 1),
        (rec.latents > 0).sum(0),
    )


def _splice_stats(model, site, tokens, clean_logits, x, x_hat, mean, keep) -> tuple:
    """Prediction count, then summed CE of the clean, spliced, zero-, mean-ablated and error-restored runs,
    then summed KL of the spliced and error-restored runs. Skipped (BOS) tokens keep x in every run."""
    clean_lp = clean_logits[:, :-1].flatten(0, 1).float().log_softmax(-1)
    keep = keep[..., None]
    runs = {
        "spliced": torch.where(keep, x_hat, x),
        "zero": torch.where(keep, torch.zeros_like(x), x),
        "mean": torch.where(keep, mean.to(x.dtype), x),
        "with_error": torch.where(keep, x_hat + (x - x_hat), x),
    }
    logits = {name: run_with_replacement(model, tokens, site, value) for name, value in runs.items()}
    return (
        float(tokens[:, 1:].numel()),
        next_token_ce(clean_logits, tokens),
        *(next_token_ce(logits[name], tokens) for name in runs),
        kl_sum(clean_lp, logits["spliced"]),
        kl_sum(clean_lp, logits["with_error"]),
    )


@torch.no_grad()
def batch_stats(
    model: HookedTransformer,
    sae: SAE,
    site: HookSite,
    tokens: Int[Tensor, "batch pos"],
    mean: Float[Tensor, " d_target"] | None,
    cfg: CoreEvalConfig,
    target: HookSite | None = None,
) -> CoreStats:
    """Sums of one batch. `target`: where the reconstruction belongs (None: `site`, an SAE's own input). `mean`
    (of the target, for mean-ablation) is only needed when splicing; without it the forward pass stops after
    the last layer read."""
    target = site if target is None else target
    captured: dict[HookSite, Tensor] = {}
    stop = None if mean is not None else max(site.layer, target.layer) + 1
    hooks = [capturing_hook(s, model, captured) for s in dict.fromkeys((site, target))]
    clean_logits = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=stop)
    x, y = captured[site], captured[target]
    keep = keep_mask(tokens, _bos_id(model), cfg.skip_bos)
    rec = reconstruct(sae, x[keep])
    recon = _reconstruction_stats(y[keep], rec, sae.cfg.d_sae)
    if mean is None:
        return CoreStats(*recon, *([0.0] * 8))
    y_hat = y.clone()
    y_hat[keep] = rec.x_hat
    return CoreStats(*recon, *_splice_stats(model, target, tokens, clean_logits, y, y_hat, mean, keep))


def add_stats(a: CoreStats, b: CoreStats) -> CoreStats:
    return CoreStats(*(u + v for u, v in zip(a, b, strict=True)))


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan


def finalize_core(stats: CoreStats, cfg: CoreEvalConfig, splice_skipped: str) -> CoreMetrics:
    n, n_pred = stats.n_tokens, stats.n_predictions
    variance = float((stats.sum_x_sq - stats.sum_x.pow(2) / n).sum())
    firing = stats.fire_counts.double() / n
    l0 = float((stats.l0_counts.double() * torch.arange(len(stats.l0_counts))).sum() / n)
    spliced = not splice_skipped
    ce = {name: (value / n_pred if spliced else math.nan) for name, value in (
        ("clean", stats.ce_clean), ("spliced", stats.ce_spliced), ("zero", stats.ce_zero),
        ("mean", stats.ce_mean), ("with_error", stats.ce_with_error))}
    return CoreMetrics(
        n_tokens=int(n), mse=stats.sse / n, fvu=stats.sse / max(variance, 1e-12), cosine=stats.cosine_sum / n,
        l0=l0, l0_histogram=stats.l0_counts, dead_fraction=float((stats.fire_counts == 0).double().mean()),
        dense_fraction=float((firing > cfg.dense_threshold).double().mean()),
        ce_clean=ce["clean"], ce_spliced=ce["spliced"], ce_zero_ablation=ce["zero"], ce_mean_ablation=ce["mean"],
        ce_loss_score=_recovered(ce["zero"], ce["spliced"], ce["clean"]),
        ce_recovered_mean=_recovered(ce["mean"], ce["spliced"], ce["clean"]),
        kl_div=stats.kl_spliced / n_pred if spliced else math.nan, ce_with_error=ce["with_error"],
        kl_with_error=stats.kl_with_error / n_pred if spliced else math.nan, splice_skipped=splice_skipped,
    )


def evaluate_core(
    model: HookedTransformer,
    sae: SAE,
    tokens: Int[Tensor, "n_contexts pos"],
    cfg: CoreEvalConfig = CoreEvalConfig(),
    site: "HookSite | str | None" = None,
    progress: bool = False,
) -> CoreMetrics:
    """Core metrics of `sae` on `tokens` (contexts that start with BOS), at its config's site unless given; a
    progress bar with ETA over the metric pass if `progress`. A transcoder reads `site` and is measured, and
    spliced, at its output site."""
    site = sae_site(sae, model, site)
    target = sae_target_site(sae, model, site)
    tokens = tokens.to(model.cfg.device)
    parts = list(tokens.split(cfg.batch_size))
    skipped = "splicing disabled" if not cfg.splice else (splice_unsupported(target) or "")
    mean = site_mean(model, target, parts, cfg.skip_bos) if not skipped else None
    total = None
    for part in tqdm(parts, desc="core metrics", unit="batch", disable=not progress):
        stats = batch_stats(model, sae, site, part, mean, cfg, target)
        total = stats if total is None else add_stats(total, stats)
    if total is None or total.n_tokens == 0:
        raise ValueError("the token set is empty after dropping BOS tokens; give more tokens")
    return finalize_core(total, cfg, skipped)


ROW_METRICS = ("n_tokens", "mse", "fvu", "cosine", "l0", "dead_fraction", "dense_fraction", "ce_clean",
               "ce_spliced", "ce_zero_ablation", "ce_mean_ablation", "ce_loss_score", "ce_recovered_mean",
               "kl_div", "ce_with_error", "kl_with_error")


def l0_quantiles(histogram: Int[Tensor, " n"], qs: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99)) -> dict[str, float]:
    """L0 quantiles from the L0 histogram, named "l0_p10", "l0_p50", ..."""
    cdf = histogram.double().cumsum(0) / histogram.sum().clamp_min(1)
    return {f"l0_p{round(q * 100)}": float(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)))
            for q in qs}


def core_metric_rows(metrics: CoreMetrics, sae_id: str, run_id: str | None) -> list[dict]:
    """`eval_metrics` rows (eval_kind "core"); NaN splice metrics are left out."""
    values = {name: float(getattr(metrics, name)) for name in ROW_METRICS}
    values.update(l0_quantiles(metrics.l0_histogram))
    return [{"run_id": run_id, "sae_id": sae_id, "eval_kind": EVAL_KIND, "metric": name, "value": value}
            for name, value in values.items() if not math.isnan(value)]
