"""Baselines that need no cleverness, so that every circuit method's number can be read against them.

- `random`: i.i.d. uniform scores for every node and edge (seeded); its expected AUC is 0.5 and its spread
  over seeds shows how far chance alone moves a number.
- `layer_order`: lower layer first. Node score −layer; edge score −(sender layer) − (receiver layer)/(L+2),
  so edges leaving earlier senders rank first and, among them, those reaching earlier receivers.
- `output_change`: how much a node's output moves when the prompt is corrupted, with no SAE: the mean over
  prompts and positions (up to the answer position) of ‖out_clean − out_corrupted‖₂, where out is a head's
  z·W_O or an MLP's output. Edge score = product of its endpoints' node scores divided by the largest node
  score (the input and the logits count as 1): an edge ranks high when both ends move.
- `weight_norm` (ours): the weights alone, no prompt: a head's ‖W_V^h W_O^h‖_F (the size of what its OV
  circuit can write), an MLP's ‖W_in‖_F · ‖W_out‖_F (· ‖W_gate‖_F when gated); LayerNorm weights are not
  folded in, and heads and MLPs are on different scales (node metrics over heads compare heads only); edges as
  `output_change`'s, the product of the ends over the largest node score. With `visible` (ours) a head's
  score is the norm of what remains after LayerNorm folding and centring (`ov_norms`). A model trained so that
  only some units matter can leave those units' weights larger than the rest (the SIIT models' circuit heads
  grew 3-4x from their initial norm while the other heads stayed near it); this baseline shows how much of a
  circuit that alone gives away.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.circuits.forward import clean_run
from saelab.circuits.graph import Graph, Node
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.types import MethodOutput


@dataclass(frozen=True)
class RandomConfig:
    """Settings of the random baseline."""

    seed: int = 0
    """Seed of the score generator (the runner sets it to the prompt seed)."""


@dataclass(frozen=True)
class LayerOrderConfig:
    """The layer-order baseline has no settings."""


@dataclass(frozen=True)
class OutputChangeConfig:
    """The output-change baseline has no settings (the distance and positions are fixed, see the module)."""


@dataclass(frozen=True)
class WeightNormConfig:
    """Settings of the weight-norm baseline."""

    visible: bool = False
    """Ours: score heads by `ov_norms(model, visible=True)` (the OV map without what LayerNorms remove)
    instead of the raw ‖W_V^h W_O^h‖_F. MLPs are scored as always."""


def run_random(model: HookedTransformer, problem: CircuitProblem, config: RandomConfig) -> MethodOutput:
    graph = Graph.from_config(model.cfg)
    generator = torch.Generator().manual_seed(config.seed)
    nodes = torch.rand(len(graph.nodes), generator=generator, dtype=torch.float64).tolist()
    edges = torch.rand(graph.n_edges, generator=generator, dtype=torch.float64).tolist()
    return MethodOutput(
        dict(zip(graph.nodes, nodes, strict=True)), dict(zip(graph.edges, edges, strict=True))
    )


def run_layer_order(
    model: HookedTransformer, problem: CircuitProblem, config: LayerOrderConfig
) -> MethodOutput:
    graph = Graph.from_config(model.cfg)
    nodes = {n: -float(n.layer) for n in graph.nodes}
    depth = graph.n_layers + 2
    edges = {e: -float(e.sender.layer) - e.receiver.node.layer / depth for e in graph.edges}
    return MethodOutput(nodes, edges)


@torch.no_grad()
def output_distances(model: HookedTransformer, problem: CircuitProblem) -> Float[Tensor, " n_senders"]:
    """Per sender: mean over prompts and positions ≤ end of ‖clean output − corrupted output‖₂."""
    graph = Graph.from_config(model.cfg)
    total = torch.zeros(len(graph.senders), dtype=torch.float64)
    count = 0
    for batch in problem.batches:
        clean = clean_run(model, graph, batch.clean, batch.end).senders
        corrupted = clean_run(model, graph, batch.corrupted, batch.end).senders
        mask = torch.arange(batch.clean.shape[1])[None, :] <= batch.end[:, None]
        distance = (clean - corrupted).double().norm(dim=-1)  # [batch, pos, n_senders]
        per_prompt = (distance * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        total += per_prompt.sum(0)
        count += len(batch.end)
    return total / count


def run_output_change(model: HookedTransformer, problem: CircuitProblem, config: OutputChangeConfig
                      ) -> MethodOutput:
    graph = Graph.from_config(model.cfg)
    distances = output_distances(model, problem)
    nodes = {n: float(distances[graph.sender_index[n]]) for n in graph.nodes}
    return MethodOutput(nodes, _end_product_edges(graph, nodes))


def _end_product_edges(graph: Graph, nodes: dict[Node, float]) -> dict:
    """Edge score = product of its ends' node scores over the largest node score (input and logits: 1)."""
    top = max(max(nodes.values()), 1e-12)

    def end(node: Node) -> float:
        return nodes[node] / top if node in nodes else 1.0

    return {e: end(e.sender) * end(e.receiver.node) for e in graph.edges}


def ov_norms(model: HookedTransformer, visible: bool = False) -> Float[Tensor, "n_layers n_heads"]:
    """Per head ‖W_V^h W_O^h‖_F (differentiable). `visible` (ours): the norm of the map the head applies to
    its LayerNorm's centred, normalised input, with the LayerNorm weight folded into W_V and the mean
    direction projected out on both sides (a centred input has no mean component, and every reader's
    LayerNorm removes the mean the head writes): what TransformerLens's fold_ln and center_writing_weights
    leave, i.e. what no LayerNorm removes (it still counts directions that no downstream weight reads, and
    ignores the readers' own LayerNorm weights). Only for models with LayerNorm ("LN" or "LNPre")."""
    norms = []
    for block in model.blocks:
        ov = block.attn.W_V.float() @ block.attn.W_O.float()  # [n_heads, d_model in, d_model out]
        if visible:
            kind = model.cfg.normalization_type
            if kind not in ("LN", "LNPre"):
                raise ValueError(f"ov_norms(visible=True) needs LayerNorm before attention; this model's "
                                 f"normalization_type is {kind!r}: use the raw norms")
            if kind == "LN":
                ov = block.ln1.w.float()[None, :, None] * ov
            ov = ov - ov.mean(dim=1, keepdim=True)
            ov = ov - ov.mean(dim=2, keepdim=True)
        norms.append(ov.flatten(1).norm(dim=1))
    return torch.stack(norms)


@torch.no_grad()
def run_weight_norm(model: HookedTransformer, problem: CircuitProblem, config: WeightNormConfig
                    ) -> MethodOutput:
    graph = Graph.from_config(model.cfg)
    heads = ov_norms(model, visible=config.visible)
    nodes = {}
    for node in graph.nodes:
        if node.kind == "head":
            nodes[node] = float(heads[node.layer, node.head])
            continue
        mlp = model.blocks[node.layer].mlp
        if not (hasattr(mlp, "W_in") and hasattr(mlp, "W_out")):
            raise ValueError(f"weight_norm: the MLP of layer {node.layer} ({type(mlp).__name__}) has no "
                             "W_in / W_out (a mixture of experts?); use another baseline for this model")
        size = mlp.W_in.float().norm() * mlp.W_out.float().norm()
        if hasattr(mlp, "W_gate"):
            size = size * mlp.W_gate.float().norm()
        nodes[node] = float(size)
    return MethodOutput(nodes, _end_product_edges(graph, nodes))
