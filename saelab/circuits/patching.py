"""Activation patching per node: the exact, expensive reference every other method approximates.

Effect of node n = mean over prompts of metric(clean run with n's output replaced) − metric(clean run).
"resample" replaces it with its output on the prompt's own corruption; "mean" with its mean output over the
batch's corrupted prompts at each position.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.circuits.forward import end_logits
from saelab.circuits.graph import Graph, Node
from saelab.circuits.problem import CircuitProblem, PromptBatch
from saelab.circuits.types import MethodOutput

ABLATIONS = ("resample", "mean")


@dataclass(frozen=True)
class PatchingConfig:
    """Settings of per-node activation patching."""

    ablation: Literal["resample", "mean"] = "resample"
    """What replaces a node's output: its corrupted-run value, or the corrupted batch mean per position."""

    def __post_init__(self) -> None:
        if self.ablation not in ABLATIONS:
            raise ValueError(f"ablation {self.ablation!r} is not one of {ABLATIONS}")


def _hook_name(node: Node) -> str:
    return HookSite(node.layer, "attn_z" if node.kind == "head" else "mlp_out").hook_name


@torch.no_grad()
def _sources(model: HookedTransformer, graph: Graph, batch: PromptBatch, ablation: str) -> dict[str, Tensor]:
    """Each node hook's activation on the corrupted prompts (or its batch mean, broadcast back)."""
    names = {_hook_name(n) for n in graph.nodes}
    _, cache = model.run_with_cache(batch.corrupted, names_filter=lambda name: name in names)
    if ablation == "mean":
        return {name: cache[name].mean(dim=0, keepdim=True).expand_as(cache[name]) for name in names}
    return {name: cache[name] for name in names}


@torch.no_grad()
def _patched_metric(
    model: HookedTransformer, batch: PromptBatch, node: Node, source: Tensor, resid_pre: Tensor
) -> Float[Tensor, " batch"]:
    def patch(x: Tensor, hook) -> Tensor:
        x = x.clone()
        if node.kind == "head":
            x[:, :, node.head] = source[:, :, node.head]
        else:
            x[:] = source
        return x

    resid = model.run_with_hooks(
        resid_pre,
        start_at_layer=node.layer,
        stop_at_layer=model.cfg.n_layers,
        fwd_hooks=[(_hook_name(node), patch)],
    )
    return batch.metric(end_logits(model, resid, batch.end))


@torch.no_grad()
def _clean_stream(model: HookedTransformer, batch: PromptBatch) -> tuple[Tensor, Float[Tensor, " batch"]]:
    """The clean run's block inputs [n_layers, batch, pos, d_model] and its per-prompt metric."""
    keep: list[Tensor] = []
    hooks = [
        (HookSite(layer, "resid_pre").hook_name, lambda x, hook: keep.append(x.clone()))
        for layer in range(model.cfg.n_layers)
    ]
    resid = model.run_with_hooks(batch.clean, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
    return torch.stack(keep), batch.metric(end_logits(model, resid, batch.end))


def node_effects(
    model: HookedTransformer,
    problem: CircuitProblem,
    ablation: str = "resample",
    nodes: Iterable[Node] | None = None,
) -> dict[Node, float]:
    """Signed mean effect on the metric of ablating each node's output (heads and MLPs by default; a node
    named twice is measured once)."""
    graph = Graph.from_config(model.cfg)
    nodes = list(dict.fromkeys(graph.nodes if nodes is None else nodes))
    totals = dict.fromkeys(nodes, 0.0)
    for batch in problem.batches:
        stream, clean_metric = _clean_stream(model, batch)
        sources = _sources(model, graph, batch, ablation)
        for node in nodes:
            patched = _patched_metric(model, batch, node, sources[_hook_name(node)], stream[node.layer])
            totals[node] += float((patched - clean_metric).sum())
    return {node: total / problem.n_prompts for node, total in totals.items()}


@torch.no_grad()
def metric_means(model: HookedTransformer, problem: CircuitProblem) -> tuple[float, float]:
    """Mean metric over the clean prompts and over the corrupted prompts."""
    clean = corrupted = 0.0
    for batch in problem.batches:
        for tokens, is_clean in ((batch.clean, True), (batch.corrupted, False)):
            resid = model(tokens, stop_at_layer=model.cfg.n_layers)
            value = float(batch.metric(end_logits(model, resid, batch.end)).sum())
            clean, corrupted = (clean + value, corrupted) if is_clean else (clean, corrupted + value)
    return clean / problem.n_prompts, corrupted / problem.n_prompts


def run_patching(model: HookedTransformer, problem: CircuitProblem, config: PatchingConfig) -> MethodOutput:
    effects = node_effects(model, problem, config.ablation)
    return MethodOutput(
        node_scores={n: abs(e) for n, e in effects.items()}, extra_node_scores={"signed": effects}
    )
