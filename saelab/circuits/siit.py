"""Strict interchange intervention training (SIIT, Gupta et al. 2024, InterpBench): a task's entry (`SIITTask`: its
high-level causal model, alignment and prompt splits; `siit_task(name)`), patched forward passes and the
construction checks of a model trained with it; and the IOI entry. The docstring entry is
`saelab.circuits.siit_docstring`.

High-level causal model (Wang et al.'s circuit shape: a stage at S2 that reads the repeated name, a stage that
moves its result to END, a stage that writes the answer), a relay of the indirect object's identity:

* DUP at S2: the earlier name that the name at S2 does not repeat (the indirect object); both earlier names at ½
  each when S2 repeats neither (an ABC prompt).
* S-INH at END: DUP, moved from S2 to END.
* NAME at END: S-INH, written to the output. The output is NAME.

Patching any of the three from a source prompt therefore makes the output the source's value (the source's
indirect object), whatever the base prompt says; patching anything else must change nothing. A second IOI design
(ours, `siit_task("ioi-inhibition")`, below) gives the stages different values (the subject, then the answer
read through the name mover's query); no model of it is bundled.
Each variable is aligned to one attention head at one named position (`AlignedNode`); every other head, every
MLP and the aligned heads at every other position are non-aligned: patching them must not change the output.
"""

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite, block_hook
from saelab.circuits.forward import end_logits
from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import edge_effects
from saelab.tasks import words
from saelab.tasks.build import encode_prompts
from saelab.tasks.ioi import BABA_TEMPLATES, ioi_prompt

POSITIONS = ("S2", "end", "slot1", "slot2")
"""IOI's named positions (each task's rows name their own, `rows.position(name)`)."""


@dataclass(frozen=True)
class AlignedNode:
    """One high-level variable and the head (at one named position) that carries it."""

    variable: str
    """The high-level variable ("DUP", "S-INH", "NAME")."""
    layer: int
    head: int
    position: str
    """The named prompt position the variable lives at (IOI: "S2" or "end"; docstring: "C_def" or "end")."""
    meaning: str
    """What the variable's value is, in words."""

    def __post_init__(self) -> None:
        if not self.position:
            raise ValueError(f"aligned head {self.layer}.{self.head} needs a named position, got {self.position!r}")
        if self.layer < 0 or self.head < 0:
            raise ValueError(f"aligned head {self.layer}.{self.head} has a negative index")

    @property
    def node(self) -> str:
        """The head's node name in saelab's circuit graph ("L.H")."""
        return f"{self.layer}.{self.head}"

    def to_json(self) -> dict:
        return {"variable": self.variable, "node": self.node, "position": self.position, "meaning": self.meaning}

    @classmethod
    def from_json(cls, data: dict) -> "AlignedNode":
        layer, head = (int(x) for x in data["node"].split("."))
        return cls(data["variable"], layer, head, data["position"], data["meaning"])


@dataclass(frozen=True)
class IOISplit:
    """The templates and word lists a set of IOI prompts draws from."""

    templates: tuple[int, ...]
    """Indices into `saelab.tasks.ioi.BABA_TEMPLATES`."""
    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]

    def __post_init__(self) -> None:
        bad = [t for t in self.templates if not 0 <= t < len(BABA_TEMPLATES)]
        if bad or not self.templates:
            raise ValueError(f"templates {self.templates} must be a non-empty subset of 0..{len(BABA_TEMPLATES) - 1}")
        if len(self.names) < 5:
            raise ValueError(f"an IOI split needs at least 5 names (ABC prompts use 3 fresh ones), got {len(self.names)}")


HELD_OUT_TEMPLATES = (3, 8, 14)
"""Templates never used in training or in choosing when to stop."""
HELD_OUT_PLACES = ("hospital", "station")
HELD_OUT_OBJECTS = ("necklace", "snack")
_ALL_PLACES = words.IOI_PLACES + words.IOI_EXTRA_PLACES
_ALL_OBJECTS = words.IOI_OBJECTS + words.IOI_EXTRA_OBJECTS
TRAIN_SPLIT = IOISplit(
    templates=tuple(t for t in range(len(BABA_TEMPLATES)) if t not in HELD_OUT_TEMPLATES),
    names=words.IOI_NAMES,
    places=tuple(p for p in _ALL_PLACES if p not in HELD_OUT_PLACES),
    objects=tuple(o for o in _ALL_OBJECTS if o not in HELD_OUT_OBJECTS),
)
"""Training and early-stopping prompts. Names are not held out: a model trained on IOI alone would never see an
unseen name's embedding trained, so it could not output it."""
HELD_OUT_TEMPLATE_SPLIT = IOISplit(HELD_OUT_TEMPLATES, words.IOI_NAMES, TRAIN_SPLIT.places, TRAIN_SPLIT.objects)
HELD_OUT_WORD_SPLIT = IOISplit(TRAIN_SPLIT.templates, words.IOI_NAMES, HELD_OUT_PLACES, HELD_OUT_OBJECTS)


class IOIRows(NamedTuple):
    """Tokenised IOI prompts with the facts the high-level model reads."""

    tokens: Int[Tensor, "n pos"]
    """BOS first, right-padded with BOS."""
    end: Int[Tensor, " n"]
    s2: Int[Tensor, " n"]
    slot_names: Int[Tensor, "n 2"]
    """Token ids of the names at the first and second name slots ("[X] and [Y]")."""
    dup: Int[Tensor, " n"]
    """Which slot S2 repeats: 0 / 1 = the first / second slot's name; -1 = neither (ABC)."""
    templates: tuple[int, ...]
    io: Int[Tensor, " n"]
    """The indirect object's position (the earlier name S2 does not repeat; on an ABC prompt, the generator's IO
    slot)."""
    slots: Int[Tensor, "n 2"]
    """The positions of the first and second name slots (where `slot_names` are)."""

    def position(self, name: str) -> Int[Tensor, " n"]:
        if name not in POSITIONS:
            raise ValueError(f"unknown IOI position {name!r}; expected one of {POSITIONS}")
        if name.startswith("slot"):
            return self.slots[:, int(name[-1]) - 1]
        return self.s2 if name == "S2" else self.end


class Spec(NamedTuple):
    """One prompt to build: template, order ("ABB" or "BAB"), names (S1, IO, S2), place, object."""

    template: int
    order: str
    names: tuple[str, str, str]
    place: str
    obj: str

    @property
    def dup(self) -> int:
        s1, _, s2 = self.names
        if s1 != s2:
            return -1
        return 1 if self.order == "ABB" else 0


def sample_spec(rng: random.Random, split: IOISplit, template: int, abc: bool) -> Spec:
    """An IOI prompt (or an ABC one, three different names) of `template` from `split`."""
    order = rng.choice(("ABB", "BAB"))
    a, b, c = rng.sample(split.names, 3)
    names = (a, b, c) if abc else (a, b, a)
    return Spec(template, order, names, rng.choice(split.places), rng.choice(split.objects))


def encode_specs(tokenizer, specs: Sequence[Spec]) -> IOIRows:
    """Tokenise specs with saelab's IOI generator and record the positions and slot names."""
    prompts = [ioi_prompt(s.template, s.order, s.names, s.place, s.obj) for s in specs]
    encoded = encode_prompts(tokenizer, prompts)
    length = max(len(e.ids) for e in encoded)
    pad = tokenizer.bos_token_id
    tokens = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in encoded], dtype=torch.long)
    first = torch.tensor([min(e.positions["IO"], e.positions["S1"]) for e in encoded])
    second = torch.tensor([max(e.positions["IO"], e.positions["S1"]) for e in encoded])
    rows = torch.arange(len(specs))
    return IOIRows(
        tokens=tokens,
        end=torch.tensor([e.positions["end"] for e in encoded]),
        s2=torch.tensor([e.positions["S2"] for e in encoded]),
        slot_names=torch.stack([tokens[rows, first], tokens[rows, second]], dim=1),
        dup=torch.tensor([s.dup for s in specs]),
        templates=tuple(s.template for s in specs),
        io=torch.tensor([e.positions["IO"] for e in encoded]),
        slots=torch.stack([first, second], dim=1),
    )


class Target(NamedTuple):
    """A high-level output: a distribution over (at most) two tokens per prompt."""

    ids: Int[Tensor, "n 2"]
    weights: Float[Tensor, "n 2"]


def name_output(rows: IOIRows, repeated: Int[Tensor, " n"]) -> Target:
    """The name at the slot S2 does not repeat (slot 1 − `repeated`); both slots' names at ½ each when `repeated`
    is -1."""
    other = (1 - repeated.clamp(min=0))[:, None]
    picked = rows.slot_names.gather(1, other).expand(-1, 2)
    none = (repeated < 0)[:, None]
    ids = torch.where(none, rows.slot_names, picked)
    return Target(ids, torch.full(ids.shape, 0.5))


VARIABLES = ("DUP", "S-INH", "NAME")


def high_level_output(base: IOIRows, source: IOIRows, variable: str | None) -> Target:
    """The high-level model's output on `base` with `variable` set to its value on `source` (None: no change).

    Every variable carries the same value (DUP's), so setting any of them from `source` makes the output the
    source's DUP value."""
    if variable is None:
        return name_output(base, base.dup)
    if variable in VARIABLES:
        return name_output(source, source.dup)
    raise ValueError(f"unknown high-level variable {variable!r}; expected one of {VARIABLES}")


def target_loss(logits: Float[Tensor, "n d_vocab"], target: Target) -> Float[Tensor, " n"]:
    """Cross-entropy against the high-level output distribution."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.gather(1, target.ids) * target.weights).sum(dim=1)


def candidate_logits(
    patched: Float[Tensor, "n d_vocab"], clean: Float[Tensor, "n d_vocab"], ids: Int[Tensor, "n k"]
) -> tuple[Float[Tensor, "n k"], Float[Tensor, "n k"], Bool[Tensor, "n k"]]:
    """Both runs' logits of each row's candidate tokens (float32) and which are real: a negative id is padding
    (its logit is the token 0's, to be masked by the caller)."""
    safe = ids.clamp(min=0)
    return patched.float().gather(1, safe), clean.float().gather(1, safe), ids >= 0


def strict_logit_loss(
    patched: Float[Tensor, "n d_vocab"], clean: Float[Tensor, "n d_vocab"], ids: Int[Tensor, "n k"]
) -> Float[Tensor, ""]:
    """Ours, not InterpBench's: the squared change of the candidate tokens' logits, each taken relative to the
    candidates' mean (a shift of every logit is no change), over the clean ones' squared size, both averaged over
    rows and candidates. With two candidates it is mean(Δd²) / mean(d²), d their logit difference: the IOI metric
    logit(IO) − logit(S), which the construction check's resample ablation moves by a share of the gap. Unlike
    cross-entropy or KL it does not vanish when the prediction is saturated; being scale-free, shrinking every
    logit does not lower it (an absolute version did that: the clean metric fell from 9.3 to 2.9 in 400 steps).
    A negative id is padding (rows with fewer candidates, e.g. docstring signatures of different lengths): it
    takes no part in a row's mean nor in either average."""
    patched, clean, valid = candidate_logits(patched, clean, ids)
    valid = valid.float()
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    patched = patched - (patched * valid).sum(dim=1, keepdim=True) / count
    clean = clean - (clean * valid).sum(dim=1, keepdim=True) / count
    change = ((patched - clean).pow(2) * valid).sum()
    size = (clean.pow(2) * valid).sum()
    return change / size.clamp(min=1e-6)


def strict_shift_loss(
    patched: Float[Tensor, "n d_vocab"], clean: Float[Tensor, "n d_vocab"], ids: Int[Tensor, "n k"]
) -> Float[Tensor, ""]:
    """Ours, not InterpBench's: the squared mean (over rows) of the signed change of the task metric's margin,
    over the clean margins' mean square. The margin is logit(top) − the largest logit of the other candidates,
    top being the clean run's top candidate (the answer, where the model is right: the IOI and docstring
    metric, logit(answer) − max over the wrong ones). The construction check's single-node effect is this mean
    change over the gap; `strict_logit_loss`, a mean of squares, sees a small shift shared by every row only as
    its square on each row, this term sees it whole. Padding (negative ids) as in `strict_logit_loss`; rows with
    fewer than two candidates have no margin and are left out. Like `strict_logit_loss` it differentiates the
    clean run too (the caller's `clean`)."""
    rows = (ids >= 0).sum(dim=1) >= 2
    patched, clean, ids = patched[rows], clean[rows], ids[rows]
    if not len(ids):
        return patched.sum() * 0.0
    patched, clean, valid = candidate_logits(patched, clean, ids)
    top = clean.masked_fill(~valid, float("-inf")).argmax(dim=1, keepdim=True)
    others = valid & (torch.arange(ids.shape[1], device=ids.device)[None, :] != top)

    def margin(logits: Tensor) -> Tensor:
        return logits.gather(1, top)[:, 0] - logits.masked_fill(~others, float("-inf")).max(dim=1).values

    before = margin(clean)
    return (margin(patched) - before).mean().pow(2) / before.pow(2).mean().clamp(min=1e-6)


# --- patched forward passes ---------------------------------------------------------------------------------


@dataclass
class Patch:
    """Where a patched run takes activations from the cache: per layer, heads' z and MLP outputs (from the
    source run, `source_cache`) and heads' value vectors, queries and keys (frozen at the ones `frozen_values`
    cached, e.g. the base's own clean run)."""

    z: list[Bool[Tensor, "n pos n_heads"]]
    mlp: list[Bool[Tensor, "n pos"]]
    v: list[Bool[Tensor, "n pos n_heads"]]
    q: list[Bool[Tensor, "n pos n_heads"]]
    k: list[Bool[Tensor, "n pos n_heads"]]

    @classmethod
    def empty(cls, model: HookedTransformer, n: int, pos: int) -> "Patch":
        cfg = model.cfg

        def heads() -> list[Tensor]:
            return [torch.zeros(n, pos, cfg.n_heads, dtype=torch.bool) for _ in range(cfg.n_layers)]

        return cls(heads(), [torch.zeros(n, pos, dtype=torch.bool) for _ in range(cfg.n_layers)], heads(), heads(),
                   heads())

    def aligned(self, rows: Tensor, node: AlignedNode, base) -> None:
        """Patch `node`'s head at its position in `rows` (`base`: the task's rows, with `.position(name)`)."""
        self.z[node.layer][rows, base.position(node.position)[rows], node.head] = True

    def path_strict(self, rows: Tensor, edge: "PathEdge", base) -> None:
        """Ours, not InterpBench's: patch the edge's sender at its aligned positions (from the source) and freeze
        the receiving input (value vectors, queries or keys) of the receiver head at every position (at the
        cached `frozen_values`: the base's clean run). The stated edge sender -> receiver.v (.q, .k) is then cut,
        so any change left in the output went through a path the circuit does not state. Unstated paths that end
        in the frozen input (e.g. sender -> MLP -> receiver.v) are cut too, so these rows do not test them."""
        for node in edge.senders:
            self.aligned(rows, node, base)
        for layer, head, part in edge.receivers:
            getattr(self, part)[layer][rows, :, head] = True


class PathEdge(NamedTuple):
    """The stated head -> head edges one aligned head sends: the sending head's aligned nodes (one per position it
    is aligned at) and every (layer, head, input) it is stated to write into, so that a path-strict row cuts all
    of the sender's stated paths at once (cutting one of two would leave a stated path open)."""

    senders: tuple[AlignedNode, ...]
    receivers: tuple[tuple[int, int, str], ...]
    """(layer, head, "v" / "q" / "k") of each stated edge from the sender to an aligned head."""

    @property
    def name(self) -> str:
        return f"{self.senders[0].node}->" + "+".join(f"{layer}.{head}.{part}" for layer, head, part in self.receivers)


def path_edges(alignment: Sequence[AlignedNode], circuit_edges: Sequence[str]) -> tuple[PathEdge, ...]:
    """The stated edges "L.H->L.H.v" (.q, .k) between aligned heads (the path-strict term's edges), one
    `PathEdge` per sending head, in the order the circuit first states them. A sender head that carries several
    variables sends from all its aligned positions (a path-strict row patches every one)."""
    by_head: dict[str, list[AlignedNode]] = {}
    for node in alignment:
        by_head.setdefault(node.node, []).append(node)
    receivers: dict[str, list[tuple[int, int, str]]] = {}
    for name in circuit_edges:
        sender, _, receiver = name.partition("->")
        if sender not in by_head or receiver[-2:] not in (".v", ".q", ".k") or receiver[:-2] not in by_head:
            continue
        layer, head = (int(x) for x in receiver[:-2].split("."))
        receivers.setdefault(sender, []).append((layer, head, receiver[-1]))
    edges = [PathEdge(tuple(by_head[sender]), tuple(parts)) for sender, parts in receivers.items()]
    return tuple(edges)


STRICT_GROUPS = ("strict-one", "strict-many", "strict-all", "strict-layer")
"""The trainer's strict row groups: one non-aligned unit patched, a random half of them, all of them, every one
of a random layer's (the last two ours, with --strict-all and --strict-layer)."""


def non_aligned_units(model: HookedTransformer, alignment: Sequence[AlignedNode]) -> list[tuple[str, int, int | None]]:
    """Every non-aligned unit as (kind, layer, head): ("head", L, H), ("mlp", L, None), and ("rest", L, H) for
    an aligned head at every position but its aligned one."""
    aligned = {(a.layer, a.head) for a in alignment}
    units: list[tuple[str, int, int | None]] = []
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            units.append(("rest" if (layer, head) in aligned else "head", layer, head))
        if not model.cfg.attn_only:
            units.append(("mlp", layer, None))
    return units


def patch_unit(patch: Patch, row: int, unit: tuple[str, int, int | None], base,
               alignment: Sequence[AlignedNode]) -> None:
    """Mark one non-aligned unit of `row` for patching."""
    kind, layer, head = unit
    if kind == "mlp":
        patch.mlp[layer][row] = True
        return
    patch.z[layer][row, :, head] = True
    if kind == "rest":
        for node in alignment:
            if (node.layer, node.head) == (layer, head):
                patch.z[layer][row, base.position(node.position)[row], head] = False


@torch.no_grad()
def source_cache(model: HookedTransformer, tokens: Int[Tensor, "n pos"]) -> dict[str, Tensor]:
    """Every head's z and every MLP's output on `tokens`."""
    names = {HookSite(layer, kind).hook_name for layer in range(model.cfg.n_layers) for kind in ("attn_z", "mlp_out")}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, stop_at_layer=model.cfg.n_layers)
    return {name: cache[name] for name in names}


@torch.no_grad()
def frozen_values(model: HookedTransformer, tokens: Int[Tensor, "n pos"]) -> dict[str, Tensor]:
    """Every head's value vectors, queries and keys (hook_v, hook_q, hook_k) on `tokens`: what the heads
    `Patch.v`, `Patch.q` and `Patch.k` mark are frozen at."""
    names = {block_hook(layer, f"attn.hook_{x}") for layer in range(model.cfg.n_layers) for x in "vqk"}
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names, stop_at_layer=model.cfg.n_layers)
    return {name: cache[name] for name in names}


def patched_logits(
    model: HookedTransformer, base, cache: dict[str, Tensor], patch: Patch
) -> Float[Tensor, "n d_vocab"]:
    """End logits of `base` with the activations `patch` marks replaced by the source's (`cache`)."""
    return patched_end_logits(model, base.tokens, base.end, cache, patch)


def patched_end_logits(
    model: HookedTransformer, tokens: Int[Tensor, "n pos"], end: Int[Tensor, " n"], cache: dict[str, Tensor],
    patch: Patch,
) -> Float[Tensor, "n d_vocab"]:
    """End logits of `tokens` with the activations `patch` marks replaced by the cached ones (`cache`: heads' z
    and MLP outputs from `source_cache`, value vectors, queries and keys from `frozen_values`)."""

    def from_cache(x: Tensor, hook, marks: Tensor) -> Tensor:
        return torch.where(marks[..., None], cache[hook.name], x)

    hooks = []
    for layer in range(model.cfg.n_layers):
        marked = ((HookSite(layer, "attn_z").hook_name, patch.z[layer]),
                  *((block_hook(layer, f"attn.hook_{part}"), getattr(patch, part)[layer]) for part in "vqk"),
                  (HookSite(layer, "mlp_out").hook_name, patch.mlp[layer]))
        hooks += [(name, lambda x, hook, marks=marks: from_cache(x, hook, marks))
                  for name, marks in marked if marks.any()]
    resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
    return end_logits(model, resid, end)


# --- construction checks ------------------------------------------------------------------------------------


class PairSet(NamedTuple):
    """Base prompts and same-layout source prompts (a task's rows: `IOIRows`, `DocRows`), aligned row by row."""

    base: NamedTuple
    source: NamedTuple


def sample_pairs(tokenizer, split: IOISplit, n: int, seed: int, abc_share: float = 0.0) -> PairSet:
    """n IOI base prompts, each with a source prompt of the same template (an ABC one with `abc_share`)."""
    rng = random.Random(seed)
    bases, sources = [], []
    for _ in range(n):
        template = rng.choice(split.templates)
        bases.append(sample_spec(rng, split, template, abc=False))
        sources.append(sample_spec(rng, split, template, abc=rng.random() < abc_share))
    return PairSet(encode_specs(tokenizer, bases), encode_specs(tokenizer, sources))


def top1(logits: Float[Tensor, "n d_vocab"], target: Target) -> Bool[Tensor, " n"]:
    """Whether the top token over the whole vocabulary is the target's (deterministic targets only)."""
    return logits.argmax(dim=-1) == target.ids[:, 0]


HighLevel = Callable[..., Target]
"""(base rows, source rows, variable or None) → the high-level output under that intervention."""


@torch.no_grad()
def task_accuracy(model: HookedTransformer, pairs: PairSet, high_level: HighLevel = None) -> float:
    """Share of base prompts whose top-1 token (whole vocabulary) is the high-level output (IOI: the indirect
    object; `high_level` defaults to IOI's)."""
    high_level = high_level or high_level_output
    patch = Patch.empty(model, *pairs.base.tokens.shape)
    logits = patched_logits(model, pairs.base, {}, patch)
    return float(top1(logits, high_level(pairs.base, pairs.base, None)).float().mean())


def interchange_pairs(entry: "SIITTask", tokenizer, split, n: int, seed: int,
                      shared: PairSet | None = None) -> dict[str, PairSet]:
    """Each aligned variable's interchange-check pairs: the entry's own (`check_pairs`) where it has them, else
    the shared "iit" pairs of `sample_pairs` (`shared`, when the caller has drawn them already)."""
    if shared is None:
        shared = entry.sample_pairs(tokenizer, split, n, seed, "iit")
    own = entry.check_pairs or (lambda *_: None)
    return {v: own(tokenizer, split, n, seed, v) or shared for v in entry.variables}


@torch.no_grad()
def interchange_accuracy(
    model: HookedTransformer, pairs: PairSet, node: AlignedNode, high_level: HighLevel = None
) -> float:
    """Share of pairs where patching `node` from the source gives the high-level model's output under the same
    intervention (top-1 over the whole vocabulary), over the pairs where that output is one token (IOI: not an
    ABC source)."""
    logits, target = _interchange_logits(model, pairs, node, high_level, one_token=True)
    return float(top1(logits, target).float().mean())


@torch.no_grad()
def interchange_accuracy_two(
    model: HookedTransformer, pairs: PairSet, node: AlignedNode, high_level: HighLevel = None
) -> float:
    """Ours, beside `interchange_accuracy`: over the pairs whose high-level output is two distinct tokens (the
    IOI designs give them ½ each; the top-1 check leaves these pairs out), the share where the patched model's two top tokens over the whole vocabulary are
    those two, in either order; NaN when there is no such pair."""
    logits, target = _interchange_logits(model, pairs, node, high_level, one_token=False)
    if not len(logits):
        return float("nan")
    top = logits.topk(2, dim=-1).indices.sort(dim=-1).values
    return float((top == target.ids.sort(dim=-1).values).all(dim=-1).float().mean())


def _interchange_logits(model, pairs: PairSet, node: AlignedNode, high_level: HighLevel | None, one_token: bool):
    """The patched logits and high-level targets of the pairs whose high-level output is one token
    (`one_token`) or two."""
    high_level = high_level or high_level_output
    ids = high_level(*pairs, node.variable).ids
    keep = (ids[:, 0] == ids[:, 1]) == one_token
    base, source = (subset_rows(rows, keep) for rows in pairs)
    if not len(base.end):
        return torch.empty(0, model.cfg.d_vocab_out), high_level(base, source, node.variable)
    patch = Patch.empty(model, *base.tokens.shape)
    patch.aligned(torch.arange(len(base.end)), node, base)
    return patched_logits(model, base, source_cache(model, source.tokens), patch), \
        high_level(base, source, node.variable)


def subset_rows(rows, keep: Bool[Tensor, " n"]):
    """A task's rows (a NamedTuple of per-row tensors and tuples) where `keep` is True."""
    return type(rows)(*(_kept(field, keep) for field in rows))


def _kept(field, keep: Tensor):
    if isinstance(field, Tensor):
        return field[keep]
    return tuple(v for v, k in zip(field, keep.tolist(), strict=True) if k)


@torch.no_grad()
def strict_accuracy(
    model: HookedTransformer, pairs: PairSet, alignment: Sequence[AlignedNode], high_level: HighLevel = None
) -> float:
    """Share of pairs whose top-1 output stays the high-level output when every non-aligned unit (heads outside
    the alignment, MLPs, aligned heads at their other positions) is patched from the source at once."""
    base = pairs.base
    patch = Patch.empty(model, *base.tokens.shape)
    for unit in non_aligned_units(model, alignment):
        for row in range(len(base.end)):
            patch_unit(patch, row, unit, base, alignment)
    logits = patched_logits(model, base, source_cache(model, pairs.source.tokens), patch)
    return float(top1(logits, (high_level or high_level_output)(base, base, None)).float().mean())


class PerUnitStrict(NamedTuple):
    """Strict accuracy with one non-aligned unit patched at a time (InterpBench's protocol)."""

    mean: float
    """Mean over the units (InterpBench's val/strict_accuracy)."""
    worst: float
    """The lowest unit's accuracy."""
    worst_unit: str
    """That unit ("head 0.0", "mlp 1", "rest 1.2": an aligned head at its other positions)."""


@torch.no_grad()
def strict_accuracy_per_unit(
    model: HookedTransformer, pairs: PairSet, alignment: Sequence[AlignedNode], high_level: HighLevel = None
) -> PerUnitStrict:
    """Strict accuracy as InterpBench measures it: each non-aligned unit patched from the source on its own, the
    share of pairs whose top-1 output stays the high-level output, averaged over the units (and the worst)."""
    base = pairs.base
    target = (high_level or high_level_output)(base, base, None)
    cache = source_cache(model, pairs.source.tokens)
    scores = {}
    for unit in non_aligned_units(model, alignment):
        patch = Patch.empty(model, *base.tokens.shape)
        for row in range(len(base.end)):
            patch_unit(patch, row, unit, base, alignment)
        kind, layer, head = unit
        name = f"{kind} {layer}" if head is None else f"{kind} {layer}.{head}"
        scores[name] = float(top1(patched_logits(model, base, cache, patch), target).float().mean())
    worst = min(scores, key=scores.get)
    return PerUnitStrict(sum(scores.values()) / len(scores), scores[worst], worst)


STATED_EDGE_MIN = 0.2
"""Ours (not InterpBench's): every stated edge a circuit head sends (head -> head, head -> logits) must lower the
metric by more than this share of the clean-corrupted gap when path-patched alone (an edge that raises it does
not carry the task, however large)."""
UNSTATED_PATH_MAX = 0.05
"""Ours: every edge a circuit head sends that the circuit does not state must move it by less than this share."""


class EdgeCheck(NamedTuple):
    """Ours: whether a model implements its circuit's stated edges, by single-edge path patching
    (`saelab.circuits.ground_truth.edge_effects`: the receiver alone reads the sender's corrupted output)."""

    stated: dict[str, float]
    """Stated edge sent by a circuit head → its effect / gap (signed)."""
    largest_unstated: dict[str, tuple[str, float]]
    """Circuit head → its unstated outgoing edge of largest |effect|, and that effect / gap (signed)."""

    @property
    def passed(self) -> dict[str, bool]:
        return {
            f"stated_edges>{STATED_EDGE_MIN:g}": all(-v > STATED_EDGE_MIN for v in self.stated.values()),
            f"unstated_paths<{UNSTATED_PATH_MAX:g}": all(
                abs(v) < UNSTATED_PATH_MAX for _, v in self.largest_unstated.values()),
        }

    def to_json(self) -> dict:
        return {"stated_edge_effect_over_gap": {e: round(v, 4) for e, v in self.stated.items()},
                "largest_unstated_path_over_gap": {h: [e, round(v, 4)] for h, (e, v) in self.largest_unstated.items()},
                "passed": self.passed}


def edge_check_from_effects(
    effects: Mapping[str, float], gap: float, heads: Sequence[str], stated: Sequence[str]
) -> EdgeCheck:
    """`EdgeCheck` from path-patching effects (edge name → mean metric change) of every edge the circuit's heads
    ("L.H") send; `stated`: the circuit's edge names."""
    if gap == 0:
        raise ValueError("edge check: the clean and corrupted metrics are equal (gap 0); no effect to compare")
    sent = {h: {e: v / gap for e, v in effects.items() if e.partition("->")[0] == h} for h in heads}
    missing = [e for e in stated if e.partition("->")[0] in heads and e not in effects]
    if missing:
        raise ValueError(f"edge check: no path-patching effect for the stated edge(s) {missing}; the measured edges "
                         "must use the circuit file's edge names")
    stated_share = {e: v for h in heads for e, v in sent[h].items() if e in stated}
    largest = {}
    for h in heads:
        unstated = {e: v for e, v in sent[h].items() if e not in stated}
        if unstated:
            edge = max(unstated, key=lambda e: abs(unstated[e]))
            largest[h] = (edge, unstated[edge])
    return EdgeCheck(stated_share, largest)


def edge_check(model: HookedTransformer, problem, entry: "SIITTask", gap: float) -> EdgeCheck:
    """`EdgeCheck` of `model` on `problem` (a `CircuitProblem`; its corrupted prompts are the path patches'
    source): every edge sent by one of the entry's aligned heads, path-patched alone."""
    heads = sorted({a.node for a in entry.alignment})
    graph = Graph.from_config(model.cfg)
    effects = edge_effects(model, problem, [e for e in graph.edges if e.sender.name in heads])
    return edge_check_from_effects({e.name: v for e, v in effects.items()}, gap, heads, entry.circuit_edges)


def dataset_rows(data) -> IOIRows:
    """The `IOIRows` of an IOI `TaskDataset`'s clean prompts (for patching with its corrupted prompts)."""
    io, s1 = data.positions["IO"], data.positions["S1"]
    rows = torch.arange(len(data))
    first, second = torch.minimum(io, s1), torch.maximum(io, s1)
    tokens = data.clean_tokens
    return IOIRows(
        tokens=tokens,
        end=data.positions["end"],
        s2=data.positions["S2"],
        slot_names=torch.stack([tokens[rows, first], tokens[rows, second]], dim=1),
        dup=torch.tensor([1 if p == "ABB" else 0 for p in data.attributes["pos"]]),
        templates=tuple(data.attributes["template"]),
        io=io,
        slots=torch.stack([first, second], dim=1),
    )


# --- a task's SIIT entry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SIITTask:
    """Everything the SIIT trainer and the construction checks need to know about one task's high-level model."""

    task: str
    """The saelab task (`saelab.tasks.get_task`) whose generator the construction checks use."""
    model: str
    """The bundled model trained on it (data/models/MODEL, data/circuits/MODEL/TASK.json)."""
    alignment: tuple[AlignedNode, ...]
    circuit_edges: tuple[str, ...]
    """The edges the high-level model's data flow implies (head → head edges are the ones SIIT constrains)."""
    high_level_output: HighLevel
    encode: Callable
    """(tokenizer, specs) → the task's rows (tokens, end, `.position(name)`, the facts `high_level_output` reads)."""
    pair_specs: Callable
    """(rng, split, group, source_share) → (base spec, source spec) for one training row of `group`
    ("task", a variable, one of `STRICT_GROUPS`); `source_share`: the share of the task's second kind of
    source (IOI: ABC prompts; docstring: the base's own names permuted)."""
    sample_pairs: Callable
    """(tokenizer, split, n, seed, purpose) → `PairSet` for "iit" (interchange and task accuracy) or "strict"."""
    train_split: Callable
    """(names of held-out splits trained on) → the split training and early stopping draw from."""
    held_out_splits: Mapping[str, object]
    """Name → split never used in training or in choosing when to stop (unless the run trains on it)."""
    summary: str
    """The high-level model in one line."""
    n_ctx: int = 64
    positional_embedding_type: str = "standard"
    """The trained model's positions: "standard" (learned absolute) or "rotary"."""
    source_share: float = 0.25
    """Default `pair_specs` source share."""
    candidates: Callable | None = None
    """(rows) → [n, k] token ids whose logit differences the task's metric reads (IOI: the two slot names, IO
    and S), for the trainer's optional strict logit term (None: the entry has none)."""
    attention_targets: Callable | None = None
    """(rows) → {variable: key position its head attends to from its named position on a clean prompt}, for the
    trainer's optional attention loss (None: the entry has none; a variable left out has no attention target)."""
    near_miss: Callable | None = None
    """(rng, split, group, base spec, source spec, nearest: name → the split's other names by decreasing
    embedding cosine) → the source with a name swapped for one the model is likely to confuse with the base's,
    or the source unchanged where `group` has none, for the trainer's optional near-miss sources (None: none)."""
    intervened_attention_targets: Callable | None = None
    """(base rows, source rows, variable) → {another variable: mask (n × pos) of the key positions its head may
    attend to when `variable` is set from the source}, for the trainer's optional attention loss on the
    interchange rows (None: none)."""
    variable_values: Callable | None = None
    """(rows of IOI prompts, no ABC ones) → {variable: {attribute: the value it carries, per row}}: what each
    aligned variable holds on a clean prompt, as classes for feature recovery (`saelab.evals.known_variables`;
    None: the entry has none)."""
    check_pairs: Callable | None = None
    """(tokenizer, split, n, seed, variable) → `PairSet` for that variable's interchange check, or None where
    `sample_pairs`' "iit" pairs test it (None: they test every variable; see `interchange_pairs`)."""

    def __post_init__(self) -> None:
        if len({a.variable for a in self.alignment}) != len(self.alignment):
            raise ValueError(f"{self.task}: two aligned nodes carry the same variable")

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(a.variable for a in self.alignment)


IOI_ALIGNMENT = (
    AlignedNode("DUP", 0, 2, "S2", "the earlier name the name at S2 does not repeat (the indirect object); both "
                "earlier names at 1/2 when it repeats neither (ABC)"),
    AlignedNode("S-INH", 1, 1, "end", "DUP, moved from S2 to END"),
    AlignedNode("NAME", 2, 3, "end", "S-INH, written to the output (the answer)"),
)
IOI_CIRCUIT_EDGES = (
    "input->0.2.q", "input->0.2.k", "input->0.2.v", "0.2->1.1.v", "input->1.1.q", "input->1.1.k",
    "1.1->2.3.v", "input->2.3.q", "input->2.3.k", "2.3->logits",
)


def abc_corruption(rng: random.Random, split: IOISplit, base: Spec) -> Spec:
    """saelab's IOI corruption of `base` (`saelab.tasks.ioi`), the source of the construction check's resample
    ablation: the same template, order, place and object with three fresh names, none of `base`'s."""
    return base._replace(names=tuple(rng.sample([n for n in split.names if n not in base.names], 3)))


def ioi_pair_specs(rng: random.Random, split: IOISplit, group: str, abc_share: float) -> tuple[Spec, Spec]:
    """A same-template (base, source) pair; task bases are ABC with `abc_share`, sources always may be. Strict
    rows take half their sources from the base's ABC corruption (what the construction check patches from), the
    other half as the rest."""
    template = rng.choice(split.templates)
    abc_base = group == "task" and rng.random() < abc_share
    base = sample_spec(rng, split, template, abc=abc_base)
    if group.startswith("strict") and rng.random() < 0.5:
        return base, abc_corruption(rng, split, base)
    return base, sample_spec(rng, split, template, abc=rng.random() < abc_share)


def ioi_sample_pairs(tokenizer, split: IOISplit, n: int, seed: int, purpose: str) -> PairSet:
    """IOI bases with IOI sources ("iit") or half-ABC sources ("strict")."""
    return sample_pairs(tokenizer, split, n, seed, abc_share=0.5 if purpose == "strict" else 0.0)


def ioi_train_split(trained_on: frozenset[str] = frozenset()) -> IOISplit:
    """The training split, plus the held-out splits named in `trained_on`."""
    templates = TRAIN_SPLIT.templates
    if "held_out_templates" in trained_on:
        templates = tuple(range(len(BABA_TEMPLATES)))
    places, objects = TRAIN_SPLIT.places, TRAIN_SPLIT.objects
    if "held_out_places_objects" in trained_on:
        places, objects = places + HELD_OUT_WORD_SPLIT.places, objects + HELD_OUT_WORD_SPLIT.objects
    return IOISplit(templates, TRAIN_SPLIT.names, places, objects)


def ioi_candidates(rows: IOIRows) -> Int[Tensor, "n 2"]:
    """The names at the two name slots: the metric is logit(IO) − logit(S)."""
    return rows.slot_names


# --- the inhibition design (ours, in Wang et al.'s shape): NAME reads the base's names, S-INH only says which to
# skip. In the relay above every variable carries the answer, so node interventions cannot tell the stated chain
# from parallel paths (benchmarks/results/siit_ioi_path_strict.md); here each stage computes something else.


def subject_names(rows: IOIRows) -> Int[Tensor, " n"]:
    """The name S2 repeats (the subject's token), -1 where it repeats neither (an ABC prompt)."""
    named = rows.slot_names.gather(1, rows.dup.clamp(min=0)[:, None])[:, 0]
    return torch.where(rows.dup >= 0, named, -1)


def inhibited_output(rows: IOIRows, inhibited: Int[Tensor, " n"]) -> Target:
    """The earlier name of `rows` that is not `inhibited` (a token id per row); both at ½ when it is neither."""
    match = rows.slot_names == inhibited[:, None]
    slot = torch.where(match[:, 0], 0, torch.where(match[:, 1], 1, -1))
    return name_output(rows, slot)


def inhibition_output(base: IOIRows, source: IOIRows, variable: str | None) -> Target:
    """The inhibition design's output on `base` with `variable` set to its value on `source` (None: no change).

    DUP and S-INH carry the subject's name, so setting either from `source` makes the output the base's earlier
    name that is not the source's subject (the base's subject when the source's subject is the base's indirect
    object; both earlier names at ½ when the source's subject is neither); NAME carries the answer, so setting it
    makes the output the source's indirect object."""
    if variable is None:
        return inhibited_output(base, subject_names(base))
    if variable in ("DUP", "S-INH"):
        return inhibited_output(base, subject_names(source))
    if variable == "NAME":
        return inhibited_output(source, subject_names(source))
    raise ValueError(f"unknown high-level variable {variable!r}; expected one of {VARIABLES}")


IOI_INHIBITION_ALIGNMENT = (
    AlignedNode("DUP", 0, 2, "S2", "the name at S2 when it repeats an earlier name (the subject); none on an ABC "
                "prompt"),
    AlignedNode("S-INH", 1, 1, "end", "DUP, moved from S2 to END: the name not to output"),
    AlignedNode("NAME", 2, 3, "end", "the earlier name that is not S-INH, read from the prompt and written to the "
                "output (the answer); both earlier names at 1/2 when S-INH is neither"),
)
IOI_INHIBITION_EDGES = (
    "input->0.2.q", "input->0.2.k", "input->0.2.v", "0.2->1.1.v", "input->1.1.q", "input->1.1.k",
    "1.1->2.3.q", "input->2.3.k", "input->2.3.v", "2.3->logits",
)
"""As in Wang et al.: S-inhibition reaches the name mover through its query; the names it copies come from the
prompt's tokens."""


def inhibiting_source(rng: random.Random, split: IOISplit, base: Spec) -> Spec:
    """A source of `base`'s template whose subject is the base's indirect object (½: the answer flips to the
    base's subject), the base's subject (¼: no change) or another name (¼: neither earlier name is inhibited)."""
    s, io = base.names[0], base.names[1]
    draw = rng.random()
    subject = io if draw < 0.5 else s if draw < 0.75 else rng.choice([n for n in split.names if n not in (s, io)])
    other = rng.choice([n for n in split.names if n != subject])
    return Spec(base.template, rng.choice(("ABB", "BAB")), (subject, other, subject),
                rng.choice(split.places), rng.choice(split.objects))


def inhibition_attention_targets(rows: IOIRows) -> dict[str, Int[Tensor, " n"]]:
    """DUP (0.2 at S2) reads the name at S2 from S2 itself (ABC prompts too: a name that is neither earlier one
    inhibits neither, as the high-level model says), S-INH (1.1 at END) reads DUP at S2, NAME (2.3 at END) reads
    the indirect object (none, -1, on an ABC prompt, where the output is both names at ½). Without DUP's target,
    from random weights head 0.2 learned to carry the indirect object (the relay's shortcut) and DUP / S-INH
    interchange stayed at a coin flip. NAME's target came later: without it head 2.3 gave about 0.8 of its
    attention to non-name tokens; 1,700 fine-tuning steps with it moved its share on the indirect object from 0.21
    to 0.24 (benchmarks/results/siit_ioi_inhibition.md)."""
    return {"DUP": rows.s2, "S-INH": rows.s2, "NAME": torch.where(rows.dup >= 0, rows.io, -1)}


def inhibition_values(rows: IOIRows) -> dict[str, dict[str, Int[Tensor, " n"]]]:
    """DUP and S-INH carry the subject (its name and slot), NAME the indirect object."""
    io, subject = clean_slots(rows)
    return {"DUP": _slot_value(rows, subject), "S-INH": _slot_value(rows, subject), "NAME": _slot_value(rows, io)}


def inhibition_pair_specs(rng: random.Random, split: IOISplit, group: str, abc_share: float) -> tuple[Spec, Spec]:
    """As `ioi_pair_specs`, except that DUP's and S-INH's sources name the base's names (`inhibiting_source`):
    a random source's subject is almost never one of them, and the output would be both names at ½."""
    if group not in ("DUP", "S-INH"):
        return ioi_pair_specs(rng, split, group, abc_share)
    base = sample_spec(rng, split, rng.choice(split.templates), abc=False)
    return base, inhibiting_source(rng, split, base)


def inhibition_sample_pairs(tokenizer, split: IOISplit, n: int, seed: int, purpose: str) -> PairSet:
    """IOI bases with `inhibiting_source` sources ("iit") or half-ABC sources ("strict")."""
    if purpose != "iit":
        return ioi_sample_pairs(tokenizer, split, n, seed, purpose)
    rng = random.Random(seed)
    bases = [sample_spec(rng, split, rng.choice(split.templates), abc=False) for _ in range(n)]
    sources = [inhibiting_source(rng, split, base) for base in bases]
    return PairSet(encode_specs(tokenizer, bases), encode_specs(tokenizer, sources))


# --- the inhibition design with the name copies as stages (ours): in the inhibition design three layer-0 heads
# copied the names at their slots, each redundant with the others, and NAME read those copies (all non-circuit
# nodes together 0.53 of the gap; benchmarks/results/siit_ioi_inhibition.md). As the docstring design did with its
# head 0.0, the copy is made a stage of its own, so that interchange makes one head's copy decisive.

COPY_VARIABLES = {"SLOT1": 0, "SLOT2": 1}
"""The copy variables and the name slot each copies."""


def copies_output(base: IOIRows, source: IOIRows, variable: str | None) -> Target:
    """The copies design's output on `base` with `variable` set to its value on `source` (None: no change).

    SLOT1 / SLOT2 carry the name at the first / second name slot as NAME reads it (S-INH, read from S2, is
    untouched), so setting one makes the output the earlier name that is not the base's subject among the base's
    names with that slot's replaced by the source's (both at ½ when neither is the subject; when both slots then
    hold the same name, that name). The other variables are the inhibition design's."""
    if variable in COPY_VARIABLES:
        names = base.slot_names.clone()
        slot = COPY_VARIABLES[variable]
        names[:, slot] = source.slot_names[:, slot]
        return inhibited_output(base._replace(slot_names=names), subject_names(base))
    return inhibition_output(base, source, variable)


IOI_COPIES_ALIGNMENT = (
    AlignedNode("SLOT1", 0, 0, "slot1", "the name at the first name slot, copied at its own position"),
    AlignedNode("SLOT2", 0, 0, "slot2", "the name at the second name slot, copied at its own position"),
    *IOI_INHIBITION_ALIGNMENT[:2],
    AlignedNode("NAME", 2, 3, "end", "the earlier name that is not S-INH, read from SLOT1 and SLOT2 and written "
                "to the output (the answer); both earlier names at 1/2 when S-INH is neither"),
)
IOI_COPIES_EDGES = (
    "input->0.0.q", "input->0.0.k", "input->0.0.v", "input->0.2.q", "input->0.2.k", "input->0.2.v",
    "0.2->1.1.v", "input->1.1.q", "input->1.1.k", "1.1->2.3.q", "0.0->2.3.k", "0.0->2.3.v", "2.3->logits",
)
"""The inhibition design's edges, with the names NAME reads (its keys and values) coming from head 0.0's copies;
like every layer-0 aligned head (0.2 here, 0.0 and 0.1 in the docstring design), 0.0 reads its query, key and value
from the input (its query and key were left out until 2026-12-01, when path patching showed them carrying 0.10-0.11
of the gap)."""


def copies_pair_specs(rng: random.Random, split: IOISplit, group: str, abc_share: float) -> tuple[Spec, Spec]:
    """As `inhibition_pair_specs`; a copy variable's source is the base's ABC corruption (same layout, fresh names),
    so the patched slot gets a name the base does not have: the answer flips to it when that slot is the indirect
    object's, and both names are at ½ when it is the subject's. The SLOT interchange checks draw the same pairs
    (`copies_check_pairs`)."""
    if group not in COPY_VARIABLES:
        return inhibition_pair_specs(rng, split, group, abc_share)
    base = sample_spec(rng, split, rng.choice(split.templates), abc=False)
    return base, abc_corruption(rng, split, base)


def copies_values(rows: IOIRows) -> dict[str, dict[str, Int[Tensor, " n"]]]:
    """The inhibition design's values, and SLOT1 / SLOT2 the name at their slot (one value per slot, so no
    "slot" attribute)."""
    return inhibition_values(rows) | {v: {"name": rows.slot_names[:, slot]} for v, slot in COPY_VARIABLES.items()}


def copies_check_pairs(tokenizer, split: IOISplit, n: int, seed: int, variable: str) -> PairSet | None:
    """A copy variable's interchange-check pairs: bases with their ABC corruption as sources (as in training), so
    the patched slot gets a fresh name and every counted pair expects a change (the answer becomes that name when
    the slot is the indirect object's; when it is the subject's the target is both names at ½ and the check
    leaves the pair out). The inhibition design's pairs (the others') name the base's own names: about half of
    their counted SLOT pairs expect no change. None for the other variables."""
    if variable not in COPY_VARIABLES:
        return None
    rng = random.Random(seed)
    bases, sources = zip(*(copies_pair_specs(rng, split, variable, 0.0) for _ in range(n)), strict=True)
    return PairSet(encode_specs(tokenizer, list(bases)), encode_specs(tokenizer, list(sources)))


def copies_attention_targets(rows: IOIRows) -> dict[str, Int[Tensor, " n"]]:
    """The inhibition design's targets, and each copy reads its own slot."""
    return inhibition_attention_targets(rows) | {v: rows.slots[:, slot] for v, slot in COPY_VARIABLES.items()}


def clean_slots(rows: IOIRows) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
    """(the indirect object's slot, the subject's slot) per row; ValueError on an ABC prompt, where the IOI
    designs' variables carry no single value."""
    if bool((rows.dup < 0).any()):
        raise ValueError("ABC prompts carry no single value of the IOI designs' variables; use IOI prompts")
    return 1 - rows.dup, rows.dup


def _slot_value(rows: IOIRows, slot: Int[Tensor, " n"]) -> dict[str, Int[Tensor, " n"]]:
    return {"name": rows.slot_names.gather(1, slot[:, None])[:, 0], "slot": slot}


def relay_values(rows: IOIRows) -> dict[str, dict[str, Int[Tensor, " n"]]]:
    """The relay's variables all carry the indirect object: "name" (its token id) and "slot" (0 / 1: the first /
    second name)."""
    io, _ = clean_slots(rows)
    return {a.variable: _slot_value(rows, io) for a in IOI_ALIGNMENT}


def ioi_attention_targets(rows: IOIRows) -> dict[str, Int[Tensor, " n"]]:
    """Ours: where the stated edges say S-INH and NAME read (the trainer's optional attention loss): S-INH (1.1
    at END) reads DUP from S2 (0.2 -> 1.1.v), NAME (2.3 at END) reads S-INH at END itself (1.1 -> 2.3.v). DUP's
    key (the indirect object's slot) is not in the rows, so it has none."""
    return {"S-INH": rows.s2, "NAME": rows.end}


SIIT_TASKS = ("ioi", "ioi-inhibition", "ioi-copies", "ioi-even-norms", "docstring", "docstring-three-stage",
              "docstring-self-fallback")
"""The SIIT entries: "ioi" is the shipped IOI design (a relay of the answer), "ioi-inhibition" (ours) the
inhibition design above, "ioi-copies" (ours) the inhibition design with head 0.0's name copies as stages;
"docstring" is the five-stage design (layer-0 name copies are stages; runs 1-6 of the bundled model),
"docstring-three-stage" the design of its first training stage, "docstring-self-fallback" (ours; the bundled
saelab-docstring-siit's since 2026-12-01) the five-stage design with "self" as MOVER's no-match output instead
of the method's name; "ioi-even-norms" (ours) is the "ioi" design trained on with the heads' OV norms held
equal (`--even-head-norms`, after a `--head-norm-weight` penalty), so that the heads' OV norms do not rank the
circuit heads first."""


def _ioi_entry(**design) -> SIITTask:
    """An IOI design's entry: what every IOI design shares (task, prompts, splits, candidates) and `design`."""
    return SIITTask(task="ioi", encode=encode_specs, train_split=ioi_train_split, candidates=ioi_candidates,
                    held_out_splits={"held_out_templates": HELD_OUT_TEMPLATE_SPLIT,
                                     "held_out_places_objects": HELD_OUT_WORD_SPLIT}, **design)


def siit_task(task: str) -> SIITTask:
    """The SIIT entry of `task` (one of `SIIT_TASKS`)."""
    if task == "ioi":
        return _ioi_entry(
            model="saelab-ioi-siit", alignment=IOI_ALIGNMENT, circuit_edges=IOI_CIRCUIT_EDGES,
            high_level_output=high_level_output, pair_specs=ioi_pair_specs, sample_pairs=ioi_sample_pairs,
            summary="DUP at S2 -> S-INH at END -> NAME at END", attention_targets=ioi_attention_targets,
            variable_values=relay_values,
        )
    if task == "ioi-even-norms":
        return dataclasses.replace(siit_task("ioi"), model="saelab-ioi-siit-even-norms")
    if task == "ioi-inhibition":
        return _ioi_entry(
            model="saelab-ioi-siit-inhibition", alignment=IOI_INHIBITION_ALIGNMENT,
            circuit_edges=IOI_INHIBITION_EDGES, high_level_output=inhibition_output,
            pair_specs=inhibition_pair_specs, sample_pairs=inhibition_sample_pairs,
            summary="DUP (the subject) at S2 -> S-INH at END -> NAME at END (the earlier name that is not S-INH)",
            attention_targets=inhibition_attention_targets, variable_values=inhibition_values,
        )
    if task == "ioi-copies":
        return _ioi_entry(
            model="saelab-ioi-siit-copies", alignment=IOI_COPIES_ALIGNMENT, circuit_edges=IOI_COPIES_EDGES,
            high_level_output=copies_output, pair_specs=copies_pair_specs, sample_pairs=inhibition_sample_pairs,
            summary="SLOT1, SLOT2 (the names, copied at their slots); DUP (the subject) at S2 -> S-INH at END -> "
                    "NAME at END (the slot name that is not S-INH)",
            attention_targets=copies_attention_targets, check_pairs=copies_check_pairs,
            variable_values=copies_values,
        )
    if task.startswith("docstring") and task in SIIT_TASKS:
        from saelab.circuits.siit_docstring import task_entry

        return task_entry(three_stage=task == "docstring-three-stage",
                          fallback="self" if task == "docstring-self-fallback" else "method")
    raise ValueError(f"no SIIT entry for task {task!r}; expected one of {SIIT_TASKS}")
