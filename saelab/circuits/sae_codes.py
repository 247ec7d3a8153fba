"""Discrete-SAE codes (O'Neill & Bui 2024): circuits from integer codes of each head's output.

Each head's output z·W_O (mean over positions, or at the answer position) is collected on positive prompts
(clean: the answer is inferable) and negative prompts (their corruptions). One small SAE shared by all heads is
trained on these vectors, full batch. Each (prompt, head) gets an integer code (the argmax latent, the top-k
latents as one code, or a VQ codebook's codes). A head's score is the number of its codes that occur on
positives but never on negatives; an edge's score is the same count over co-occurring code pairs of two heads.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.circuits.graph import CHANNELS, Edge, Graph, Node, Receiver
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.types import MethodOutput

CODE_KINDS = ("argmax", "topk", "vq")
POSITION_MODES = ("mean", "end")
SCALES = ("head", "global")


@dataclass(frozen=True)
class SAECodesConfig:
    """Settings of the discrete-SAE circuit method."""

    codes: Literal["argmax", "topk", "vq"] = "argmax"
    """"argmax" / "topk": a ReLU+L1 SAE's strongest latent / k strongest latents (as one code);
    "vq": a vector-quantised codebook SAE's k codes (as one code)."""
    k: int = 2
    """Latents per code for "topk", codebook ids per input for "vq" (ignored by "argmax")."""
    position: Literal["mean", "end"] = "end"
    """Head output taken at the answer position, or averaged over the prompt's positions up to it. "end" is
    the default because it ranks heads far better on the bundled models (node AUC, 2 seeds of 10 prompts,
    argmax codes: IOI 0.85 vs 0.58, greater-than 0.97 vs 0.50 with "mean")."""
    scale: Literal["head", "global"] = "head"
    """Divide each head's vectors by that head's mean norm (every head weighs alike in the shared SAE's
    loss), or all vectors by one global mean norm (then large-norm heads dominate what the SAE learns)."""
    d_sae: int = 200
    """Latents (codebook size for "vq")."""
    l1_coefficient: float = 0.02
    """L1 weight of the ReLU SAE (inputs are scaled to unit mean norm)."""
    steps: int = 300
    """Full-batch Adam steps."""
    lr: float = 1e-2
    """Adam learning rate."""
    normalised: bool = False
    """Node score = positive-only codes / distinct positive codes, instead of the raw count."""
    seed: int = 0
    """SAE initialisation seed."""

    def __post_init__(self) -> None:
        if self.codes not in CODE_KINDS:
            raise ValueError(f"codes {self.codes!r} is not one of {CODE_KINDS}")
        if self.scale not in SCALES:
            raise ValueError(f"scale {self.scale!r} is not one of {SCALES}")
        if self.position not in POSITION_MODES:
            raise ValueError(f"position {self.position!r} is not one of {POSITION_MODES}")
        for name in ("k", "d_sae", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}")
        if self.l1_coefficient < 0 or self.lr <= 0:
            raise ValueError(f"l1_coefficient must be ≥ 0 and lr > 0, got {self.l1_coefficient}, {self.lr}")


class HeadCodes(NamedTuple):
    """Integer codes of every head on the positive and the negative prompts."""

    positive: Int64[Tensor, "n_positive n_heads"]
    negative: Int64[Tensor, "n_negative n_heads"]


def head_vectors(model: HookedTransformer, problem: CircuitProblem, position: str
                 ) -> tuple[Float[Tensor, "n_pos n_heads d_model"], Float[Tensor, "n_neg n_heads d_model"]]:
    """Every head's output z·W_O on the clean (positive) and corrupted (negative) prompts, one vector each:
    the mean over positions up to the answer position, or the value at it."""
    from saelab.activations import HookSite, Positions, collect

    sites = [HookSite(layer, "head_result") for layer in range(model.cfg.n_layers)]
    out: dict[bool, list[Tensor]] = {True: [], False: []}
    for batch in problem.batches:
        mask = torch.arange(batch.clean.shape[1])[None, :] <= batch.end[:, None]
        positions = Positions.last(batch.end) if position == "end" else Positions.mean(mask)
        for tokens, positive in ((batch.clean, True), (batch.corrupted, False)):
            acts = collect(model, tokens, sites, positions)
            out[positive].append(torch.cat([acts[site] for site in sites], dim=1))
    return torch.cat(out[True]), torch.cat(out[False])


@contextmanager
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: for a few hundred small vectors, thread hand-offs cost more than they
    save, and on a busy machine a second spinning thread can make each step tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_shared_sae(x: Float[Tensor, "n d_in"], config: SAECodesConfig):
    """A ReLU+L1 (or VQ) SAE trained full-batch on `x` (already scaled to unit mean norm)."""
    from saelab.sae import SAE, SAEConfig, replace_dead_codes_

    architecture = "vq" if config.codes == "vq" else "relu_l1"
    cfg = SAEConfig(
        architecture=architecture,
        d_in=x.shape[1],
        d_sae=config.d_sae,
        k=config.k,
        l1_coefficient=config.l1_coefficient,
        normalize_activations=False,
        seed=config.seed,
    )
    sae = SAE(cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.steps):
        out = sae(x)
        loss = sae.loss(x, out).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sae.post_step_(out)
        if architecture == "vq" and step % 50 == 0 and step < config.steps // 2:
            used = torch.zeros(config.d_sae, dtype=torch.bool)
            used[out.indices.flatten()] = True
            replace_dead_codes_(sae, ~used, x, generator)
    return sae.eval()


@torch.no_grad()
def integer_codes(sae, x: Float[Tensor, "n d_in"], config: SAECodesConfig) -> Int64[Tensor, " n"]:
    """One integer per input: the argmax latent, or an id for the input's tuple of k codes."""
    from saelab.sae import argmax_codes, topk_codes, vq_codes

    if config.codes == "argmax":
        return argmax_codes(sae, x)
    multi = vq_codes(sae, x) if config.codes == "vq" else topk_codes(sae, x, config.k).sort(dim=1).values
    return torch.unique(multi, dim=0, return_inverse=True)[1]


def scaled(vectors: Float[Tensor, "n n_heads d_model"], scale: str) -> Float[Tensor, "n n_heads d_model"]:
    """Vectors divided by their head's mean norm ("head") or by the mean norm of all of them ("global")."""
    norms = vectors.norm(dim=-1)
    mean = norms.mean(dim=0) if scale == "head" else norms.mean().expand(norms.shape[1])
    return vectors / mean.clamp_min(1e-12)[None, :, None]


def discrete_codes(model: HookedTransformer, problem: CircuitProblem, config: SAECodesConfig) -> HeadCodes:
    """Collect head outputs, train the shared SAE, and code every (prompt, head)."""
    positive, negative = head_vectors(model, problem, config.position)
    x = scaled(torch.cat([positive, negative]).float(), config.scale).flatten(0, 1)
    with torch.random.fork_rng(), one_thread():
        torch.manual_seed(config.seed)
        sae = train_shared_sae(x, config)
    codes = integer_codes(sae, x, config).reshape(-1, positive.shape[1])
    return HeadCodes(codes[: positive.shape[0]], codes[positive.shape[0] :])


def node_counts(codes: HeadCodes) -> tuple[list[float], list[float]]:
    """Per head: the number of codes seen on positives only, and the number of distinct positive codes."""
    pos, neg = codes.positive.T.tolist(), codes.negative.T.tolist()
    only = [float(len(set(p) - set(n))) for p, n in zip(pos, neg, strict=True)]
    return only, [float(len(set(p))) for p in pos]


def pair_counts(codes: HeadCodes, pairs: list[tuple[int, int]]) -> list[float]:
    """For each head pair (a, b): the code pairs (code_a, code_b) co-occurring on positives only."""
    pos, neg = codes.positive.T.tolist(), codes.negative.T.tolist()
    out = []
    for a, b in pairs:
        out.append(float(len(set(zip(pos[a], pos[b], strict=True)) - set(zip(neg[a], neg[b], strict=True)))))
    return out


def code_scores(graph: Graph, codes: HeadCodes, normalised: bool) -> MethodOutput:
    """Node scores from head codes, edge scores from code pairs of heads in different layers."""
    heads = graph.heads
    only, distinct = node_counts(codes)
    raw = dict(zip(heads, only, strict=True))
    norm = {h: o / max(d, 1.0) for h, o, d in zip(heads, only, distinct, strict=True)}
    pairs = [(i, j) for i, a in enumerate(heads) for j, b in enumerate(heads) if a.layer < b.layer]
    counts = pair_counts(codes, pairs)
    edges = _head_pair_edges(graph, heads, pairs, counts)
    from_edges = dict.fromkeys(heads, 0.0)
    for (i, j), count in zip(pairs, counts, strict=True):
        from_edges[heads[i]] += count
        from_edges[heads[j]] += count
    return MethodOutput(
        node_scores=norm if normalised else raw,
        edge_scores=edges,
        extra_node_scores={"raw": raw, "normalised": norm, "from_edges": from_edges},
    )


def _head_pair_edges(graph: Graph, heads: tuple[Node, ...], pairs, counts) -> dict[Edge, float]:
    """Every graph edge scored 0, then each head pair's count on its q, k and v edges."""
    edges = dict.fromkeys(graph.edges, 0.0)
    for (i, j), count in zip(pairs, counts, strict=True):
        for channel in CHANNELS:
            edges[Edge(heads[i], Receiver(heads[j], channel))] = count
    return edges


def run_sae_codes(model: HookedTransformer, problem: CircuitProblem, config: SAECodesConfig) -> MethodOutput:
    codes = discrete_codes(model, problem, config)
    return code_scores(Graph.from_config(model.cfg), codes, config.normalised)
