"""Edge attribution patching (EAP, Syed et al. 2023) and EAP with integrated gradients (Hanna et al. 2024).

Score of edge s → r ≈ metric(edge patched) − metric(clean), to first order:
    (corrupted_s − clean_s) · ∂metric/∂(input of r)
EAP takes the gradient on the clean run (one corrupted forward, one clean forward + backward per batch);
EAP-IG averages it over runs whose input embeddings are interpolated from corrupted to clean, at
α = k/m for k = 0, …, m−1 (Hanna et al. 2024: the corrupted end included, the clean end left out).
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.circuits.forward import (
    clean_run,
    end_logits,
    graph_hooks_enabled,
    receiver_hook_points,
    sender_hooks,
)
from saelab.circuits.graph import Graph
from saelab.circuits.problem import CircuitProblem, PromptBatch
from saelab.circuits.types import MethodOutput


@dataclass(frozen=True)
class EAPConfig:
    """Settings of edge attribution patching (plain EAP has none to tune)."""


@dataclass(frozen=True)
class EAPIGConfig:
    """Settings of EAP with integrated gradients over the input embeddings."""

    steps: int = 5
    """m: interpolation points α = k/m, k = 0, …, m−1, between corrupted (α=0) and clean (α=1) embeddings."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")


@contextmanager
def frozen_parameters(model: HookedTransformer) -> Iterator[None]:
    """Parameters stop requiring grad for the duration, so a backward pass computes only what we ask."""
    before = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in before:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def _receiver_gradients(
    model: HookedTransformer,
    graph: Graph,
    batch: PromptBatch,
    n_prompts: int,
    embed_in: Tensor | None = None,
    record: Tensor | None = None,
) -> list[tuple[object, Tensor]]:
    """∂(Σ metric / n_prompts)/∂(receiver input) for every receiver group, on one clean run (its input
    embeddings replaced by `embed_in` if given). `record`, if given, receives every sender's output."""
    leaves: list[tuple[object, Tensor]] = []

    def add_leaf(columns):
        def hook(x: Tensor, hook) -> Tensor:
            leaf = torch.zeros_like(x, requires_grad=True)
            leaves.append((columns, leaf))
            return x + leaf

        return hook

    hooks = [(point.hook_name, add_leaf(point.columns)) for point in receiver_hook_points(graph)]
    if embed_in is not None:
        hooks.append((HookSite(0, "resid_pre").hook_name, lambda x, hook: embed_in))
    if record is not None:

        def write(rows: slice, value: Tensor) -> None:
            record[:, :, rows] = value.detach()

        hooks += sender_hooks(model, graph, write)
    with graph_hooks_enabled(model), frozen_parameters(model), torch.enable_grad():
        resid = model.run_with_hooks(batch.clean, fwd_hooks=hooks, stop_at_layer=graph.n_layers)
        value = batch.metric(end_logits(model, resid, batch.end)).sum() / n_prompts
        grads = torch.autograd.grad(value, [leaf for _, leaf in leaves])
    return [(columns, grad) for (columns, _), grad in zip(leaves, grads, strict=True)]


def _add_scores(scores: Tensor, delta: Tensor, gradients: list[tuple[object, Tensor]], weight: float) -> None:
    """scores[:, receivers] += weight · Σ_{batch, pos} delta_s · grad_r, for each receiver group."""
    for columns, grad in gradients:
        if isinstance(columns, slice):
            part = einops.einsum(delta, grad, "b p s d, b p h d -> s h")
        else:
            part = einops.einsum(delta, grad, "b p s d, b p d -> s")[:, None]
            columns = slice(columns, columns + 1)
        scores[:, columns] += weight * part.double()


def attribution_scores(
    model: HookedTransformer, problem: CircuitProblem, alphas: Sequence[float] | None = None
) -> Float[Tensor, "n_senders n_receivers"]:
    """Signed edge scores (zero off the graph's edges); `alphas` None is plain EAP, else EAP-IG's points.

    Plain EAP costs one corrupted forward and one clean forward + backward per batch (the clean sender
    outputs are recorded during the gradient run)."""
    graph = Graph.from_config(model.cfg)
    scores = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.float64)
    for batch in problem.batches:
        corrupted = clean_run(model, graph, batch.corrupted, batch.end).senders
        if alphas is None:
            clean = torch.zeros_like(corrupted)
            gradients = _receiver_gradients(model, graph, batch, problem.n_prompts, record=clean)
            _add_scores(scores, corrupted - clean, gradients, 1.0)
            continue
        clean = clean_run(model, graph, batch.clean, batch.end).senders
        corrupted_in, clean_in = corrupted[:, :, 0], clean[:, :, 0]
        for a in alphas:
            gradients = _receiver_gradients(model, graph, batch, problem.n_prompts,
                                            corrupted_in + a * (clean_in - corrupted_in))
            _add_scores(scores, corrupted - clean, gradients, 1.0 / len(alphas))
    return scores * graph.edge_mask


def edge_output(graph: Graph, scores: Float[Tensor, "n_senders n_receivers"]) -> MethodOutput:
    """Edge scores |s|; node score = |sum of the node's outgoing edge scores| (its own attribution)."""
    edges = dict(zip(graph.edges, scores[graph.edge_mask].abs().tolist(), strict=True))
    signed = {node: float(scores[graph.sender_index[node]].sum()) for node in graph.nodes}
    return MethodOutput(
        node_scores={n: abs(v) for n, v in signed.items()},
        edge_scores=edges,
        extra_node_scores={"signed": signed},
    )


def run_eap(model: HookedTransformer, problem: CircuitProblem, config: EAPConfig) -> MethodOutput:
    return edge_output(Graph.from_config(model.cfg), attribution_scores(model, problem))


def ig_alphas(steps: int) -> list[float]:
    """Hanna et al.'s interpolation points k/m, k = 0, …, m−1."""
    return [k / steps for k in range(steps)]


def run_eap_ig(model: HookedTransformer, problem: CircuitProblem, config: EAPIGConfig) -> MethodOutput:
    alphas = ig_alphas(config.steps)
    return edge_output(Graph.from_config(model.cfg), attribution_scores(model, problem, alphas))
