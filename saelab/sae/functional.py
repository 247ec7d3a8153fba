"""Shared SAE math: initialisation, the sparse TopK encoder/decoder with sparse backward passes, metrics.

The TopK step is dominated by the dense encoder matmul. Everything after it touches only the k selected
latents of each input: the decoder is an `embedding_bag` over the selected rows of W_dec, and the custom
backward passes compute weight gradients as per-latent sums over the inputs that selected the latent
(a sorted `embedding_bag`) and activation gradients as sampled dot products (`torch.sparse.sampled_addmm`),
so no (batch, d_sae) gradient is ever formed.
"""

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from saelab.sae.types import SAEOutput

if TYPE_CHECKING:
    from saelab.sae.config import SAEConfig
    from saelab.sae.model import SAE

# ---------------------------------------------------------------- initialisation


def random_unit_rows(n_rows: int, n_cols: int, generator: torch.Generator) -> Float[Tensor, "n_rows n_cols"]:
    """Rows drawn uniformly on the unit sphere."""
    rows = torch.randn(n_rows, n_cols, generator=generator)
    return rows / rows.norm(dim=-1, keepdim=True)


def tied_init(
    d_in: int, d_sae: int, generator: torch.Generator, decoder_norm: float = 1.0
) -> dict[str, Tensor]:
    """W_dec rows in random directions with norm `decoder_norm`, W_enc = W_dec^T, zero biases."""
    W_dec = random_unit_rows(d_sae, d_in, generator) * decoder_norm
    return {
        "W_enc": W_dec.t().clone(),
        "b_enc": torch.zeros(d_sae),
        "W_dec": W_dec,
        "b_dec": torch.zeros(d_in),
    }


def dictionary_init(cfg: "SAEConfig", generator: torch.Generator, decoder_norm: float = 1.0) -> dict[str, Tensor]:
    """W_enc, b_enc, W_dec, b_dec (and a zero W_skip with cfg.skip_connection). An SAE gets `tied_init`; a
    transcoder, whose input and target are different spaces, gets W_enc and W_dec drawn independently (unit
    encoder columns, decoder rows of norm `decoder_norm`), W_dec (d_sae, d_target) and b_dec (d_target)."""
    if not cfg.is_transcoder:
        return tied_init(cfg.d_in, cfg.d_sae, generator, decoder_norm)
    params = {
        "W_enc": random_unit_rows(cfg.d_sae, cfg.d_in, generator).t().contiguous(),
        "b_enc": torch.zeros(cfg.d_sae),
        "W_dec": random_unit_rows(cfg.d_sae, cfg.d_target, generator) * decoder_norm,
        "b_dec": torch.zeros(cfg.d_target),
    }
    if cfg.skip_connection:
        params["W_skip"] = torch.zeros(cfg.d_in, cfg.d_target)  # Paulo et al. 2025 start the skip term at zero
    return params


@torch.no_grad()
def unit_norm_rows_(W: Float[Tensor, "rows cols"]) -> None:
    """Rescale each row of W to unit norm, in place."""
    W.div_(W.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).eps))


def unit_norm_decoder_(sae: "SAE", out: SAEOutput) -> None:
    """Post-step of architectures whose decoder rows stay at unit norm."""
    unit_norm_rows_(sae.W_dec)


def no_post_step(sae: "SAE", out: SAEOutput) -> None:
    """Post-step of architectures that need nothing after an optimiser step."""


# ---------------------------------------------------------------- sparse TopK encoder and decoder


CHUNK_BYTES = 4 << 20
"""Size of the pieces `latent_major_sum` computes an `out=` result in: far below glibc's mmap threshold once it has
adapted, so the pieces come from (and go back to) the heap instead of fresh pages."""


def latent_major_sum(
    indices: Int64[Tensor, "batch k"],
    weights: Float[Tensor, "batch k"],
    rows: Float[Tensor, "batch d"],
    n_latents: int,
    out: Float[Tensor, "n_latents d"] | None = None,
) -> Float[Tensor, "n_latents d"]:
    """out[m] = sum over (b, j) with indices[b, j] == m of weights[b, j] * rows[b].

    Sorting the (b, j) pairs by latent turns this scatter into one `embedding_bag` whose bags are latents,
    which is the weight gradient of a sparse encoder or decoder without any (batch, d_sae) intermediate.
    With `out` (any strides, e.g. a transposed view) the result is written there, a few latents' bags at a time
    (`embedding_bag` has no `out=`); every bag is summed exactly as in one call.
    """
    k = indices.shape[1]
    flat = indices.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_latents)
    offsets = counts.cumsum(0) - counts
    inputs = torch.div(order, k, rounding_mode="floor")
    weights = weights.flatten()[order].to(rows.dtype)
    if out is None:
        return F.embedding_bag(inputs, rows, offsets, mode="sum", per_sample_weights=weights)
    step = max(1, CHUNK_BYTES // (rows.shape[1] * rows.element_size()))
    starts = [*offsets[::step].tolist(), flat.numel()]
    for i, first in enumerate(range(0, n_latents, step)):
        lo, hi = starts[i], starts[i + 1]
        out[first : first + step].copy_(F.embedding_bag(
            inputs[lo:hi], rows, offsets[first : first + step] - lo, mode="sum", per_sample_weights=weights[lo:hi]
        ))
    return out


def sampled_row_dots(
    grad: Float[Tensor, "batch d"], W: Float[Tensor, "n_latents d"], indices: Int64[Tensor, "batch k"]
) -> Float[Tensor, "batch k"]:
    """out[b, j] = <grad[b], W[indices[b, j]]>, the activation gradient of a sparse decoder."""
    batch, k = indices.shape
    if grad.dtype not in (torch.float32, torch.float64) or k == 0:
        return torch.einsum("bkd,bd->bk", W[indices], grad)
    crow = torch.arange(0, batch * k + 1, k, device=grad.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow,
            indices.flatten(),
            torch.ones(batch * k, dtype=grad.dtype, device=grad.device),
            (batch, W.shape[0]),
        )
        dots = torch.sparse.sampled_addmm(pattern, grad, W.t(), beta=0.0)
    return dots.values().view(batch, k)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, acts: Tensor, indices: Tensor, W_dec: Tensor, grad_out: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(acts, indices, W_dec)
        ctx.grad_out = grad_out
        return F.embedding_bag(indices, W_dec, mode="sum", per_sample_weights=acts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None, None]:  # type: ignore[override]
        acts, indices, W_dec = ctx.saved_tensors
        grad_acts = sampled_row_dots(grad, W_dec, indices) if ctx.needs_input_grad[0] else None
        grad_W_dec = (
            latent_major_sum(indices, acts, grad, W_dec.shape[0], ctx.grad_out) if ctx.needs_input_grad[2] else None
        )
        return grad_acts, None, grad_W_dec, None


def sparse_decode(
    acts: Float[Tensor, "batch k"], indices: Int64[Tensor, "batch k"], W_dec: Float[Tensor, "d_sae d_out"],
    grad_out: Float[Tensor, "d_sae d_out"] | None = None,
) -> Float[Tensor, "batch d_out"]:
    """sum_j acts[b, j] * W_dec[indices[b, j]] (no bias), with a sparse backward (that writes W_dec's gradient
    into `grad_out` when given, e.g. a workspace's `grad_W_dec`)."""
    if indices.shape[1] == 0:
        return acts.new_zeros(acts.shape[0], W_dec.shape[1])
    return _SparseDecode.apply(acts.to(W_dec.dtype), indices, W_dec, grad_out)


class TopKSelection(NamedTuple):
    """The latents a sparse TopK encoder selected."""

    acts: Float[Tensor, "batch k"]
    indices: Int64[Tensor, "batch k"]
    aux_acts: Float[Tensor, "batch n_aux"]
    aux_indices: Int64[Tensor, "batch n_aux"]
    pre_acts: Float[Tensor, "batch d_sae"]


def top_dead_latents(
    pre: Float[Tensor, "batch d_sae"], dead_mask: Bool[Tensor, " d_sae"] | None, n_aux: int
) -> tuple[Tensor, Tensor]:
    """Top-n_aux pre-activations among the dead latents (empty when none is dead)."""
    empty = (
        pre.new_zeros(pre.shape[0], 0),
        torch.zeros(pre.shape[0], 0, dtype=torch.long, device=pre.device),
    )
    if dead_mask is None or n_aux == 0:
        return empty
    dead_ids = dead_mask.nonzero().squeeze(1)
    if dead_ids.numel() == 0:
        return empty
    values, columns = pre.index_select(1, dead_ids).topk(min(n_aux, dead_ids.numel()), dim=-1, sorted=False)
    return values, dead_ids[columns]


class TopKWorkspace(NamedTuple):
    """Tensors a sparse TopK encoder writes into instead of allocating them, reused from call to call.

    A training step's (batch, d_sae) pre-activations and (d_sae, d_in) weight gradients are far above glibc
    malloc's mmap threshold, so without this every step maps them from fresh pages that the kernel faults in and
    zeroes. Each call with a workspace overwrites it: the TopKSelection (and SAEOutput) it returns is valid until
    the next call with the same one. The backward pass hands autograd the workspace's own gradient tensors (never
    views of them), which autograd adds into an existing `.grad` in place and copies where `.grad` is None, so
    `.grad` never aliases the workspace; keeping `.grad` allocated between steps (`zero_grad(set_to_none=False)`)
    is what makes the step allocation-free.
    """

    pre_acts: Float[Tensor, "batch d_sae"]
    top_pre: Float[Tensor, "batch k"]
    top_indices: Int64[Tensor, "batch k"]
    grad_W_enc: Float[Tensor, "d_in d_sae"]
    """The backward pass's gradient of W_enc, laid out like W_enc (so autograd adds it to W_enc.grad as it is)."""
    grad_W_dec: Float[Tensor, "d_sae d_out"]
    """The backward pass's gradient of W_dec through the main (not the AuxK) reconstruction, laid out like W_dec."""


def topk_workspace(
    batch: int, W_enc: Float[Tensor, "d_in d_sae"], W_dec: Float[Tensor, "d_sae d_out"], k: int
) -> TopKWorkspace:
    """An (uninitialised) workspace for sparse_topk_encode and sparse_decode on batches of `batch` rows, with
    the dtype, device and memory layout of the weights it serves."""
    return TopKWorkspace(
        W_enc.new_empty(batch, W_enc.shape[1]),
        W_enc.new_empty(batch, k),
        torch.empty(batch, k, dtype=torch.long, device=W_enc.device),
        torch.empty_like(W_enc, memory_format=torch.preserve_format),
        torch.empty_like(W_dec, memory_format=torch.preserve_format),
    )


def _encode_pre_topk(
    x_in: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, work: TopKWorkspace | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(pre-activations, top-k values, their latent ids), in `work`'s tensors when given."""
    if work is not None and work.pre_acts.shape != (x_in.shape[0], W_enc.shape[1]):
        raise ValueError(
            f"TopK workspace holds pre-activations of shape {tuple(work.pre_acts.shape)}, the batch needs "
            f"{(x_in.shape[0], W_enc.shape[1])}; build it with topk_workspace for this batch size"
        )
    if work is None:
        pre = torch.mm(x_in, W_enc).add_(b_enc)  # cheaper than addmm, which first copies b_enc into every row
        return pre, *pre.topk(k, dim=-1, sorted=False)
    pre = torch.mm(x_in, W_enc, out=work.pre_acts).add_(b_enc)
    top_pre, top_idx = torch.topk(pre, k, dim=-1, sorted=False, out=(work.top_pre, work.top_indices))
    return pre, top_pre, top_idx


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, b_dec, W_enc, b_enc, k, dead_mask, n_aux, work):  # type: ignore[override]
        x_in = x if b_dec is None else x - b_dec
        pre, top_pre, top_idx = _encode_pre_topk(x_in, W_enc, b_enc, k, work)
        aux_pre, aux_idx = top_dead_latents(pre, dead_mask, n_aux)
        acts, aux_acts = top_pre.relu(), aux_pre.relu()
        all_idx = torch.cat([top_idx, aux_idx], dim=1)
        ctx.save_for_backward(x_in, W_enc, all_idx, torch.cat([acts, aux_acts], dim=1) > 0)
        ctx.n_top, ctx.grad_W_enc = k, work.grad_W_enc if work is not None else None
        ctx.mark_non_differentiable(top_idx, aux_idx, pre)
        ctx.set_materialize_grads(False)  # else autograd fills a (batch, d_sae) zero gradient for `pre`
        return acts, top_idx, aux_acts, aux_idx, pre

    @staticmethod
    def backward(ctx: Any, g_acts, _g_idx, g_aux, _g_aux_idx, _g_pre):  # type: ignore[override]
        x_in, W_enc, all_idx, active = ctx.saved_tensors
        batch, n_top, n_all = x_in.shape[0], ctx.n_top, all_idx.shape[1]
        g_acts = g_acts if g_acts is not None else x_in.new_zeros(batch, n_top)
        g_aux = g_aux if g_aux is not None else x_in.new_zeros(batch, n_all - n_top)
        grad_pre = torch.cat([g_acts, g_aux], dim=1) * active  # ReLU gradient at the selected latents
        d_sae = W_enc.shape[1]
        grad_b_enc = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
        grad_b_enc.index_add_(0, all_idx.flatten(), grad_pre.flatten().to(W_enc.dtype))
        grad_W_enc = None
        if ctx.needs_input_grad[2] and ctx.grad_W_enc is None:
            grad_W_enc = latent_major_sum(all_idx, grad_pre, x_in, d_sae).t()
        elif ctx.needs_input_grad[2]:
            latent_major_sum(all_idx, grad_pre, x_in, d_sae, ctx.grad_W_enc.t())
            grad_W_enc = ctx.grad_W_enc  # the workspace's own tensor, see TopKWorkspace
        grad_x_in = None
        if ctx.needs_input_grad[0]:
            grad_x_in = F.embedding_bag(
                all_idx, W_enc.t().contiguous(), mode="sum", per_sample_weights=grad_pre
            )
        # b_dec only shifts the input: its gradient is -sum_b grad_x_in[b] = -W_enc @ grad_b_enc.
        grad_b_dec = -(W_enc @ grad_b_enc) if ctx.needs_input_grad[1] else None
        return grad_x_in, grad_b_dec, grad_W_enc, grad_b_enc, None, None, None, None


def sparse_topk_encode(
    x: Float[Tensor, "batch d_in"],
    b_dec: Float[Tensor, " d_in"] | None,
    W_enc: Float[Tensor, "d_in d_sae"],
    b_enc: Float[Tensor, " d_sae"],
    k: int,
    dead_mask: Bool[Tensor, " d_sae"] | None = None,
    n_aux: int = 0,
    work: TopKWorkspace | None = None,
) -> TopKSelection:
    """ReLU of the top-k pre-activations of (x - b_dec) @ W_enc + b_enc (x @ W_enc + b_enc when b_dec is None,
    as for a transcoder), and of the top-n_aux dead ones.

    The backward pass only reads the selected latents; `pre_acts` carries no gradient. With `work` the
    pre-activations and the top-k selection are written into its tensors, and the backward pass writes W_enc's
    gradient into `work.grad_W_enc` (same numbers, no fresh pages).
    """
    return TopKSelection(*_TopKEncode.apply(x, b_dec, W_enc, b_enc, k, dead_mask, n_aux, work))


# ---------------------------------------------------------------- losses and metrics


def mse_loss(x_hat: Float[Tensor, "batch d_in"], x: Float[Tensor, "batch d_in"]) -> Float[Tensor, ""]:
    """Squared error summed over features, averaged over the batch."""
    return (x_hat - x).pow(2).sum(-1).mean()


def fraction_of_variance_unexplained(
    x_hat: Float[Tensor, "batch d_in"], x: Float[Tensor, "batch d_in"]
) -> Float[Tensor, ""]:
    """Squared error over the total variance of x around its batch mean."""
    return (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


def auxk_loss(
    target: Float[Tensor, "batch d_target"], out: SAEOutput, W_dec: Float[Tensor, "d_sae d_target"]
) -> Float[Tensor, ""]:
    """AuxK (OpenAI, 2024): the top dead latents reconstruct the main reconstruction's residual, target - x_hat
    (the target being the input itself for an SAE).

    Squared error summed over features and averaged over the batch, like `mse_loss`; zero without dead
    latents.
    """
    if out.aux_indices.shape[1] == 0:
        return target.new_zeros(())
    residual = (target - out.x_hat).detach()
    residual_hat = sparse_decode(out.aux_acts, out.aux_indices, W_dec)
    return (residual_hat - residual).pow(2).sum(-1).mean()


def all_latents(batch: int, d_sae: int, device: torch.device) -> Int64[Tensor, "batch d_sae"]:
    """Indices of a dense architecture's SAEOutput: every latent, in order (a broadcast view)."""
    return torch.arange(d_sae, device=device).expand(batch, d_sae)


def no_latents(batch: int, like: Tensor) -> tuple[Float[Tensor, "batch 0"], Int64[Tensor, "batch 0"]]:
    """Empty (acts, indices) pair, for architectures without AuxK."""
    return like.new_zeros(batch, 0), torch.zeros(batch, 0, dtype=torch.long, device=like.device)


def dense_output(
    sae: "SAE",
    x: Float[Tensor, "batch d_in"],
    pre_acts: Float[Tensor, "batch d_sae"],
    acts: Float[Tensor, "batch d_sae"],
    aux: tuple[Float[Tensor, "batch n_aux"], Int64[Tensor, "batch n_aux"]] | None = None,
) -> SAEOutput:
    """The forward output of a dense architecture: every latent listed, decoded by one matmul (plus the skip
    term of a skip-transcoder); `aux` is the AuxK (acts, indices) pair, or None for architectures without AuxK."""
    aux_acts, aux_indices = aux if aux is not None else no_latents(x.shape[0], x)
    return SAEOutput(
        x_hat=acts @ sae.W_dec + sae.b_dec + sae.skip(x),
        acts=acts,
        indices=all_latents(x.shape[0], sae.cfg.d_sae, x.device),
        pre_acts=pre_acts,
        aux_acts=aux_acts,
        aux_indices=aux_indices,
    )


def dense_latents(out: SAEOutput, d_sae: int) -> Float[Tensor, "batch d_sae"]:
    """The latent activations of a forward output as a dense (batch, d_sae) matrix."""
    return out.acts.new_zeros(out.acts.shape[0], d_sae).scatter_add(1, out.indices, out.acts)


def latent_fire_counts(out: SAEOutput, d_sae: int) -> Int64[Tensor, " d_sae"]:
    """How many inputs of the batch each latent fired (activation > 0) on.

    Counts without selecting the fired entries (a boolean-mask gather): a dense architecture's `indices` is a
    broadcast `arange` (stride 0 over the batch), so its counts are column sums; sparse ones scatter-add."""
    fired = out.acts.detach() > 0
    if out.indices.shape[1] == d_sae and out.indices.stride(0) == 0:
        return fired.sum(0, dtype=torch.long)
    counts = torch.zeros(d_sae, dtype=torch.long, device=fired.device)
    return counts.index_add_(0, out.indices.flatten(), fired.flatten().long())


def mean_l0(out: SAEOutput) -> Float[Tensor, ""]:
    """Mean number of active latents per input."""
    return (out.acts.detach() > 0).sum(-1).float().mean()


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel: 1 on (-1/2, 1/2), else 0."""
    return (u.abs() < 0.5).to(u.dtype)
