"""Attention-output SAEs (Kissane, Krzyzanowski, Bloom, Conmy & Nanda 2024): SAEs on hook_z, heads
concatenated.

Weight-based head attribution of latent i to head j: ‖W_dec[i, block j]‖ / Σ_k ‖W_dec[i, block k]‖, where
block j is head j's d_head slice of the concatenated z.

Direct feature attribution (DFA): z at destination token t is Σ_s A^h[t, s] v^h[s] per head h, and the
encoder is linear before its nonlinearity, so latent i's pre-activation minus its bias term is
Σ_h Σ_s A^h[t, s] · v^h[s] · W_enc[block h, i] (for SAEs that subtract b_dec from the input, the constant
−b_dec · W_enc[:, i] is part of that bias term). `dfa` returns the [n_heads, n_source] terms; they sum to
the pre-activation minus `dfa_bias`.

Per-head summary: each head's latents ranked by attribution; a head is called polysemantic by the rule in
`HeadSummaryConfig` (its attributed latents fall into many unrelated groups — here measured as: at least
`min_latents` latents with attribution ≥ `threshold`, whose top-activating tokens, if given, are mostly
distinct).
"""

from dataclasses import dataclass
from typing import NamedTuple

import einops
import torch
from jaxtyping import Float, Shaped
from torch import Tensor

from saelab.activations.sites import HookSite, block_hook
from saelab.sae import SAE


def head_blocks(W: Float[Tensor, "d_sae d_in"], n_heads: int) -> Float[Tensor, "d_sae n_heads d_head"]:
    """Split the concatenated-heads axis of a (d_sae, n_heads * d_head) matrix into heads."""
    if W.shape[-1] % n_heads:
        raise ValueError(
            f"width {W.shape[-1]} is not a multiple of n_heads={n_heads}; is this an attn_z SAE?"
        )
    return einops.rearrange(W, "d_sae (n_heads d_head) -> d_sae n_heads d_head", n_heads=n_heads)


def head_attribution(W_dec: Float[Tensor, "d_sae d_in"], n_heads: int) -> Float[Tensor, "d_sae n_heads"]:
    """‖W_dec[i, block j]‖ / Σ_k ‖W_dec[i, block k]‖; rows sum to 1 (all-zero decoder rows: uniform)."""
    norms = head_blocks(W_dec.detach().double(), n_heads).norm(dim=-1)
    total = norms.sum(-1, keepdim=True)
    uniform = torch.full_like(norms, 1.0 / n_heads)
    return torch.where(total > 0, norms / total.clamp_min(1e-300), uniform).float()


def encoder_matrix(sae: SAE) -> Float[Tensor, "d_in d_sae"]:
    """The linear map whose output the SAE's nonlinearity reads (W_enc; for "gated", the gate path's)."""
    if not hasattr(sae, "W_enc"):
        raise ValueError(f"a {sae.cfg.architecture!r} SAE has no linear encoder; DFA needs one")
    return sae.W_enc


def _encoder_bias(sae: SAE) -> Float[Tensor, " d_sae"]:
    return sae.b_gate if hasattr(sae, "b_gate") else sae.b_enc


def dfa_bias(sae: SAE, latent: int) -> Float[Tensor, ""]:
    """The input-independent part of a latent's pre-activation: b_enc, minus b_dec · W_enc[:, latent] if the
    SAE reads x − b_dec."""
    bias = _encoder_bias(sae)[latent]
    if sae.architecture.apply_b_dec_to_input:
        bias = bias - sae.b_dec @ encoder_matrix(sae)[:, latent]
    return bias


def pre_activation(sae: SAE, z_flat: Float[Tensor, "n d_in"], latent: int) -> Float[Tensor, " n"]:
    """A latent's pre-activation ((x − b_dec) · W_enc + b_enc, or x · W_enc + b_enc), before any
    nonlinearity."""
    return z_flat @ encoder_matrix(sae)[:, latent] + dfa_bias(sae, latent)


def dfa(
    pattern: Float[Tensor, "*batch n_heads n_source"],
    v: Float[Tensor, "*batch n_source n_heads d_head"],
    W_enc_column: Float[Tensor, " d_in"],
) -> Float[Tensor, "*batch n_heads n_source"]:
    """DFA of one latent at one destination token: A^h[t, s] · v^h[s] · W_enc[block h, i] per head and source.

    `pattern` is the destination token's attention row of each head, `v` the value vectors of the source
    tokens, `W_enc_column` the latent's encoder column (n_heads * d_head); any leading axes are prompts.
    """
    n_heads = pattern.shape[-2]
    w = einops.rearrange(W_enc_column, "(n_heads d_head) -> n_heads d_head", n_heads=n_heads)
    return einops.einsum(pattern, v, w, "... h s, ... s h d, h d -> ... h s")


class HeadSummary(NamedTuple):
    """Per head: latents ranked by attribution, and whether the head is polysemantic by the stated rule."""

    top_latents: list[list[int]]
    """Per head, up to `n_top` latents with the largest attribution to it (≥ `threshold`), strongest first."""
    top_attribution: list[list[float]]
    n_attributed: list[int]
    """Per head, latents (alive ones, if a density is given) with attribution ≥ `threshold`."""
    polysemantic: list[bool]
    rule: str
    """The rule `polysemantic` applies, in words."""


@dataclass(frozen=True)
class HeadSummaryConfig:
    """The per-head summary's thresholds."""

    threshold: float = 0.8
    """A latent belongs to a head when at least this share of its decoder norm is in the head's block."""
    n_top: int = 10
    """Latents listed per head."""
    min_latents: int = 3
    """A head with at least this many belonging latents that are mutually dissimilar is called
    polysemantic."""
    max_similarity: float = 0.5
    """Two belonging latents count as dissimilar when the cosine of their decoder blocks is below this."""

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.n_top < 1 or self.min_latents < 2:
            raise ValueError(f"n_top must be ≥ 1 and min_latents ≥ 2, got {self.n_top}, {self.min_latents}")


def _dissimilar_count(blocks: Float[Tensor, "m d_head"], max_similarity: float) -> int:
    """Size of a greedy set of rows whose pairwise cosines are all below `max_similarity`."""
    unit = blocks / blocks.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    chosen: list[int] = []
    for i in range(unit.shape[0]):
        if all(float(unit[i] @ unit[j]) < max_similarity for j in chosen):
            chosen.append(i)
    return len(chosen)


def head_summary(
    W_dec: Float[Tensor, "d_sae d_in"],
    n_heads: int,
    cfg: HeadSummaryConfig = HeadSummaryConfig(),
    alive: Shaped[Tensor, " d_sae"] | None = None,
) -> HeadSummary:
    """Top latents per head and polysemantic heads: a head is polysemantic when at least `min_latents` of its
    belonging latents (attribution ≥ threshold, alive if `alive` is given) write mutually dissimilar
    directions (decoder-block cosine < max_similarity) — several unrelated features through one head."""
    attribution = head_attribution(W_dec, n_heads)
    if alive is not None:
        attribution = attribution * alive.bool()[:, None]
    blocks = head_blocks(W_dec.detach().float(), n_heads)
    tops, values, counts, poly = [], [], [], []
    for h in range(n_heads):
        column = attribution[:, h]
        belonging = (column >= cfg.threshold).nonzero().squeeze(1)
        order = belonging[column[belonging].argsort(descending=True)]
        tops.append(order[: cfg.n_top].tolist())
        values.append([float(column[i]) for i in order[: cfg.n_top]])
        counts.append(int(belonging.numel()))
        poly.append(_dissimilar_count(blocks[order, h], cfg.max_similarity) >= cfg.min_latents)
    rule = (
        f"at least {cfg.min_latents} latents with ≥ {cfg.threshold:.0%} of their decoder norm in the head "
        f"whose decoder blocks have pairwise cosine < {cfg.max_similarity}"
    )
    return HeadSummary(tops, values, counts, poly, rule)


class LatentDFA(NamedTuple):
    """DFA of one latent at one destination token per prompt."""

    contributions: Float[Tensor, "batch n_heads n_source"]
    """A^h[t, s] · v^h[s] · W_enc[block h, i]; positions after t have zero attention, hence zero terms."""
    pre_activation: Float[Tensor, " batch"]
    """The latent's pre-activation at t; equals contributions.sum((1, 2)) + bias."""
    bias: float


@torch.no_grad()
def latent_dfa(
    model, sae: SAE, layer: int, tokens: Tensor, latent: int, destination: Tensor
) -> LatentDFA:
    """DFA of latent `latent` of an attn_z SAE at layer `layer`, at token `destination[b]` of each prompt
    b."""
    names = (block_hook(layer, "attn.hook_pattern"), block_hook(layer, "attn.hook_v"),
             HookSite(layer, "attn_z").hook_name)
    cache: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook) -> None:
        cache[hook.name] = tensor

    model.run_with_hooks(tokens, fwd_hooks=[(n, keep) for n in names], stop_at_layer=layer + 1)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    pattern = cache[names[0]][rows, :, destination]  # batch n_heads n_source
    v = cache[names[1]]  # batch n_source n_heads d_head
    W = encoder_matrix(sae)[:, latent].to(v.dtype)
    contributions = dfa(pattern, v, W)
    z = einops.rearrange(cache[names[2]][rows, destination], "b h d -> b (h d)")
    bias = float(dfa_bias(sae, latent))
    return LatentDFA(contributions, pre_activation(sae, z.to(W.dtype), latent), bias)


HEADS_EVAL_KIND = "attn_heads"


def head_summary_rows(summary: HeadSummary, sae_id: str, run_id: str | None) -> list[dict]:
    """`eval_metrics` rows (eval_kind "attn_heads"): per head h, "h{h}/n_latents" (latents belonging to it),
    "h{h}/polysemantic" (1 or 0 by the summary's rule) and "h{h}/top_latent" (its strongest latent, if
    any)."""
    rows = []
    for head, (count, poly, top) in enumerate(zip(summary.n_attributed, summary.polysemantic,
                                                   summary.top_latents, strict=True)):
        values = {"n_latents": count, "polysemantic": float(poly)}
        if top:
            values["top_latent"] = top[0]
        rows += [
            {
                "run_id": run_id,
                "sae_id": sae_id,
                "eval_kind": HEADS_EVAL_KIND,
                "metric": f"h{head}/{name}",
                "value": float(value),
            }
            for name, value in values.items()
        ]
    return rows
