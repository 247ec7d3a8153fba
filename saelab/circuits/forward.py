"""Forward passes over the circuit graph: caching sender outputs, and runs with edges ablated.

Ablating edge s → r means receiver r reads the residual stream with sender s's output replaced by its output
on the corrupted prompt (resample ablation): r's input gets `corrupted_s − current_s` added. Ablating every
outgoing edge of a node is the same as patching the node's output.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite, block_hook
from saelab.circuits.graph import CHANNELS, Graph
from saelab.circuits.problem import CircuitProblem, PromptBatch

Hook = tuple[str, Callable]


@contextmanager
def graph_hooks_enabled(model: HookedTransformer) -> Iterator[HookedTransformer]:
    """Turn on the per-head q/k/v input hooks and the MLP input hook for the duration, then restore."""
    cfg = model.cfg
    if (
        cfg.n_key_value_heads is not None
        and cfg.n_key_value_heads != cfg.n_heads
        and not cfg.ungroup_grouped_query_attention
    ):
        raise ValueError("grouped-query attention models are not supported by the circuit graph yet")
    before = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in)
    model.set_use_split_qkv_input(True)
    if not cfg.attn_only:
        model.set_use_hook_mlp_in(True)
    try:
        yield model
    finally:
        model.set_use_split_qkv_input(before[0])
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(before[1])


def head_outputs(
    model: HookedTransformer, layer: int, z: Float[Tensor, "batch pos n_heads d_head"]
) -> Float[Tensor, "batch pos n_heads d_model"]:
    """Each head's contribution z·W_O to the residual stream (the shared b_O belongs to no head)."""
    return einops.einsum(z, model.blocks[layer].attn.W_O, "b p h dh, h dh d -> b p h d")


def end_logits(
    model: HookedTransformer, resid: Float[Tensor, "batch pos d_model"], end: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Final layer norm and unembedding applied only at each prompt's answer position."""
    rows = torch.arange(resid.shape[0], device=resid.device)
    x = resid[rows, end.to(resid.device)][:, None, :]
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[:, 0]
    cap = model.cfg.output_logits_soft_cap
    return cap * torch.tanh(logits / cap) if cap and cap > 0 else logits


class CleanRun(NamedTuple):
    """What one forward pass leaves behind for later patched runs."""

    senders: Float[Tensor, "batch pos n_senders d_model"]
    """Every sender's output (graph order)."""
    resid_pre: Float[Tensor, "n_layers batch pos d_model"]
    """The residual stream entering each block (lets a patched run start at a later layer)."""
    end_logits: Float[Tensor, "batch d_vocab"]


def sender_hooks(
    model: HookedTransformer, graph: Graph, write: Callable[[slice, Tensor], None]
) -> list[Hook]:
    """Hooks that hand every sender group's output [batch, pos, k, d_model] to `write(sender_slice,
    output)`."""
    hooks: list[Hook] = []
    for group in sender_groups(graph):

        def read(x: Tensor, hook, group=group) -> None:
            write(group.rows, head_outputs(model, group.layer, x) if group.is_heads else x[:, :, None])

        hooks.append((group.hook_name, read))
    return hooks


@torch.no_grad()
def clean_run(
    model: HookedTransformer, graph: Graph, tokens: Int[Tensor, "batch pos"], end: Int[Tensor, " batch"]
) -> CleanRun:
    """One forward pass recording every sender's output, each block's input, and the end logits."""
    batch, pos = tokens.shape
    senders = torch.zeros(batch, pos, len(graph.senders), model.cfg.d_model, dtype=model.cfg.dtype)
    resid_pre: list[Tensor] = []

    def write(index: slice, value: Tensor) -> None:
        senders[:, :, index] = value

    hooks = sender_hooks(model, graph, write)
    hooks += [
        (HookSite(layer, "resid_pre").hook_name, lambda x, hook: resid_pre.append(x.clone()))
        for layer in range(graph.n_layers)
    ]
    resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=graph.n_layers)
    return CleanRun(senders, torch.stack(resid_pre), end_logits(model, resid, end))


class CachedBatch(NamedTuple):
    """A prompt batch with its clean run and corrupted sender outputs, for many patched runs."""

    batch: PromptBatch
    clean: CleanRun
    corrupted: Float[Tensor, "batch pos n_senders d_model"]
    clean_logprobs: Float[Tensor, "batch d_vocab"]
    """float64 log-probabilities at the answer position."""
    clean_metric: Float[Tensor, " batch"]
    """float64 per-prompt metric of the clean run."""


def cache_batches(model: HookedTransformer, graph: Graph, problem: CircuitProblem) -> list[CachedBatch]:
    """Clean and corrupted runs of every batch of `problem`."""
    out = []
    for batch in problem.batches:
        clean = clean_run(model, graph, batch.clean, batch.end)
        corrupted = clean_run(model, graph, batch.corrupted, batch.end).senders
        logprobs = clean.end_logits.double().log_softmax(-1)
        out.append(CachedBatch(batch, clean, corrupted, logprobs, batch.metric(clean.end_logits).double()))
    return out


class ReceiverPoint(NamedTuple):
    """A group of receivers read at one hook point."""

    layer: int
    """Block index of the hook."""
    hook_name: str
    columns: slice | int
    """Their receiver indices: a slice over n_heads receivers for a head group (the hook tensor is
    [batch, pos, n_heads, d_model]); one index for an MLP or the logits (the hook tensor is [batch, pos,
    d_model])."""


def receiver_hook_points(graph: Graph) -> list[ReceiverPoint]:
    """Each group of receivers read at one hook point, in forward order."""
    points = []
    for layer in range(graph.n_layers):
        for channel in CHANNELS:
            points.append(ReceiverPoint(layer, block_hook(layer, f"hook_{channel}_input"),
                                        graph.head_receivers(layer, channel)))
        if graph.has_mlps:
            points.append(ReceiverPoint(layer, block_hook(layer, "hook_mlp_in"), graph.mlp_receiver(layer)))
    last = graph.n_layers - 1
    points.append(ReceiverPoint(last, HookSite(last, "resid_post").hook_name, graph.logits_receiver))
    return points


class SenderGroup(NamedTuple):
    """Senders whose outputs appear at one hook point: the input, one layer's heads, or one MLP."""

    layer: int
    """Block index (−1 for the input)."""
    rows: slice
    """Their sender indices."""
    hook_name: str
    """Where their outputs are read (heads: their z, with z·W_O applied on top)."""
    is_heads: bool
    """True for one layer's heads."""


def sender_groups(graph: Graph) -> list[SenderGroup]:
    """The input, each layer's heads and each MLP, in forward order."""
    groups = [SenderGroup(-1, slice(0, 1), HookSite(0, "resid_pre").hook_name, is_heads=False)]
    for layer in range(graph.n_layers):
        groups.append(
            SenderGroup(layer, graph.head_senders(layer), HookSite(layer, "attn_z").hook_name, True)
        )
        if graph.has_mlps:
            m = graph.mlp_sender(layer)
            groups.append(SenderGroup(layer, slice(m, m + 1), HookSite(layer, "mlp_out").hook_name, False))
    return groups


def _ablation_delta(
    diffs: dict[int, Tensor], groups: list[SenderGroup], columns: Float[Tensor, "n_senders n_cols"]
) -> Tensor | None:
    """Σ over ablated senders s of diff_s weighted by columns[s]: [batch, pos, n_cols, d_model], or None."""
    total = None
    for g, group in enumerate(groups):
        weights = columns[group.rows]
        if g not in diffs or not bool(weights.any()):
            continue
        part = einops.einsum(diffs[g], weights, "b p s d, s c -> b p c d")
        total = part if total is None else total + part
    return total


def patched_end_logits(
    model: HookedTransformer,
    graph: Graph,
    clean: CleanRun,
    corrupted_senders: Float[Tensor, "batch pos n_senders d_model"],
    ablate: Bool[Tensor, "n_senders n_receivers"],
    end: Int[Tensor, " batch"],
    start_layer: int = 0,
) -> Float[Tensor, "batch d_vocab"]:
    """End logits with the `ablate` edges reading corrupted sender outputs; all else as in the clean run.

    The run starts at block `start_layer` from the cached clean stream; that is exact when no edge into a
    receiver before `start_layer` is ablated (ACDC's reverse-topological order guarantees it).
    """
    if not 0 <= start_layer < graph.n_layers:
        raise ValueError(f"start_layer must be in [0, {graph.n_layers}), got {start_layer}")
    if bool((ablate & ~graph.edge_mask).any()):
        raise ValueError("the ablation mask marks pairs that are not edges of the graph")
    first_receiver = _first_ablated_receiver_layer(graph, ablate)
    if first_receiver < start_layer:
        raise ValueError(
            f"an edge into layer {first_receiver} is ablated; the run cannot start at {start_layer}"
        )
    groups = sender_groups(graph)
    ablated_rows = ablate.any(dim=1)
    diffs = {
        g: corrupted_senders[:, :, group.rows] - clean.senders[:, :, group.rows]
        for g, group in enumerate(groups)
        if group.layer < start_layer and bool(ablated_rows[group.rows].any())
    }
    weights = ablate.to(corrupted_senders.dtype)
    hooks = _late_sender_hooks(model, graph, groups, ablated_rows, corrupted_senders, diffs, start_layer)
    hooks += _receiver_hooks(graph, groups, weights, diffs, start_layer)
    with graph_hooks_enabled(model), torch.no_grad():
        resid = model.run_with_hooks(
            clean.resid_pre[start_layer],
            start_at_layer=start_layer,
            stop_at_layer=graph.n_layers,
            fwd_hooks=hooks,
        )
        return end_logits(model, resid, end)


def _first_ablated_receiver_layer(graph: Graph, ablate: Tensor) -> int:
    columns = ablate.any(dim=0).nonzero()[:, 0].tolist()
    layers = [graph.receivers[c].node.layer for c in columns]
    return min(layers, default=graph.n_layers)


def _late_sender_hooks(model, graph, groups, ablated_rows, corrupted, diffs, start_layer) -> list[Hook]:
    """Record corrupted − current for ablated senders computed during this run (layers ≥ start_layer)."""
    hooks: list[Hook] = []
    for g, group in enumerate(groups):
        if group.layer < start_layer or not bool(ablated_rows[group.rows].any()):
            continue

        def record(x: Tensor, hook, g=g, group=group) -> None:
            current = head_outputs(model, group.layer, x) if group.is_heads else x[:, :, None]
            diffs[g] = corrupted[:, :, group.rows] - current

        hooks.append((group.hook_name, record))
    return hooks


def _receiver_hooks(graph, groups, weights, diffs, start_layer) -> list[Hook]:
    hooks: list[Hook] = []
    for layer, name, columns in receiver_hook_points(graph):
        cols = weights[:, columns] if isinstance(columns, slice) else weights[:, columns : columns + 1]
        if not bool(cols.any()):
            continue
        if layer < start_layer:
            raise ValueError(f"receiver {name} lies before start layer {start_layer}")
        squeeze = not isinstance(columns, slice)

        def add(x: Tensor, hook, cols=cols, squeeze=squeeze) -> Tensor:
            delta = _ablation_delta(diffs, groups, cols)
            if delta is None:
                return x
            return x + (delta[:, :, 0] if squeeze else delta)

        hooks.append((name, add))
    return hooks
