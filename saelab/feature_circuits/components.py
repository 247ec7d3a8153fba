"""Head/MLP scores from sparse feature circuits: saelab's method "feature_circuit_components" (ours).

The idea is the discrete-SAE authors' follow-up (github.com/charlieoneill11/transcoder-sae-circuits,
src/circuit_discovery.py `get_heads_and_mlps_in_graph`): build feature-level circuits over many prompts and
ask how often, and how strongly, each head's and MLP's latents appear in them. Their graphs come from their
own per-prompt greedy discovery; ours are per-prompt sparse feature circuits (Marks et al., `sparse`), so
the method is ours, not their protocol:

- node effects of every latent on each prompt (summed over positions; attribution patching by default);
  a latent is in a prompt's circuit if |its effect| > T_N;
- each latent is shared among components: an attn_z latent among the heads by each head's share of the
  decoder norm (Kissane et al.'s weight-based head attribution; with `head_share="output"`, ours, by the norm
  of what each head's block of the decoder writes to the residual stream, ‖d_h W_O^h‖, so a head whose z is
  large but whose W_O is small gets a small share); an attn_out latent among the heads by the
  norm of its decoder direction projected onto each head's output space (the row space of W_O^h; ours); an
  mlp_out / mlp_post latent, or a transcoder's that writes an MLP's output, belongs to that MLP; residual-
  stream latents belong to no component and are left out, as are error terms;
- score "strength": mean over prompts of Σ_{latents in the prompt's circuit} share · |effect|;
  "frequency": mean over prompts of Σ share (how many circuit latents the component has, per prompt).
"""

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.circuits.graph import Graph, Node, head_node, mlp_node
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.types import MethodOutput
from saelab.feature_circuits.sparse import FeatureCircuitConfig, Keep, Placed, measure, place

SCORES = ("strength", "frequency")
HEAD_SHARES = ("decoder", "output")
_MLP_KINDS = ("mlp_out", "mlp_post")


@dataclass(frozen=True)
class FeatureComponentsConfig:
    """Settings of the feature-circuit component score."""

    dictionaries: tuple[str, ...] = ()
    """Directories of the SAEs / transcoders (saved by `saelab train`), e.g. "<ws>/saes/<sae_id>"."""
    node_method: Literal["attrib", "ig"] = "attrib"
    """How latent effects are computed (see `sparse.FeatureCircuitConfig`)."""
    ig_steps: int = 10
    node_threshold: float = 0.01
    """Per-prompt T_N: a latent is in a prompt's circuit if |its effect summed over positions| exceeds it."""
    score: Literal["strength", "frequency"] = "strength"
    """Which of the two scores is the node score (the other is an extra score)."""
    head_share: Literal["decoder", "output"] = "decoder"
    """How an attn_z latent is shared among the heads: "decoder" (Kissane et al.: each head's share of the
    decoder norm in z space) or "output" (ours: of ‖d_h W_O^h‖, what the head's block writes)."""
    seed: int = 0
    """Unused (nothing is random); the runner sets it."""

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score {self.score!r} is not one of {SCORES}")
        if self.head_share not in HEAD_SHARES:
            raise ValueError(f"head_share {self.head_share!r} is not one of {HEAD_SHARES}")
        if self.node_threshold < 0:
            raise ValueError(f"node_threshold must be ≥ 0, got {self.node_threshold}")
        FeatureCircuitConfig(node_method=self.node_method, ig_steps=self.ig_steps)


def _normalised(norms: Float[Tensor, "d_sae n_heads"]) -> Float[Tensor, "d_sae n_heads"]:
    """Each row over its sum (uniform where the row is all zero)."""
    total = norms.sum(-1, keepdim=True)
    return torch.where(total > 0, norms / total.clamp_min(1e-300), 1.0 / norms.shape[-1]).float()


def _head_space_shares(W_dec: Float[Tensor, "d_sae d_model"], W_O: Float[Tensor, "n_heads d_head d_model"]
                       ) -> Float[Tensor, "d_sae n_heads"]:
    """‖decoder row projected onto head h's output space‖, normalised over heads (uniform if all zero)."""
    norms = []
    for h in range(W_O.shape[0]):
        basis, _ = torch.linalg.qr(W_O[h].double().T)  # [d_model, d_head], orthonormal columns
        norms.append((W_dec.double() @ basis).norm(dim=-1))
    return _normalised(torch.stack(norms, dim=-1))


def component_shares(model: HookedTransformer, p: Placed, head_share: str = "decoder"
                     ) -> tuple[list[Node], Float[Tensor, "d_sae n"]]:
    """The components a dictionary's latents belong to and each latent's share of each (see the module)."""
    from saelab.evals.attention import head_attribution, head_blocks

    layer, kind = p.write.layer, p.write.kind.name
    W_dec = p.sae.W_dec.detach()
    heads = [head_node(layer, h) for h in range(model.cfg.n_heads)]
    if kind == "attn_z" and head_share == "output":
        written = torch.einsum("shd,hdm->shm", head_blocks(W_dec.double(), model.cfg.n_heads),
                               model.blocks[layer].attn.W_O.detach().double()).norm(dim=-1)
        return heads, _normalised(written)
    if kind == "attn_z":
        return heads, head_attribution(W_dec, model.cfg.n_heads)
    if kind == "attn_out":
        return heads, _head_space_shares(W_dec, model.blocks[layer].attn.W_O.detach())
    if kind in _MLP_KINDS:
        return [mlp_node(layer)], torch.ones(W_dec.shape[0], 1)
    return [], torch.zeros(W_dec.shape[0], 0)


def top_components(model: HookedTransformer, p: Placed) -> list[str]:
    """Per latent of the dictionary, the name of the component with its largest share ("" if none: a
    residual-stream dictionary)."""
    nodes, shares = component_shares(model, p)
    if not nodes:
        return [""] * p.sae.cfg.d_sae
    return [nodes[int(i)].name for i in shares.argmax(-1)]


class HeadSplit(NamedTuple):
    """Where a circuit's latents sit, each counted at the component of its largest share, beside what an
    even spread or a random choice of the same latents would give."""

    counts: dict[str, int]
    """Component name ("0.2", "mlp1"; "" for none) → circuit latents whose largest share is there."""
    effect: dict[str, float]
    """Component name → Σ |aggregated effect| of those latents."""
    aligned: int
    """Circuit latents whose largest share is an aligned component."""
    total: int
    """Circuit latents (error terms are not latents)."""
    even: float
    """Expected `aligned` if the circuit's latents that sit in heads were spread evenly over the heads the
    dictionaries cover."""
    random: float
    """Expected `aligned` if each dictionary's circuit latents were drawn uniformly from its latents."""
    random_std: float
    """The standard deviation of that random count (hypergeometric per dictionary, independent draws)."""
    random_active: float
    """The same, drawn from the latents with mean activation > 0 on the prompts (nan without activations)."""


def head_split(model: HookedTransformer, placed: Sequence[Placed], keep: Sequence[Keep],
               effects: Sequence[Tensor], aligned: Collection[str],
               activation: Sequence[Tensor] | None = None) -> HeadSplit:
    """How many of the circuit's latents (`keep`, one per dictionary) sit in the `aligned` components, e.g.
    the heads a by-construction model's high-level variables live in. `effects` and `activation`: one
    [d_sae] tensor per dictionary (aggregated node effects; mean activations on the prompts)."""
    counts: Counter[str] = Counter()
    effect: Counter[str] = Counter()
    heads: set[str] = set()
    in_heads, random, variance, random_active = 0, 0.0, 0.0, 0.0
    for i, (p, k) in enumerate(zip(placed, keep, strict=True)):
        tops = top_components(model, p)
        chosen = k.acts.nonzero().flatten().tolist()
        for j in chosen:
            counts[tops[j]] += 1
            effect[tops[j]] += abs(float(effects[i][j]))
        is_aligned = torch.tensor([t in aligned for t in tops])
        n, share, width = len(chosen), float(is_aligned.float().mean()), len(tops)
        random += n * share
        variance += n * share * (1 - share) * (width - n) / max(width - 1, 1)
        if activation is not None:
            active = activation[i] > 0
            random_active += len(chosen) * float(is_aligned[active].float().mean()) if active.any() else 0.0
        if p.write.kind.name in ("attn_z", "attn_out"):
            heads.update(n.name for n in component_shares(model, p)[0])
            in_heads += len(chosen)
    even = in_heads * len(heads & set(aligned)) / len(heads) if heads else 0.0
    return HeadSplit(dict(counts), dict(effect), sum(counts[a] for a in aligned), sum(counts.values()), even,
                     random, variance ** 0.5, random_active if activation is not None else float("nan"))


def run_feature_components(model: HookedTransformer, problem: CircuitProblem, config: FeatureComponentsConfig
                           ) -> MethodOutput:
    from saelab.sae.io import load_sae

    if not config.dictionaries:
        raise ValueError("feature_circuit_components needs SAE directories: set FeatureComponentsConfig."
                         "dictionaries, e.g. ('<workspace>/saes/<sae_id>', ...)")
    dicts = {Path(d).name: load_sae(d, model.cfg.device) for d in config.dictionaries}
    placed = place(model, dicts)
    fc = FeatureCircuitConfig(node_method=config.node_method, ig_steps=config.ig_steps, edges=False)
    effects = measure(model, placed, problem, fc).effects
    graph = Graph.from_config(model.cfg)
    scores = {name: dict.fromkeys(graph.nodes, 0.0) for name in SCORES}
    for i, p in enumerate(placed):
        nodes, shares = component_shares(model, p, config.head_share)
        per_prompt = effects.latent[i].float()  # [n_prompts, d_sae]
        selected = (per_prompt.abs() > config.node_threshold).float()
        strength = ((selected * per_prompt.abs()) @ shares).mean(0)
        frequency = (selected @ shares).mean(0)
        for n, node in enumerate(nodes):
            scores["strength"][node] += float(strength[n])
            scores["frequency"][node] += float(frequency[n])
    other = "frequency" if config.score == "strength" else "strength"
    return MethodOutput(scores[config.score], extra_node_scores={other: scores[other]})
