"""Attribution graphs of one prompt through a replacement model (Ameisen, Lindsey et al. 2025, "Circuit
Tracing: Revealing Computational Graphs in Language Models"; the method of the `circuit-tracer` package).

The replacement model swaps every MLP for a transcoder and freezes, at their values on the prompt, the
attention patterns and the LayerNorm scales. An error node per (layer, position) holds what the transcoder
misses (true MLP output minus transcoder output), so the replacement reproduces the model's logits exactly.
With the latents' nonlinearities (the active sets) also frozen, every node's input is linear in the residual
stream, and the direct effect of a source s on a target t is

    A[t, s] = a_s * (W_dec[s] . d pre_t / d out_s)

where a_s is the source's activation (1 for error and token nodes, whose vectors are written whole), out_s
the site it writes to, and pre_t the target's pre-activation: x_t @ W_enc[:, t] + b for a latent, the
demeaned logit (logit - mean over the vocabulary) for a logit node. One backward pass per batch of targets
gives their whole rows (as circuit-tracer does). Summed over incoming edges, plus the constants (biases,
positional embeddings, the first position's MLP output when `zero_first_position`), the row reproduces the
target's pre-activation. Pruning and the graph scores follow circuit-tracer's `prune_graph` and
`compute_graph_scores`.
"""

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.feature_circuits.types import FeatureEdge, FeatureGraph, FeatureNode, node_id
from saelab.sae.model import SAE
from saelab.sae.registry import ARCHITECTURES, get_architecture


@dataclass(frozen=True)
class AttributionConfig:
    """How an attribution graph is built and pruned."""

    max_n_logits: int = 10
    """At most this many logit nodes when `target_tokens` is empty."""
    desired_logit_prob: float = 0.95
    """Logit nodes: the most probable next tokens until their probability mass reaches this."""
    target_tokens: tuple[int, ...] = ()
    """Token ids of the logit nodes; empty: chosen by probability as above."""
    node_threshold: float = 0.8
    """Keep the most influential nodes holding this fraction of the total influence on the logits."""
    edge_threshold: float = 0.98
    """Then keep the most influential edges holding this fraction of the edge influence."""
    batch_size: int = 256
    """Targets per (vmapped) backward pass."""
    zero_first_position: bool = True
    """No latent or error nodes at position 0 (BOS): its MLP output is a constant, as in circuit-tracer."""

    def __post_init__(self) -> None:
        if self.max_n_logits < 1:
            raise ValueError(f"max_n_logits must be positive, got {self.max_n_logits}")
        if not 0.0 < self.desired_logit_prob <= 1.0:
            raise ValueError(f"desired_logit_prob must be in (0, 1], got {self.desired_logit_prob}")
        for name in ("node_threshold", "edge_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


class Replacement(NamedTuple):
    """What the clean forward pass fixes for one prompt."""

    tokens: Int[Tensor, " pos"]
    logits: Float[Tensor, "pos d_vocab"]
    inputs: tuple[Tensor, ...]
    """Per layer: the transcoder's input [pos, d_in]."""
    acts: tuple[Tensor, ...]
    """Per layer: latent activations [pos, d_sae] (zero at position 0 when `zero_first_position`)."""
    errors: Float[Tensor, "n_layers pos d_model"]
    """True MLP output minus transcoder output (zero at position 0 when `zero_first_position`)."""
    mlp_out: Float[Tensor, "n_layers pos d_model"]
    """The true MLP outputs."""
    zero_first_position: bool


class Attribution(NamedTuple):
    """The dense, unpruned graph in circuit-tracer's layout: nodes ordered [latents (by layer, position,
    index), errors (by layer, then position), tokens (by position), logits]; adjacency[target, source]."""

    adjacency: Float[Tensor, "n_nodes n_nodes"]
    features: Int[Tensor, "n_features 3"]
    """(layer, position, latent index) of each latent node."""
    activations: Float[Tensor, " n_features"]
    tokens: Int[Tensor, " pos"]
    logit_tokens: Int[Tensor, " n_logits"]
    logit_probs: Float[Tensor, " n_logits"]
    n_layers: int


class Pruned(NamedTuple):
    node_mask: Tensor
    edge_mask: Tensor
    influence: Tensor
    """Each node's influence on the logits (normalised adjacency, weighted by the logit probabilities)."""


def transcoder_layers(model: HookedTransformer, transcoders: Sequence[SAE]) -> None:
    """Raise ValueError unless `transcoders` holds, in order, one transcoder per block, each reading a site of
    its block and writing that block's mlp_out."""
    n_layers = model.cfg.n_layers
    if len(transcoders) != n_layers:
        raise ValueError(f"got {len(transcoders)} transcoders; the replacement model needs one per MLP "
                         f"({n_layers})")
    for layer, sae in enumerate(transcoders):
        cfg = sae.cfg
        if not cfg.is_transcoder or HookSite.parse(cfg.target_site) != _mlp_out(layer):
            raise ValueError(f"transcoder {layer} writes {cfg.target_site!r}; expected '{layer}.mlp_out'")
        if HookSite.parse(cfg.hook_site).layer != layer:
            raise ValueError(f"transcoder {layer} reads {cfg.hook_site!r}, a site outside block {layer}")


def _mlp_out(layer: int) -> HookSite:
    return HookSite(layer, "mlp_out")


def encoder_affine(sae: SAE) -> tuple[Float[Tensor, "d_in d_sae"], Float[Tensor, " d_sae"]]:
    """(W, b) with pre-activation = x @ W + b: W_enc, and b_enc - b_dec @ W_enc where the encoder reads
    x - b_dec (`SAE.subtracts_b_dec`; never for a transcoder)."""
    W_enc = sae.W_enc.detach()
    shift = sae.b_dec.detach() @ W_enc if sae.subtracts_b_dec else 0.0
    return W_enc, sae.b_enc.detach() - shift


@torch.no_grad()
def replacement_state(
    model: HookedTransformer, tokens: Int[Tensor, " pos"], transcoders: Sequence[SAE],
    zero_first_position: bool
) -> Replacement:
    """One clean forward pass: logits, transcoder inputs, activations and error vectors."""
    sites = [HookSite.parse(t.cfg.hook_site) for t in transcoders]
    outs = [_mlp_out(layer).hook_name for layer in range(len(transcoders))]
    names = {s.hook_name for s in sites} | set(outs)
    logits, cache = model.run_with_cache(tokens[None], names_filter=lambda name: name in names)
    inputs, acts, errors = [], [], []
    for layer, (site, sae) in enumerate(zip(sites, transcoders, strict=True)):
        x = site.read(cache[site.hook_name], model)[0]
        a = sae.encode(x).to(x.dtype)
        _check_linear_activations(sae, x, a)
        if zero_first_position:
            a[0] = 0
        error = cache[outs[layer]][0] - (sae.decode(a) + sae.skip(x))
        if zero_first_position:
            error[0] = 0
        inputs.append(x)
        acts.append(a)
        errors.append(error)
    mlp_out = torch.stack([cache[name][0] for name in outs])
    return Replacement(tokens, logits[0], tuple(inputs), tuple(acts), torch.stack(errors), mlp_out,
                       zero_first_position)


def _check_linear_activations(sae: SAE, x: Tensor, acts: Tensor) -> None:
    """A latent's edges sum to its pre-activation, so an active latent's activation must equal it: refused
    by the architecture's registry entry (`Architecture.affine_when_active`), then checked on the prompt."""
    if get_architecture(sae.cfg.architecture).affine_when_active:
        W, b = encoder_affine(sae)
        active = acts != 0
        pre = x @ W + b
        if torch.allclose(acts[active], pre[active], rtol=1e-4, atol=1e-4 * float(pre.abs().max())):
            return
    usable = [name for name in ARCHITECTURES if ARCHITECTURES[name].affine_when_active]
    raise ValueError(
        f"the {sae.cfg.architecture!r} dictionary at {sae.cfg.hook_site!r}: active latents' activations "
        f"are not their affine pre-activations; attribution graphs need one of {', '.join(usable)}"
    )


class _Frozen(NamedTuple):
    """The replacement model's forward pass on `batch` copies of the prompt (1 for attribution: the backward
    passes are vmapped over their seeds), kept for backward passes."""

    embed: Tensor
    """Token embeddings [batch, pos, d_model] (a leaf: token nodes read their gradient here)."""
    inputs: tuple[Tensor, ...]
    """Per layer: the transcoder input [batch, pos, d_in] (latent targets are seeded here)."""
    outputs: tuple[Tensor, ...]
    """Per layer: the replacement MLP output [batch, pos, d_model] (latent and error sources read here)."""
    final: Tensor
    """ln_final's output [batch, pos, d_model] (logit targets are seeded here)."""


def mlp_constants(state: Replacement, transcoders: Sequence[SAE]) -> Float[Tensor, "n_layers pos d_model"]:
    """Per layer, the constant part of the replacement MLP output: decode(acts) + error (b_dec included), and
    at a position without nodes (position 0 when `zero_first_position`) the true output; the skip term stays
    live."""
    parts = []
    for layer, sae in enumerate(transcoders):
        constant = sae.decode(state.acts[layer]) + state.errors[layer]
        if state.zero_first_position:
            skip = sae.skip(state.inputs[layer][:1])
            constant[0] = state.mlp_out[layer, 0] - (skip[0] if isinstance(skip, Tensor) else 0.0)
        parts.append(constant.detach())
    return torch.stack(parts)


def frozen_forward(
    model: HookedTransformer, state: Replacement, transcoders: Sequence[SAE], batch: int
) -> _Frozen:
    """The replacement model: attention patterns and LayerNorm scales detached (frozen at their clean values,
    which this very pass recomputes), each MLP output replaced by its transcoder's constant part plus the live
    skip term. Gradients then flow only through the linear paths."""
    constants = mlp_constants(state, transcoders)
    kept: dict[str, Tensor] = {}
    inputs: list[Tensor] = [torch.empty(0)] * len(transcoders)
    outputs: list[Tensor] = [torch.empty(0)] * len(transcoders)

    def leaf(x: Tensor, hook: object) -> Tensor:
        kept["embed"] = x.detach().requires_grad_(True)
        return kept["embed"]

    def keep_input(x: Tensor, hook: object, layer: int, site: HookSite) -> Tensor:
        inputs[layer] = site.read(x, model)
        return x

    def replace_mlp(x: Tensor, hook: object, layer: int) -> Tensor:
        x_in = inputs[layer]
        skip = transcoders[layer].skip(x_in.reshape(-1, x_in.shape[-1]))
        skip = skip.reshape(*x_in.shape[:-1], -1) if isinstance(skip, Tensor) else skip
        base = constants[layer].expand_as(x)
        outputs[layer] = base + skip if isinstance(skip, Tensor) else base.clone().requires_grad_(True)
        return outputs[layer]

    hooks: list = [("hook_embed", leaf), *((name, _detach) for name in _frozen_hook_names(model))]
    for layer, sae in enumerate(transcoders):
        site = HookSite.parse(sae.cfg.hook_site)
        hooks.append((site.hook_name, _bind(keep_input, layer=layer, site=site)))
        hooks.append((_mlp_out(layer).hook_name, _bind(replace_mlp, layer=layer)))
    with model.hooks(fwd_hooks=hooks), _mlps_skipped(model):
        resid = model(state.tokens[None].expand(batch, -1), stop_at_layer=model.cfg.n_layers)
        final = model.ln_final(resid)
    return _Frozen(kept["embed"], tuple(inputs), tuple(outputs), final)


class _NoMLP(torch.nn.Module):
    """Stands in for an MLP whose output the replacement overwrites anyway (saves computing it B times)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(*x.shape[:-1], self.d_model)


@contextlib.contextmanager
def _mlps_skipped(model: HookedTransformer) -> Iterator[None]:
    mlps = [block.mlp for block in model.blocks]
    try:
        for block in model.blocks:
            block.mlp = _NoMLP(model.cfg.d_model)
        yield
    finally:
        for block, mlp in zip(model.blocks, mlps, strict=True):
            block.mlp = mlp


def _frozen_hook_names(model: HookedTransformer) -> list[str]:
    """Attention patterns and every LayerNorm scale."""
    return [name for name in model.hook_dict if name.endswith("hook_pattern") or name.endswith("hook_scale")]


def _detach(x: Tensor, hook: object) -> Tensor:
    return x.detach()


def _bind(fn, **kwargs):  # noqa: ANN001, ANN202 - a hook with its layer bound
    return lambda x, hook: fn(x, hook, **kwargs)


class _Sources(NamedTuple):
    """What each source node writes, for reading its edges off a backward pass."""

    positions: tuple[Tensor, ...]
    """Per layer: positions of its active latents (in node order)."""
    decoders: tuple[Tensor, ...]
    """Per layer: a_s * W_dec[s] of its active latents [n, d_model]."""
    errors: Float[Tensor, "n_layers pos d_model"]
    embeddings: Float[Tensor, "pos d_model"]


class _Targets(NamedTuple):
    """Targets in row order: where each is seeded (layer; n_layers = the logits) and with which vector."""

    layers: Int[Tensor, " n"]
    positions: Int[Tensor, " n"]
    vectors: Float[Tensor, "n d"]


def active_latents(state: Replacement, transcoders: Sequence[SAE]) -> tuple[Tensor, Tensor]:
    """(layer, position, latent) of every active latent, ordered by layer, position, latent; and
    activations."""
    rows, values = [], []
    for layer, acts in enumerate(state.acts):
        pos, latent = acts.nonzero(as_tuple=True)
        rows.append(torch.stack([torch.full_like(pos, layer), pos, latent], 1))
        values.append(acts[pos, latent])
    return torch.cat(rows), torch.cat(values)


def logit_targets(logits: Float[Tensor, " d_vocab"], config: AttributionConfig) -> tuple[Tensor, Tensor]:
    """Token ids of the logit nodes and their probabilities: the given targets, or the most probable tokens
    until their mass reaches `desired_logit_prob` (at most `max_n_logits`), as circuit-tracer picks them."""
    probs = torch.softmax(logits.double(), -1).to(logits.dtype)
    if config.target_tokens:
        ids = torch.tensor(config.target_tokens, dtype=torch.long)
        if int(ids.min()) < 0 or int(ids.max()) >= len(logits):
            raise ValueError(f"target_tokens {config.target_tokens} must be token ids below {len(logits)}")
        return ids, probs[ids]
    top_p, top_ids = probs.topk(min(config.max_n_logits, len(probs)))
    cutoff = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(config.desired_logit_prob))) + 1
    return top_ids[:cutoff], top_p[:cutoff]


def demeaned_unembed(model: HookedTransformer, ids: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
    """W_U[:, t] - mean_v W_U[:, v]: the direction whose dot product with ln_final's output is the logit of t
    minus the mean logit (up to constant biases)."""
    W_U = model.W_U.detach()
    return (W_U[:, ids] - W_U.mean(1, keepdim=True)).T


def _backward_rows(frozen: _Frozen, targets: _Targets, sources: _Sources) -> Float[Tensor, "n n_sources"]:
    """One backward pass of the batch-1 forward, vmapped over seeds: seed b holds target b's vector at its
    site and position; the gradient at each source's site, contracted with what the source writes, is the
    direct effect. Only the sites of this batch's targets are seeded, so the pass stops at their deepest
    layer."""
    n = len(targets.layers)
    all_outputs = (*frozen.inputs, frozen.final)
    seeded = targets.layers.unique().tolist()
    seeds = []
    for layer in seeded:
        mask = targets.layers == layer
        seed = all_outputs[layer].new_zeros(n, *all_outputs[layer].shape)  # [n, 1, pos, d]
        rows = mask.nonzero(as_tuple=True)[0]
        seed[rows, 0, targets.positions[mask]] = targets.vectors[mask, : seed.shape[-1]].to(seed.dtype)
        seeds.append(seed)
    upstream = range(max(seeded))  # MLP outputs that can reach a target: those of earlier layers
    grads = torch.autograd.grad(  # vmapped over the n seeds: one forward pass of batch 1 serves them all
        [all_outputs[layer] for layer in seeded], (frozen.embed, *(frozen.outputs[i] for i in upstream)),
        grad_outputs=seeds, retain_graph=True, materialize_grads=True, is_grads_batched=True,
    )
    g_embed, g_out = grads[0][:, 0], [g[:, 0] for g in grads[1:]]
    latent_cols = [
        _latent_columns(g_out[i], pos, dec) if i in upstream else g_embed.new_zeros(n, len(pos))
        for i, (pos, dec) in enumerate(zip(sources.positions, sources.decoders, strict=True))
    ]
    error_cols = [
        torch.einsum("bpd,pd->bp", g_out[i], err) if i in upstream else g_embed.new_zeros(n, len(err))
        for i, err in enumerate(sources.errors)
    ]
    token_cols = torch.einsum("bpd,pd->bp", g_embed, sources.embeddings)
    return torch.cat([*latent_cols, *error_cols, token_cols], 1).detach()


def _latent_columns(
    grad: Float[Tensor, "n pos d_model"], positions: Int[Tensor, " f"], decoders: Float[Tensor, "f d_model"]
) -> Float[Tensor, "n f"]:
    """grad[:, positions[f]] . decoders[f] for each latent f, one matrix product per position (latents are
    sorted by position), never materialising the [n, f, d_model] gather."""
    columns = grad.new_zeros(len(grad), len(positions))
    if len(positions) == 0:
        return columns
    bounds = torch.searchsorted(positions, torch.arange(grad.shape[1] + 1)).tolist()
    for pos in range(grad.shape[1]):
        lo, hi = bounds[pos], bounds[pos + 1]
        if hi > lo:
            columns[:, lo:hi] = grad[:, pos] @ decoders[lo:hi].T
    return columns


def attribute(
    model: HookedTransformer, tokens: Int[Tensor, " pos"], transcoders: Sequence[SAE],
    config: AttributionConfig
) -> Attribution:
    """The dense direct-effect matrix of the replacement model on one prompt (no pruning)."""
    transcoder_layers(model, transcoders)
    state = replacement_state(model, tokens, transcoders, config.zero_first_position)
    features, activations = active_latents(state, transcoders)
    logit_ids, logit_probs = logit_targets(state.logits[-1], config)
    sources = _sources(model, state, transcoders, features, activations)
    targets = _targets(model, state, transcoders, features, logit_ids)
    n_layers, n_pos, n_features = len(transcoders), len(tokens), len(features)
    n_sources = n_features + (n_layers + 1) * n_pos
    n_targets = len(targets.layers)
    n_nodes = n_sources + len(logit_ids)
    adjacency = torch.zeros(n_nodes, n_nodes, dtype=state.logits.dtype)
    target_rows = torch.cat([torch.arange(n_features), torch.arange(len(logit_ids)) + n_sources])
    frozen = frozen_forward(model, state, transcoders, batch=1)
    for start in range(0, n_targets, config.batch_size):
        chunk = slice(start, start + config.batch_size)
        rows = _backward_rows(frozen, _Targets(*(t[chunk] for t in targets)), sources)
        adjacency[target_rows[chunk], :n_sources] = rows
    return Attribution(adjacency, features, activations, tokens, logit_ids, logit_probs, n_layers)


def _sources(
    model: HookedTransformer, state: Replacement, transcoders: Sequence[SAE], features: Tensor,
    activations: Tensor
) -> _Sources:
    positions, decoders = [], []
    for layer, sae in enumerate(transcoders):
        mine = features[:, 0] == layer
        positions.append(features[mine, 1])
        decoders.append(activations[mine, None] * sae.W_dec.detach()[features[mine, 2]])
    embeddings = model.W_E.detach()[state.tokens]
    return _Sources(tuple(positions), tuple(decoders), state.errors, embeddings)


def _targets(
    model: HookedTransformer, state: Replacement, transcoders: Sequence[SAE], features: Tensor,
    logit_ids: Tensor
) -> _Targets:
    """Latents (seeded with their encoder column at their input site) then logits (seeded with the demeaned
    unembedding at the last position of ln_final's output)."""
    encoders = [encoder_affine(sae)[0] for sae in transcoders]
    d = max(max(W.shape[0] for W in encoders), model.cfg.d_model)
    vectors = torch.zeros(len(features) + len(logit_ids), d, dtype=state.logits.dtype)
    for layer, W in enumerate(encoders):
        rows = (features[:, 0] == layer).nonzero(as_tuple=True)[0]
        vectors[rows, : W.shape[0]] = W[:, features[rows, 2]].T.to(vectors.dtype)
    vectors[len(features) :, : model.cfg.d_model] = demeaned_unembed(model, logit_ids).to(vectors.dtype)
    n_layers, last = len(transcoders), len(state.tokens) - 1
    layers = torch.cat([features[:, 0], torch.full((len(logit_ids),), n_layers)])
    positions = torch.cat([features[:, 1], torch.full((len(logit_ids),), last)])
    return _Targets(layers, positions, vectors)


def normalized_adjacency(adjacency: Float[Tensor, "n n"]) -> Float[Tensor, "n n"]:
    """|A| with each target's row scaled to sum to 1 (rows without inputs stay 0)."""
    magnitude = adjacency.abs()
    return magnitude / magnitude.sum(1, keepdim=True).clamp(min=1e-10)


def influence(normalized: Float[Tensor, "n n"], weights: Float[Tensor, " n"], max_iter: int = 1000) -> Tensor:
    """weights @ (A + A^2 + ...) = weights @ ((I - A)^-1 - I) for the acyclic (nilpotent) A."""
    current = weights @ normalized
    total = current.clone()
    for _ in range(max_iter):
        if not current.any():
            return total
        current = current @ normalized
        total += current
    raise RuntimeError(f"influence did not vanish after {max_iter} steps: the adjacency has a cycle")


def _threshold(scores: Tensor, fraction: float) -> Tensor:
    """The smallest score among the top scores holding `fraction` of the total."""
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp(min=1e-30)
    index = min(int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype))),
                len(ordered) - 1)
    return ordered[index]


def _logit_weights(graph: Attribution) -> Tensor:
    weights = torch.zeros(len(graph.adjacency), dtype=graph.adjacency.dtype)
    weights[-len(graph.logit_tokens) :] = graph.logit_probs.to(weights.dtype)
    return weights


def prune(graph: Attribution, node_threshold: float, edge_threshold: float) -> Pruned:
    """circuit-tracer's `prune_graph`: keep the nodes holding `node_threshold` of the influence on the logits
    (tokens and logits always), then the edges holding `edge_threshold` of the edge influence in that
    subgraph, then drop latent/error nodes left without outgoing edges and latents left without incoming
    ones."""
    n_features, n_pos = len(graph.features), len(graph.tokens)
    n_keep_always = len(graph.logit_tokens) + n_pos
    weights = _logit_weights(graph)
    node_influence = influence(normalized_adjacency(graph.adjacency), weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    node_mask[-n_keep_always:] = True
    pruned = graph.adjacency * node_mask[:, None] * node_mask[None, :]
    normalized = normalized_adjacency(pruned)
    edge_scores = normalized * (influence(normalized, weights) + weights)[:, None]
    edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        node_mask[:-n_keep_always] &= edge_mask[:, :-n_keep_always].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        if torch.equal(before, node_mask):
            return Pruned(node_mask, edge_mask & (graph.adjacency != 0), node_influence)


class GraphScores(NamedTuple):
    replacement_score: float
    """Of the influence of tokens and error nodes on the logits, the share of the tokens'."""
    completeness_score: float
    """Share of each node's input that is not from error nodes, averaged with weight = its influence."""


def graph_scores(graph: Attribution) -> GraphScores:
    """circuit-tracer's `compute_graph_scores` on the unpruned graph."""
    n_features, n_pos = len(graph.features), len(graph.tokens)
    errors = slice(n_features, n_features + graph.n_layers * n_pos)
    tokens = slice(errors.stop, errors.stop + n_pos)
    weights = _logit_weights(graph)
    normalized = normalized_adjacency(graph.adjacency)
    node_influence = influence(normalized, weights)
    token_influence, error_influence = node_influence[tokens].sum(), node_influence[errors].sum()
    replacement = token_influence / (token_influence + error_influence)
    non_error = 1 - normalized[:, errors].sum(-1)
    output_influence = node_influence + weights
    completeness = (non_error * output_influence).sum() / output_influence.sum()
    return GraphScores(float(replacement), float(completeness))


def attribution_graph(
    model: HookedTransformer,
    prompt: str | Int[Tensor, " pos"],
    transcoders: "Mapping[str, SAE] | Sequence[SAE]",
    config: AttributionConfig = AttributionConfig(),
) -> FeatureGraph:
    """The pruned attribution graph of `prompt` (text, tokenised with BOS, or token ids) through the
    replacement model made of `transcoders` (one per MLP, in layer order; a mapping names them by sae_id)."""
    names, saes = _named(transcoders)
    tokens = model.to_tokens(prompt)[0] if isinstance(prompt, str) else torch.as_tensor(prompt).flatten()
    dense = attribute(model, tokens, saes, config)
    kept = prune(dense, config.node_threshold, config.edge_threshold)
    nodes = _nodes(model, dense, names, saes, kept.influence)
    keep = kept.node_mask.nonzero(as_tuple=True)[0].tolist()
    targets, sources = kept.edge_mask.nonzero(as_tuple=True)
    edges = tuple(
        FeatureEdge(nodes[s].id, nodes[t].id, float(dense.adjacency[t, s]))
        for t, s in zip(targets.tolist(), sources.tolist(), strict=True)
    )
    scores = graph_scores(dense)
    metrics = {
        **scores._asdict(),
        "n_active_latents": float(len(dense.features)),
        "n_nodes": float(len(keep)),
        "n_edges": float(len(edges)),
        "logit_probability": float(dense.logit_probs.sum()),
    }
    return FeatureGraph(
        kind="attribution_graph",
        model=model.cfg.model_name,
        dictionaries=tuple(names),
        nodes=tuple(nodes[i] for i in keep),
        edges=edges,
        prompt=prompt if isinstance(prompt, str) else "",
        metrics=metrics,
        params={"method": "attribution_graph", "tokens": tokens.tolist(), **dataclasses.asdict(config)},
    )


def _named(transcoders: "Mapping[str, SAE] | Sequence[SAE]") -> tuple[list[str], list[SAE]]:
    if isinstance(transcoders, Mapping):
        return list(transcoders), list(transcoders.values())
    saes = list(transcoders)
    return [f"{s.cfg.hook_site}->{s.cfg.target_site}" for s in saes], saes


def _nodes(
    model: HookedTransformer, graph: Attribution, names: list[str], saes: list[SAE], node_influence: Tensor
) -> list[FeatureNode]:
    """Every node of the dense graph, in its order, with its influence as `effect`."""
    nodes = []
    for (layer, pos, latent), act in zip(graph.features.tolist(), graph.activations.tolist(), strict=True):
        site = saes[layer].cfg.target_site
        nodes.append(FeatureNode(node_id("latent", site, latent, pos), "latent", layer, site, names[layer],
                                 latent, pos, act))
    for layer in range(graph.n_layers):
        site = saes[layer].cfg.target_site
        nodes += [FeatureNode(node_id("error", site, position=p), "error", layer, site, names[layer],
                              position=p)
                  for p in range(len(graph.tokens))]
    nodes += [FeatureNode(node_id("token", position=p), "token", None, index=t, position=p,
                          label=_text(model, t))
              for p, t in enumerate(graph.tokens.tolist())]
    nodes += [FeatureNode(node_id("logit", index=t), "logit", graph.n_layers, index=t, label=_text(model, t))
              for t in graph.logit_tokens.tolist()]
    return [dataclasses.replace(n, effect=float(e))
            for n, e in zip(nodes, node_influence.tolist(), strict=True)]


def _text(model: HookedTransformer, token: int) -> str:
    return model.tokenizer.decode([token]) if model.tokenizer is not None else str(token)
