"""Sparse feature circuits (Marks, Rager, Michaud, Belinkov, Bau & Mueller 2024, arXiv 2403.19647).

Protocol, following the authors' code (github.com/saprmarks/feature-circuits, attribution.py, circuit.py,
ablation.py):

- Nodes: every latent of every dictionary and one error term per dictionary and position; error =
  true activation at the dictionary's target site − `SAE.reconstruct` of its input. With the latents and the
  error spliced in, the model computes exactly what it computed before.
- Node indirect effect of a on the metric m, between the clean prompt and its corruption:
  attribution patching ("attrib") ∇_a m|clean · (a_corrupt − a_clean); integrated gradients ("ig", their
  `_pe_ig`, used for nodes in `get_circuit`): the dictionary's latents and error are interpolated together,
  a_α = (1 − α) a_clean + α a_corrupt for α = k/steps, k = 0..steps−1 (steps = 10), the gradient averaged
  over the steps. One dictionary is interpolated at a time; the rest of the model runs on the clean prompt.
  An error node's effect is contracted over its d_model values.
- Aggregation "sum" (templatic tasks): effects summed over positions, then averaged over prompts.
- Edge u → d (their `jvp`): ∇_d m · ∂d/∂u · (u_corrupt − u_clean) along the paths that pass through no
  other dictionary (the authors stop gradients at intermediate submodules), computed on the clean prompt,
  with ∇_d m the same gradient the node effects used (IG-averaged for "ig") and kept only where the
  downstream node's per-prompt, per-position effect exceeds T_N; summed over both positions, averaged over
  prompts. Edges run from every dictionary to each later one; where another dictionary's site blocks every
  path (e.g. a residual-stream dictionary in between) the weight is zero. They are computed only into the
  circuit's nodes (the graph keeps no others), after the node effects of all prompts are known.
- Circuit: nodes with |aggregated effect| > T_N, edges between circuit nodes with |weight| > T_E.
- Ablation (their `run_with_ablations`, mean ablation, errors handled "default"): on the clean prompts, every
  latent and error term outside the circuit is set to its mean over the corrupted prompts at that position.
  faithfulness = (m(C) − m(∅)) / (m(M) − m(∅)); completeness is reported as the paper does, as the
  faithfulness of the complement M \\ C (0: nothing of the task is left outside the circuit).

saelab's metric is the task's (e.g. logit(IO) − logit(S)); the authors' pairs metric is its negative, which
changes signs but no |effect|. Edges into the metric node are not built (the graph type has no metric node).
A skip-transcoder's skip term is part of its site's value but no node: its change flows on as a live path.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.circuits.forward import end_logits
from saelab.circuits.problem import CircuitProblem, PromptBatch
from saelab.feature_circuits.types import FeatureEdge, FeatureGraph, FeatureNode, node_id
from saelab.sae import SAE

NODE_METHODS = ("ig", "attrib")
_KIND_ORDER = {"resid_pre": 0, "attn_z": 1, "attn_out": 2, "resid_mid": 3, "mlp_post": 4, "mlp_out": 5,
               "resid_post": 6}
"""Where each site kind sits inside a block, in forward order."""


@dataclass(frozen=True)
class FeatureCircuitConfig:
    """Settings of a sparse feature circuit (defaults: the authors' code unless said otherwise)."""

    node_method: Literal["ig", "attrib"] = "ig"
    """How node effects (and the ∇_d m of edges) are computed: integrated gradients (the paper) or
    attribution patching."""
    ig_steps: int = 10
    """Interpolation steps of "ig" (the authors' `steps=10`)."""
    node_threshold: float = 0.1
    """T_N: a node is in the circuit if |its effect summed over positions, averaged over prompts| > T_N;
    also the per-prompt, per-position threshold of a downstream node whose edges are computed."""
    edge_threshold: float = 0.01
    """T_E: an edge between circuit nodes is kept if |its weight| > T_E."""
    edges: bool = True
    """Compute edges (False: nodes only, as their `--nodes_only`)."""

    def __post_init__(self) -> None:
        if self.node_method not in NODE_METHODS:
            raise ValueError(f"node_method {self.node_method!r} is not one of {NODE_METHODS}")
        if self.ig_steps < 1:
            raise ValueError(f"ig_steps must be ≥ 1, got {self.ig_steps}")
        if self.node_threshold < 0 or self.edge_threshold < 0:
            raise ValueError(f"thresholds must be ≥ 0, got T_N={self.node_threshold}, "
                             f"T_E={self.edge_threshold}")


class Placed(NamedTuple):
    """A dictionary placed in the model: it reads `read` and replaces `write`."""

    name: str
    sae: SAE
    read: HookSite
    write: HookSite


class State(NamedTuple):
    """A dictionary's latents and error term on a batch of prompts."""

    acts: Float[Tensor, "batch pos d_sae"]
    error: Float[Tensor, "batch pos d_target"]


class NodeEffects(NamedTuple):
    """Per dictionary (in `placed` order): effects summed over positions, one row per prompt."""

    latent: tuple[Float[Tensor, "n_prompts d_sae"], ...]
    error: tuple[Float[Tensor, " n_prompts"], ...]
    activation: tuple[Float[Tensor, " d_sae"], ...]
    """Mean clean activation over prompts and their positions."""

    def aggregated(self, index: int) -> tuple[Float[Tensor, " d_sae"], Float[Tensor, ""]]:
        """The dictionary's node effects averaged over prompts (the paper's aggregation "sum")."""
        return self.latent[index].mean(0), self.error[index].mean()


SiteFn = Callable[[int, Tensor, Tensor], Tensor]
"""(dictionary index, input x [batch, pos, d_in], target y [batch, pos, d_target]) → new target value."""


def place(model: HookedTransformer, dictionaries: Mapping[str, SAE]) -> list[Placed]:
    """Dictionaries with their read and write sites, checked against the model, in forward order."""
    from saelab.evals.splice import sae_site, splice_unsupported

    placed = []
    for name, sae in dictionaries.items():
        read = sae_site(sae, model)
        write = HookSite.parse(sae.cfg.target_site).validate(model.cfg)
        reason = splice_unsupported(write)
        if reason is not None:
            raise ValueError(f"dictionary {name!r}: {reason}")
        if write.width(model.cfg) != sae.cfg.d_target:
            raise ValueError(f"dictionary {name!r} writes {sae.cfg.d_target} values, but {write} is "
                             f"{write.width(model.cfg)} wide")
        placed.append(Placed(name, sae, read, write))
    if not placed:
        raise ValueError("no dictionaries given; pass {sae_id: SAE} for at least one SAE or transcoder")
    writes = [str(p.write) for p in placed]
    if len(set(writes)) != len(writes):
        raise ValueError(f"two dictionaries replace the same site: {writes}")
    return sorted(placed, key=lambda p: (p.write.layer, _KIND_ORDER[p.write.kind.name]))


def encode(sae: SAE, x: Float[Tensor, "batch pos d_in"]) -> Float[Tensor, "batch pos d_sae"]:
    return sae.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)


def decode(sae: SAE, acts: Float[Tensor, "batch pos d_sae"], x: Float[Tensor, "batch pos d_in"]
           ) -> Float[Tensor, "batch pos d_target"]:
    """decode(acts) + skip(x): the site's value without its error term."""
    skip = sae.skip(x.reshape(-1, x.shape[-1]))
    skip = skip.reshape(*x.shape[:2], -1) if isinstance(skip, Tensor) else skip
    return sae.decode(acts.reshape(-1, acts.shape[-1])).reshape(*acts.shape[:2], -1) + skip


def state_of(sae: SAE, x: Tensor, y: Tensor) -> State:
    acts = encode(sae, x)
    return State(acts, y - decode(sae, acts, x))


def spliced_end_logits(model: HookedTransformer, placed: list[Placed], tokens: Int[Tensor, "batch pos"],
                       end: Int[Tensor, " batch"], site_fn: SiteFn) -> Float[Tensor, "batch d_vocab"]:
    """End logits of `tokens` with each dictionary's target value replaced by `site_fn(i, x, y)`."""
    from saelab.evals.splice import flat_acts

    inputs: dict[int, Tensor] = {}
    hooks = []
    for i, p in enumerate(placed):
        if p.read != p.write:
            def read(tensor, hook, i=i, p=p):
                inputs[i] = flat_acts(p.read, tensor, model)
            hooks.append((p.read.hook_name, read))

        def write(tensor, hook, i=i, p=p):
            y = flat_acts(p.write, tensor, model)
            new = site_fn(i, inputs.get(i, y), y)
            return p.write.kind.write_back(new.to(tensor.dtype), model).reshape(tensor.shape)
        hooks.append((p.write.hook_name, write))
    resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
    return end_logits(model, resid, end)


def recorded_states(model, placed, tokens, end) -> tuple[list[State], Float[Tensor, "batch d_vocab"]]:
    """Every dictionary's state on `tokens` (no gradients) and the unchanged end logits."""
    states: dict[int, State] = {}

    def record(i: int, x: Tensor, y: Tensor) -> Tensor:
        states[i] = state_of(placed[i].sae, x, y)
        return y

    with torch.no_grad():
        logits = spliced_end_logits(model, placed, tokens, end, record)
    return [states[i] for i in range(len(placed))], logits


def _site_grads(model, placed, batch: PromptBatch, site_fn_for: Callable[[int], SiteFn], index: list[int]
                ) -> list[Tensor]:
    """∂(Σ prompts m)/∂(target value) at the dictionaries in `index`, with `site_fn_for(i)` at each site."""
    probes: dict[int, Tensor] = {}

    def site_fn(i: int, x: Tensor, y: Tensor) -> Tensor:
        value = site_fn_for(i)(i, x, y)
        if i in index:
            probes[i] = torch.zeros_like(value, requires_grad=True)
            value = value + probes[i]
        return value

    logits = spliced_end_logits(model, placed, batch.clean, batch.end, site_fn)
    return list(torch.autograd.grad(batch.metric(logits).sum(), [probes[i] for i in index]))


class Gradients(NamedTuple):
    """∇m with respect to a dictionary's latents and error term."""

    acts: Float[Tensor, "batch pos d_sae"]
    error: Float[Tensor, "batch pos d_target"]


def _unchanged(i: int, x: Tensor, y: Tensor) -> Tensor:
    return y


def _gradients_of(sae: SAE, site_grad: Tensor) -> Gradients:
    """The value is decode(acts) + skip + error, so ∇acts m = ∇value m · W_decᵀ and ∇error m = ∇value m."""
    return Gradients(site_grad @ sae.W_dec.detach().T, site_grad)


def attribution_gradients(model, placed, batch: PromptBatch, clean: list[State], corrupt: list[State],
                          config: FeatureCircuitConfig) -> list[Gradients]:
    """∇m at the clean run ("attrib") or averaged over the IG path of each dictionary in turn ("ig")."""
    every = list(range(len(placed)))
    if config.node_method == "attrib":
        grads = _site_grads(model, placed, batch, lambda i: _unchanged, every)
        return [_gradients_of(p.sae, g) for p, g in zip(placed, grads, strict=True)]
    out = []
    for k, p in enumerate(placed):
        total = None
        for step in range(config.ig_steps):
            alpha = step / config.ig_steps

            def interpolate(i: int, x: Tensor, y: Tensor, alpha=alpha, k=k) -> Tensor:
                if i != k:
                    return y
                acts = (1 - alpha) * clean[k].acts + alpha * corrupt[k].acts
                error = (1 - alpha) * clean[k].error + alpha * corrupt[k].error
                return decode(placed[k].sae, acts, x) + error

            (grad,) = _site_grads(model, placed, batch, lambda i, f=interpolate: f, [k])
            total = grad if total is None else total + grad
        out.append(_gradients_of(p.sae, total / config.ig_steps))
    return out


class PositionEffects(NamedTuple):
    """Node effects of one batch per prompt and position."""

    acts: Float[Tensor, "batch pos d_sae"]
    error: Float[Tensor, "batch pos"]


def position_effects(grads: Gradients, clean: State, corrupt: State) -> PositionEffects:
    """∇m · (a_corrupt − a_clean), latent by latent; the error term contracted over its values."""
    return PositionEffects(grads.acts * (corrupt.acts - clean.acts),
                           (grads.error * (corrupt.error - clean.error)).sum(-1))


def _valid(batch: PromptBatch) -> Bool[Tensor, "batch pos"]:
    return torch.arange(batch.clean.shape[1])[None, :] <= batch.end[:, None]


EdgeSums = dict[tuple[int, int, int], Tensor]
"""(upstream u, downstream d, downstream node j) → weights [d_sae_u + 1] summed over prompts; node index
d_sae of a dictionary is its error term."""


def _spliced_leaves(model, placed, batch: PromptBatch) -> tuple[list[State], list[State]]:
    """A clean run in which each dictionary's latents and error are leaves (so a gradient reaches a leaf only
    along paths through no other dictionary) while its live state is read from the incoming activations."""
    live: dict[int, State] = {}
    leaves: dict[int, State] = {}

    def site_fn(i: int, x: Tensor, y: Tensor) -> Tensor:
        live[i] = state_of(placed[i].sae, x, y)
        leaves[i] = State(live[i].acts.detach().requires_grad_(), live[i].error.detach().requires_grad_())
        return decode(placed[i].sae, leaves[i].acts, x) + leaves[i].error

    spliced_end_logits(model, placed, batch.clean, batch.end, site_fn)
    return [live[i] for i in range(len(placed))], [leaves[i] for i in range(len(placed))]


def _objectives(grads: Gradients, effects: PositionEffects, live: State, threshold: float,
                keep: "Keep | None"):
    """(node index, Σ_{prompt, pos} ∇_d m · d) for each downstream node with some per-position effect above
    the threshold; the gradient is zeroed where the effect is not (the authors' `features_by_submod`). With
    `keep`, only for the circuit's nodes (edges into other nodes never enter the circuit)."""
    keep_acts = effects.acts.abs() > threshold
    keep_error = effects.error.abs() > threshold
    wanted = keep_acts.any(dim=(0, 1)) if keep is None else keep_acts.any(dim=(0, 1)) & keep.acts
    for j in wanted.nonzero().flatten().tolist():
        yield j, (grads.acts[..., j] * keep_acts[..., j] * live.acts[..., j]).sum()
    if keep_error.any() and (keep is None or keep.error):
        yield live.acts.shape[-1], (grads.error * keep_error[..., None] * live.error).sum()


GRAD_CHUNK = 16
"""Downstream nodes whose gradients one batched backward pass computes (vmap over the backward)."""


def batch_edges(model, placed, batch: PromptBatch, clean: list[State], corrupt: list[State],
                grads: list[Gradients], effects: list[PositionEffects], threshold: float, into: EdgeSums,
                keep: "list[Keep] | None" = None) -> None:
    """Add this batch's edge weights ∇_d m · ∂d/∂u · (u_corrupt − u_clean), summed over both positions and
    the prompts, to `into` (only into the downstream nodes `keep` keeps, if given)."""
    live, leaves = _spliced_leaves(model, placed, batch)
    for d in range(1, len(placed)):
        inputs = [t for u in range(d) for t in leaves[u]]
        wanted = None if keep is None else keep[d]
        found = [(j, o) for j, o in _objectives(grads[d], effects[d], live[d], threshold, wanted)
                 if o.requires_grad]
        for start in range(0, len(found), GRAD_CHUNK):
            chunk = found[start:start + GRAD_CHUNK]
            outputs = torch.stack([o for _, o in chunk])
            eye = torch.eye(len(chunk), dtype=outputs.dtype)
            parts = torch.autograd.grad(outputs, inputs, grad_outputs=eye, retain_graph=True,
                                        allow_unused=True, is_grads_batched=True)
            for u in range(d):
                weights = _edge_weights(parts[2 * u], parts[2 * u + 1], clean[u], corrupt[u], len(chunk))
                for row, (j, _) in enumerate(chunk):
                    key = (u, d, j)
                    into[key] = into[key] + weights[row] if key in into else weights[row]


def _edge_weights(g_acts: Tensor | None, g_error: Tensor | None, clean: State, corrupt: State, n: int
                  ) -> Float[Tensor, "n d_sae_plus_1"]:
    """Gradients [n, batch, pos, ·] of n downstream nodes times the upstream deltas, summed over prompts and
    positions: one row of weights per downstream node (the upstream error term last)."""
    w_acts = (clean.acts.new_zeros(n, clean.acts.shape[-1]) if g_acts is None
              else (g_acts * (corrupt.acts - clean.acts)).sum(dim=(1, 2)))
    w_error = (clean.error.new_zeros(n) if g_error is None
               else (g_error * (corrupt.error - clean.error)).sum(dim=(1, 2, 3)))
    return torch.cat([w_acts, w_error[:, None]], dim=1).detach()


class Measured(NamedTuple):
    """Node effects of every dictionary and, if asked for, the edge sums."""

    effects: NodeEffects
    edges: EdgeSums
    n_prompts: int


def measure(model: HookedTransformer, placed: list[Placed], problem: CircuitProblem,
            config: FeatureCircuitConfig) -> Measured:
    """Node effects (per prompt, summed over positions) over all of the problem's prompts, then the edge
    weights into the circuit's nodes (|aggregated effect| > T_N)."""
    K = len(placed)
    latent: list[list[Tensor]] = [[] for _ in range(K)]
    error: list[list[Tensor]] = [[] for _ in range(K)]
    act_sum = [torch.zeros(p.sae.cfg.d_sae, dtype=p.sae.cfg.torch_dtype) for p in placed]
    count = 0
    edges: EdgeSums = {}
    kept_batches = []
    for batch in problem.batches:
        clean, _ = recorded_states(model, placed, batch.clean, batch.end)
        corrupt, _ = recorded_states(model, placed, batch.corrupted, batch.end)
        grads = attribution_gradients(model, placed, batch, clean, corrupt, config)
        effects = [position_effects(g, c, x) for g, c, x in zip(grads, clean, corrupt, strict=True)]
        valid = _valid(batch)
        for i in range(K):
            latent[i].append(effects[i].acts.sum(1).detach())
            error[i].append(effects[i].error.sum(1).detach())
            act_sum[i] += (clean[i].acts * valid[..., None]).sum(dim=(0, 1))
        count += int(valid.sum())
        if config.edges:
            kept_batches.append((batch, clean, corrupt, grads, effects))
    node_effects = NodeEffects(tuple(torch.cat(x) for x in latent), tuple(torch.cat(x) for x in error),
                               tuple(a / max(count, 1) for a in act_sum))
    keep = circuit_nodes(node_effects, config.node_threshold)
    for batch, clean, corrupt, grads, effects in kept_batches:
        batch_edges(model, placed, batch, clean, corrupt, grads, effects, config.node_threshold, edges, keep)
    return Measured(node_effects, edges, problem.n_prompts)


class Keep(NamedTuple):
    """Which of a dictionary's nodes are kept (in the circuit)."""

    acts: Bool[Tensor, " d_sae"]
    error: bool


def circuit_nodes(effects: NodeEffects, threshold: float) -> list[Keep]:
    """Nodes whose |effect summed over positions, averaged over prompts| exceeds T_N."""
    out = []
    for i in range(len(effects.latent)):
        acts, err = effects.aggregated(i)
        out.append(Keep(acts.abs() > threshold, bool(err.abs() > threshold)))
    return out


def everything(placed: list[Placed], keep: bool) -> list[Keep]:
    return [Keep(torch.full((p.sae.cfg.d_sae,), keep), keep) for p in placed]


def complement(keep: list[Keep]) -> list[Keep]:
    return [Keep(~k.acts, not k.error) for k in keep]


@torch.no_grad()
def corrupted_means(model, placed, problem: CircuitProblem) -> list[State]:
    """Each dictionary's latents and error term averaged over the corrupted prompts, per position (positions
    after a prompt's answer position are padding and left out)."""
    length = max(b.clean.shape[1] for b in problem.batches)
    sums: list[State] | None = None
    counts = torch.zeros(length)
    for batch in problem.batches:
        states, _ = recorded_states(model, placed, batch.corrupted, batch.end)
        valid = _valid(batch).to(states[0].acts.dtype)
        pos = batch.clean.shape[1]
        if sums is None:
            sums = [State(s.acts.new_zeros(length, s.acts.shape[-1]),
                          s.error.new_zeros(length, s.error.shape[-1]))
                    for s in states]
        for total, s in zip(sums, states, strict=True):
            total.acts[:pos] += (s.acts * valid[..., None]).sum(0)
            total.error[:pos] += (s.error * valid[..., None]).sum(0)
        counts[:pos] += valid.sum(0)
    scale = counts.clamp_min(1)[:, None]
    return [State(s.acts / scale, s.error / scale) for s in sums]


@torch.no_grad()
def ablated_metric(model, placed, problem: CircuitProblem, keep: list[Keep], means: list[State]) -> float:
    """The mean metric over the clean prompts with every node outside `keep` set to its corrupted mean."""
    total, n = 0.0, 0
    for batch in problem.batches:
        pos = batch.clean.shape[1]

        def ablate(i: int, x: Tensor, y: Tensor, pos: int = pos) -> Tensor:
            sae, k, mean = placed[i].sae, keep[i], means[i]
            state = state_of(sae, x, y)
            acts = torch.where(k.acts, state.acts, mean.acts[:pos])
            err = state.error if k.error else mean.error[:pos].expand_as(state.error)
            return decode(sae, acts, x) + err

        logits = spliced_end_logits(model, placed, batch.clean, batch.end, ablate)
        total += float(batch.metric(logits).double().sum())
        n += len(batch.end)
    return total / n


class AblationReference(NamedTuple):
    """What every circuit's faithfulness on one problem is measured against."""

    means: list[State]
    """Each dictionary's corrupted means per position (`corrupted_means`)."""
    m_model: float
    """m(M): the metric with every node kept."""
    m_empty: float
    """m(∅): the metric with every node mean-ablated."""


def ablation_reference(model, placed, problem: CircuitProblem) -> AblationReference:
    """The corrupted means, m(M) and m(∅), computed once for any number of circuits of one problem."""
    means = corrupted_means(model, placed, problem)
    return AblationReference(means, ablated_metric(model, placed, problem, everything(placed, True), means),
                             ablated_metric(model, placed, problem, everything(placed, False), means))


def ablation_metrics(model, placed, problem: CircuitProblem, keep: list[Keep],
                     reference: AblationReference | None = None) -> dict[str, float]:
    """m(M), m(∅), m(C), m(M \\ C) and the paper's faithfulness and completeness (see the module); pass
    `reference` to score several circuits of one problem without recomputing its means, m(M) and m(∅)."""
    means, m_model, m_empty = reference or ablation_reference(model, placed, problem)
    m_circuit = ablated_metric(model, placed, problem, keep, means)
    m_complement = ablated_metric(model, placed, problem, complement(keep), means)
    gap = m_model - m_empty
    return {"m_model": m_model, "m_empty": m_empty, "m_circuit": m_circuit, "m_complement": m_complement,
            "faithfulness": (m_circuit - m_empty) / gap if gap else float("nan"),
            "completeness": (m_complement - m_empty) / gap if gap else float("nan")}


def _node(p: Placed, index: int | None, effect: float, activation: float) -> FeatureNode:
    kind = "error" if index is None else "latent"
    return FeatureNode(node_id(kind, str(p.write), index), kind, p.write.layer, str(p.write), p.name, index,
                       None, activation, effect)


def graph_of(model, placed, measured: Measured, keep: list[Keep], config: FeatureCircuitConfig,
             task: str, metrics: dict[str, float]) -> FeatureGraph:
    """The circuit as a `FeatureGraph`: kept nodes with their effects, kept edges with |weight| > T_E."""
    nodes: list[FeatureNode] = []
    ids: list[dict[int, str]] = []
    for i, (p, k) in enumerate(zip(placed, keep, strict=True)):
        acts, err = measured.effects.aggregated(i)
        here = {}
        for j in k.acts.nonzero().flatten().tolist():
            nodes.append(_node(p, j, float(acts[j]), float(measured.effects.activation[i][j])))
            here[j] = nodes[-1].id
        if k.error:
            nodes.append(_node(p, None, float(err), 0.0))
            here[p.sae.cfg.d_sae] = nodes[-1].id
        ids.append(here)
    edges = []
    for (u, d, j), weights in sorted(measured.edges.items()):
        if j not in ids[d]:
            continue
        mean = weights / measured.n_prompts
        for source, target in ids[u].items():
            if abs(float(mean[source])) > config.edge_threshold:
                edges.append(FeatureEdge(target, ids[d][j], float(mean[source])))
    n_latents = sum(p.sae.cfg.d_sae for p in placed)
    metrics = {**metrics, "n_nodes": len(nodes), "n_error_nodes": sum(k.error for k in keep),
               "n_edges": len(edges), "n_candidate_nodes": n_latents + len(placed)}
    return FeatureGraph("feature_circuit", model.cfg.model_name, tuple(p.name for p in placed), tuple(nodes),
                        tuple(edges), task=task, prompt=f"{measured.n_prompts} clean/corrupted prompt pairs",
                        metrics=metrics, params={"method": "sparse_feature_circuit", **config.__dict__,
                                                 "n_prompts": measured.n_prompts, "ablation": "mean",
                                                 "aggregation": "sum"})


def feature_circuit(model: HookedTransformer, problem: CircuitProblem, dictionaries: Mapping[str, SAE],
                    config: FeatureCircuitConfig | None = None) -> FeatureGraph:
    """The sparse feature circuit of `problem` (its clean/corrupted pairs and metric) over `dictionaries`
    ({sae_id: SAE or transcoder}), with its faithfulness and completeness in `metrics`."""
    config = config or FeatureCircuitConfig()
    return placed_circuit(model, place(model, dictionaries), problem, config).graph


class PlacedCircuit(NamedTuple):
    """A feature circuit with what it was selected from."""

    graph: FeatureGraph
    measured: Measured
    """The node (and edge) effects the circuit was selected from."""
    keep: list[Keep]
    """Its nodes, per dictionary."""


def placed_circuit(model: HookedTransformer, placed: list[Placed], problem: CircuitProblem,
                   config: FeatureCircuitConfig, reference: AblationReference | None = None) -> PlacedCircuit:
    """`feature_circuit` over dictionaries already placed; `reference` as in `ablation_metrics`."""
    measured = measure(model, placed, problem, config)
    keep = circuit_nodes(measured.effects, config.node_threshold)
    metrics = ablation_metrics(model, placed, problem, keep, reference)
    graph = graph_of(model, placed, measured, keep, config, problem.name, metrics)
    return PlacedCircuit(graph, measured, keep)
