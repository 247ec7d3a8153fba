"""Discrete-SAE codes (O'Neill & Bui 2024): circuits from integer codes of each head's output.

Each head's output z·W_O is collected on positive prompts (clean: the answer is inferable) and negative
prompts (their corruptions). One small SAE shared by all heads turns each (prompt, head) vector into an
integer code (the argmax latent, the top-k latents as one code, or a VQ codebook's codes). A head's score is
the number of its codes that occur on positives but never on negatives; a head pair's score is the same count
over co-occurring code pairs.

Two protocols (`SAECodesConfig.protocol`):

- "paper" follows the authors' reference code (github.com/charlieoneill11/sae-circuits):
  * positives and negatives: 250 + 250 prompts (data/gt.py `N=250`, data/ioi.py `n_prompts = 250`,
    data/ds.py `batch_size = 250`) — the runner's `paper_sae_prompts`;
  * each head's output averaged over the prompt's positions, not rescaled (data/data_utils.py
    `prompt_to_resid_stream`, resid_type "heads", position "mean");
  * the SAE (ReLU, L1, 200 latents, Adam lr 1e-3, 500 full-batch epochs, λ 0.02, 0.05 on docstring:
    experiments/main_results.py) is trained on 10 prompts drawn at random from the pooled positives and
    negatives (src/main.py `prepare_data`, `num_sae_examples = 10`), every head's vector of those prompts;
    codes are then computed on all 500 prompts, those 10 included, as src/main.py `evaluate_node_circuit`
    does (the rest only serve the reference's eval-loss printout). The reference loss is MSE averaged over
    features + λ·L1 (src/train.py `loss_fn`); saelab's ReLU SAE sums the squared error over features, so the
    same objective (times d_model, which Adam ignores) is λ·d_model;
  * node score: codes unique to positives, unnormalised (src/node.py `unique_to_positives_and_negatives`;
    the softmax in `node_circuit_prediction` is monotone and left out);
  * pair score: every ordered pair of distinct heads (src/edge.py `gen_co_occurrence_matrix`,
    `unique_co_occurrences` with normalise False), and a head-level score from it: pairs sorted by count,
    their endpoints listed in that order, and each head scored by how often it appears among the first
    N²//2 endpoints, N the number of heads (src/edge.py `edge_circuit_prediction`, k from src/main.py
    `evaluate_edge_circuit`). Ties are ordered as numpy's `argsort(...)[::-1]` orders them for a stable sort
    (later flat index first). This head-level score is the paper's "edge" ROC AUC row.
- "saelab" is our variant (method names `sae_codes_saelab`, `_topk`, `_vq`): the same 10 + 10 prompts train
  the SAE and are coded; head outputs at the answer position ("end") and rescaled to unit mean norm per head;
  pairs only from an earlier to a later layer (the graph's head → head edges).
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
SCALES = ("head", "global", "none")
PROTOCOLS = ("paper", "saelab")
PAPER_SETTINGS = {"codes": "argmax", "position": "mean", "scale": "none"}
"""Fields the paper protocol fixes (the reference code has no other choice)."""


@dataclass(frozen=True)
class SAECodesConfig:
    """Settings of the discrete-SAE circuit method."""

    protocol: Literal["paper", "saelab"] = "saelab"
    """"paper": O'Neill & Bui's reference protocol (see the module); "saelab": our variant."""
    codes: Literal["argmax", "topk", "vq"] = "argmax"
    """"argmax" / "topk": a ReLU+L1 SAE's strongest latent / k strongest latents (as one code);
    "vq": a vector-quantised codebook SAE's k codes (as one code)."""
    k: int = 2
    """Latents per code for "topk", codebook ids per input for "vq" (ignored by "argmax")."""
    position: Literal["mean", "end"] = "end"
    """Head output taken at the answer position, or averaged over the prompt's positions up to it (the
    paper). "end" was chosen on DEV prompt seeds 0-4 only (see BENCHMARKS.md, circuit section)."""
    scale: Literal["head", "global", "none"] = "head"
    """Divide each head's vectors by that head's mean norm (every head weighs alike in the shared SAE's
    loss), all vectors by one global mean norm, or nothing (the paper)."""
    d_sae: int = 200
    """Latents (codebook size for "vq")."""
    l1_coefficient: float = 0.02
    """L1 weight of the ReLU SAE: saelab's loss (squared error summed over features) for "saelab", the
    reference's λ (squared error averaged over features) for "paper"."""
    l1_by_task: tuple[tuple[str, float], ...] = ()
    """(problem name, L1 weight) pairs overriding `l1_coefficient` (the paper used 0.05 on docstring)."""
    train_examples: int = 10
    """"paper": prompts drawn from the pooled positives and negatives to train the SAE on; "saelab": unused
    (the SAE trains on every coded vector)."""
    steps: int = 300
    """Full-batch Adam steps."""
    lr: float = 1e-2
    """Adam learning rate."""
    normalised: bool = False
    """Node score = positive-only codes / distinct positive codes, instead of the raw count."""
    seed: int = 0
    """SAE initialisation seed."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r} is not one of {PROTOCOLS}")
        if self.protocol == "paper":
            for name, value in PAPER_SETTINGS.items():
                if getattr(self, name) != value:
                    raise ValueError(
                        f"the paper protocol uses {name}={value!r}, got {getattr(self, name)!r}; "
                        "use protocol='saelab' for variants"
                    )
        if self.codes not in CODE_KINDS:
            raise ValueError(f"codes {self.codes!r} is not one of {CODE_KINDS}")
        if self.scale not in SCALES:
            raise ValueError(f"scale {self.scale!r} is not one of {SCALES}")
        if self.position not in POSITION_MODES:
            raise ValueError(f"position {self.position!r} is not one of {POSITION_MODES}")
        for name in ("k", "d_sae", "steps", "train_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}")
        if self.l1_coefficient < 0 or self.lr <= 0:
            raise ValueError(f"l1_coefficient must be ≥ 0 and lr > 0, got {self.l1_coefficient}, {self.lr}")

    def l1_for(self, problem_name: str, d_in: int) -> float:
        """The L1 weight in saelab's loss for this problem (the paper's λ times d_in, see the module)."""
        l1 = dict(self.l1_by_task).get(problem_name, self.l1_coefficient)
        return l1 * d_in if self.protocol == "paper" else l1


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


def train_shared_sae(x: Float[Tensor, "n d_in"], config: SAECodesConfig, l1_coefficient: float):
    """A ReLU+L1 (or VQ) SAE trained full-batch on `x`."""
    from saelab.sae import SAE, SAEConfig, replace_dead_codes_

    architecture = "vq" if config.codes == "vq" else "relu_l1"
    cfg = SAEConfig(
        architecture=architecture,
        d_in=x.shape[1],
        d_sae=config.d_sae,
        k=config.k,
        l1_coefficient=l1_coefficient,
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
        if config.codes == "vq" and step % 50 == 0 and step < config.steps // 2:
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
    """Vectors divided by their head's mean norm ("head"), by the mean norm of all of them ("global"), or
    left as they are ("none")."""
    if scale == "none":
        return vectors
    norms = vectors.norm(dim=-1)
    mean = norms.mean(dim=0) if scale == "head" else norms.mean().expand(norms.shape[1])
    return vectors / mean.clamp_min(1e-12)[None, :, None]


def discrete_codes(model: HookedTransformer, problem: CircuitProblem, config: SAECodesConfig) -> HeadCodes:
    """Collect head outputs, train the shared SAE (on `train_examples` pooled prompts for the paper
    protocol, on everything for saelab's), and code every (prompt, head)."""
    positive, negative = head_vectors(model, problem, config.position)
    vectors = scaled(torch.cat([positive, negative]).float(), config.scale)
    generator = torch.Generator().manual_seed(config.seed)
    if config.protocol == "paper":
        if config.train_examples > vectors.shape[0]:
            raise ValueError(
                f"train_examples={config.train_examples} exceeds the {vectors.shape[0]} prompts coded"
            )
        train = vectors[torch.randperm(vectors.shape[0], generator=generator)[: config.train_examples]]
    else:
        train = vectors
    l1 = config.l1_for(problem.name, vectors.shape[-1])
    with torch.random.fork_rng(), one_thread():
        torch.manual_seed(config.seed)
        sae = train_shared_sae(train.flatten(0, 1), config, l1)
    codes = integer_codes(sae, vectors.flatten(0, 1), config).reshape(-1, positive.shape[1])
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


def ordered_pairs(n_heads: int) -> list[tuple[int, int]]:
    """Every ordered pair (a, b) of distinct head indices, row-major as the reference's N × N matrix."""
    return [(a, b) for a in range(n_heads) for b in range(n_heads) if a != b]


def heads_from_pairs(n_heads: int, pairs: list[tuple[int, int]], counts: list[float]) -> list[float]:
    """The paper's head-level score from pair counts: sort the N × N count matrix (zero diagonal) from the
    highest count down, list each pair's two heads in that order, count each head among the first N²//2."""
    matrix = torch.zeros(n_heads * n_heads, dtype=torch.float64)
    for (a, b), count in zip(pairs, counts, strict=True):
        matrix[a * n_heads + b] = count
    order = torch.argsort(matrix, stable=True).flip(0)
    endpoints = torch.stack([order // n_heads, order % n_heads], dim=1).flatten()
    kept = endpoints[: n_heads * n_heads // 2]
    return torch.bincount(kept, minlength=n_heads).double().tolist()


def code_scores(graph: Graph, codes: HeadCodes, config: SAECodesConfig) -> MethodOutput:
    """Node scores from head codes; pair scores over all ordered pairs (paper) or earlier → later layer
    pairs (saelab), written onto the graph's head → head q/k/v edges."""
    heads = graph.heads
    only, distinct = node_counts(codes)
    raw = dict(zip(heads, only, strict=True))
    norm = {h: o / max(d, 1.0) for h, o, d in zip(heads, only, distinct, strict=True)}
    if config.protocol == "paper":
        pairs = ordered_pairs(len(heads))
    else:
        pairs = [(i, j) for i, a in enumerate(heads) for j, b in enumerate(heads) if a.layer < b.layer]
    counts = pair_counts(codes, pairs)
    forward = [(p, c) for p, c in zip(pairs, counts, strict=True) if heads[p[0]].layer < heads[p[1]].layer]
    edges = _head_pair_edges(graph, heads, [p for p, _ in forward], [c for _, c in forward])
    if config.protocol == "paper":
        pair_score = dict(zip(heads, heads_from_pairs(len(heads), pairs, counts), strict=True))
        extra = {"from_pairs": pair_score}
    else:
        pair_score = dict.fromkeys(heads, 0.0)
        for (i, j), count in zip(pairs, counts, strict=True):
            pair_score[heads[i]] += count
            pair_score[heads[j]] += count
        extra = {"raw": raw, "normalised": norm, "from_edges": pair_score}
    return MethodOutput(node_scores=norm if config.normalised else raw, edge_scores=edges,
                        extra_node_scores=extra)


def _head_pair_edges(graph: Graph, heads: tuple[Node, ...], pairs, counts) -> dict[Edge, float]:
    """Every graph edge scored 0, then each head pair's count on its q, k and v edges."""
    edges = dict.fromkeys(graph.edges, 0.0)
    for (i, j), count in zip(pairs, counts, strict=True):
        for channel in CHANNELS:
            edges[Edge(heads[i], Receiver(heads[j], channel))] = count
    return edges


def run_sae_codes(model: HookedTransformer, problem: CircuitProblem, config: SAECodesConfig) -> MethodOutput:
    codes = discrete_codes(model, problem, config)
    return code_scores(Graph.from_config(model.cfg), codes, config)
