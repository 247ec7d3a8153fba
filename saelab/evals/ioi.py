"""IOI plumbing for the supervised-dictionary evaluation: circuit locations, reading and patching a location's
activation, counterfactual prompts and the fit/evaluation split.

A location is a set of attention heads' hook_z read at one named prompt position (e.g. the name movers at
"end", the induction heads at "S2"); its activation is the heads' z vectors concatenated in the listed order.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite, block_hook
from saelab.tasks.base import TaskDataset

log = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("IO", "S", "pos")
"""Makelov et al.'s IOI attributes: the indirect object's name, the subject's name, and the order
(ABB/BAB)."""


@dataclass(frozen=True)
class Location:
    """Heads whose hook_z is read (and patched) at one named position of each prompt."""

    name: str
    """Label in tables, e.g. "name mover@end"."""
    heads: tuple[tuple[int, int], ...]
    """(layer, head) pairs, in the order their z vectors are concatenated."""
    position: str
    """A `TaskDataset.positions` name: "end", "S2", "S1" or "IO"."""

    def __post_init__(self) -> None:
        if not self.heads:
            raise ValueError(f"location {self.name!r} lists no heads")
        if len(set(self.heads)) != len(self.heads):
            raise ValueError(f"location {self.name!r} lists a head twice: {self.heads}")

    def width(self, d_head: int) -> int:
        return len(self.heads) * d_head

    def layers(self) -> list[int]:
        return sorted({layer for layer, _ in self.heads})


CIRCUIT_POSITIONS = {"end": "end", "END": "end", "S2": "S2", "S1": "S1", "IO": "IO"}
"""Positions a circuit file may name for a head class, mapped to `TaskDataset.positions` names."""


def locations_from_circuit(circuit: dict) -> list[Location]:
    """One location per head class of a circuit dict ({"heads": [{layer, head, class, position}, ...]}).

    Classes read at positions that are not prompt slots (e.g. previous-token heads at "S1+1") are skipped.
    """
    heads = circuit.get("heads")
    if not isinstance(heads, list) or not heads:
        raise ValueError(
            "the circuit has no 'heads' list; expected {'heads': [{'layer', 'head', 'class', "
            "'position'}, ...]}"
        )
    groups: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for head in heads:
        position = CIRCUIT_POSITIONS.get(str(head.get("position")))
        if position is None:
            log.info(
                "skipping head %s.%s at position %r (not a prompt slot)",
                head["layer"],
                head["head"],
                head.get("position"),
            )
            continue
        groups.setdefault((str(head.get("class", "heads")), position), []).append(
            (int(head["layer"]), int(head["head"]))
        )
    return [Location(f"{cls}@{pos}", tuple(hs), pos) for (cls, pos), hs in groups.items()]


# ---------------------------------------------------------------- reading and patching a location


def _rows(n: int, device) -> Tensor:
    return torch.arange(n, device=device)


@torch.no_grad()
def location_acts(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    position: Int[Tensor, " batch"],
    location: Location,
) -> Float[Tensor, "batch d"]:
    """The location's activation: its heads' z at each prompt's `position`, concatenated."""
    captured: dict[int, Tensor] = {}

    def keep(z: Tensor, hook, layer: int) -> None:
        captured[layer] = z[_rows(z.shape[0], z.device), position.to(z.device)]

    hooks = [(HookSite(layer, "attn_z").hook_name, partial(keep, layer=layer)) for layer in location.layers()]
    model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=max(location.layers()) + 1)
    return torch.cat([captured[layer][:, head] for layer, head in location.heads], dim=-1)


@torch.no_grad()
def patched_end_logits(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    position: Int[Tensor, " batch"],
    end: Int[Tensor, " batch"],
    location: Location,
    replacement: Float[Tensor, "batch d"] | None,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each prompt's `end` with the location's activation replaced (None: the clean run)."""
    hooks = []
    if replacement is not None:
        blocks = einops.rearrange(replacement, "b (n d_head) -> b n d_head", n=len(location.heads))
        for layer in location.layers():
            which = [i for i, (lay, _) in enumerate(location.heads) if lay == layer]

            def patch(z: Tensor, hook, which=which) -> Tensor:
                rows = _rows(z.shape[0], z.device)
                for i in which:
                    z[rows, position.to(z.device), location.heads[i][1]] = blocks[:, i].to(z)
                return z

            hooks.append((HookSite(layer, "attn_z").hook_name, patch))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits[_rows(tokens.shape[0], logits.device), end.to(logits.device)]


def logit_diff(
    end_logits: Float[Tensor, "batch d_vocab"], answer: Int[Tensor, " batch"], wrong: Int[Tensor, " batch"]
) -> Float[Tensor, " batch"]:
    """logit(IO) − logit(S) per prompt."""
    rows = _rows(end_logits.shape[0], end_logits.device)
    return end_logits[rows, answer.to(end_logits.device)] - end_logits[rows, wrong.to(end_logits.device)]


# ---------------------------------------------------------------- prompts: split and counterfactuals


class Prompts(NamedTuple):
    """Tokenised IOI prompts with what the evaluation reads from them."""

    tokens: Int[Tensor, "batch pos"]
    positions: dict[str, Int[Tensor, " batch"]]
    io_ids: Int[Tensor, " batch"]
    s_ids: Int[Tensor, " batch"]
    attributes: dict[str, list]
    """"IO", "S" (names) and "pos" ("ABB"/"BAB") per prompt."""

    @property
    def size(self) -> int:
        """Number of prompts (a NamedTuple's len() is its field count, so this is not __len__)."""
        return self.tokens.shape[0]


def prompts_from_dataset(data: TaskDataset, rows: Sequence[int] | None = None) -> Prompts:
    """The clean side of an IOI `TaskDataset` (optionally only `rows`)."""
    if data.task != "ioi":
        raise ValueError(f"expected an IOI dataset, got task {data.task!r}")
    index = torch.arange(len(data)) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
    pick = index.tolist()
    return Prompts(
        data.clean_tokens[index],
        {k: v[index] for k, v in data.positions.items()},
        data.answer_ids[index],
        data.wrong_ids[index, 0],
        {a: [data.attributes[a][i] for i in pick] for a in ATTRIBUTES},
    )


def split_fit_eval(fit: TaskDataset, candidates: TaskDataset) -> tuple[Prompts, Prompts]:
    """Fit prompts, and the candidate prompts whose (IO, S) name pair never occurs in the fit set while each
    name was seen in its role there (so every supervised vector the evaluation needs was fitted)."""
    fit_prompts = prompts_from_dataset(fit)
    pairs = set(zip(fit_prompts.attributes["IO"], fit_prompts.attributes["S"], strict=True))
    seen_io, seen_s = set(fit_prompts.attributes["IO"]), set(fit_prompts.attributes["S"])
    rows = [
        i
        for i, (io, s) in enumerate(zip(candidates.attributes["IO"], candidates.attributes["S"], strict=True))
        if (io, s) not in pairs and io in seen_io and s in seen_s
    ]
    if not rows:
        raise ValueError(
            "no evaluation prompt has an unseen (IO, S) pair of seen names; generate more prompts"
        )
    return fit_prompts, prompts_from_dataset(candidates, rows)


class Counterfactual(NamedTuple):
    """Prompts with one attribute changed, and each prompt's new value."""

    prompts: Prompts
    values: list


NameIds = dict[str, int]
"""Name -> token id of " Name"."""

CounterfactualFn = Callable[[Prompts, list, NameIds, torch.Generator], Counterfactual]
"""(prompts, the attribute's possible values, name ids, generator) -> counterfactual prompts."""


def _other_names(current: list[tuple[str, ...]], names: list, generator: torch.Generator) -> list[str]:
    """Per prompt, a random name from `names` not among that prompt's `current` names."""
    picks = torch.randint(0, len(names), (len(current), 64), generator=generator).tolist()
    out = []
    for taken, options in zip(current, picks, strict=True):
        choice = next((names[j] for j in options if names[j] not in taken), None)
        if choice is None:
            raise ValueError(f"no name left to change to besides {taken}; the fit set has too few names")
        out.append(choice)
    return out


def _replace_name(
    p: Prompts, slots: tuple[str, ...], new: list[str], ids: NameIds, attribute: str
) -> Prompts:
    tokens = p.tokens.clone()
    new_ids = torch.tensor([ids[n] for n in new])
    rows = torch.arange(p.size)
    for slot in slots:
        tokens[rows, p.positions[slot]] = new_ids
    io = new_ids if attribute == "IO" else p.io_ids
    s = new_ids if attribute == "S" else p.s_ids
    return p._replace(tokens=tokens, io_ids=io, s_ids=s, attributes={**p.attributes, attribute: new})


def change_io(p: Prompts, values: list, ids: NameIds, generator: torch.Generator) -> Counterfactual:
    new = _other_names(list(zip(p.attributes["IO"], p.attributes["S"], strict=True)), values, generator)
    return Counterfactual(_replace_name(p, ("IO",), new, ids, "IO"), new)


def change_s(p: Prompts, values: list, ids: NameIds, generator: torch.Generator) -> Counterfactual:
    new = _other_names(list(zip(p.attributes["IO"], p.attributes["S"], strict=True)), values, generator)
    return Counterfactual(_replace_name(p, ("S1", "S2"), new, ids, "S"), new)


def flip_order(p: Prompts, values: list, ids: NameIds, generator: torch.Generator) -> Counterfactual:
    """ABB <-> BAB: the IO and first-S tokens swap places (both are single tokens, so nothing else moves)."""
    rows = torch.arange(p.size)
    tokens = p.tokens.clone()
    io_pos, s1_pos = p.positions["IO"], p.positions["S1"]
    tokens[rows, io_pos], tokens[rows, s1_pos] = p.tokens[rows, s1_pos], p.tokens[rows, io_pos]
    new = ["BAB" if v == "ABB" else "ABB" for v in p.attributes["pos"]]
    positions = {**p.positions, "IO": s1_pos, "S1": io_pos}
    return Counterfactual(
        p._replace(tokens=tokens, positions=positions, attributes={**p.attributes, "pos": new}), new
    )


COUNTERFACTUALS: dict[str, CounterfactualFn] = {"IO": change_io, "S": change_s, "pos": flip_order}
"""How to change each attribute of an IOI prompt."""


def name_ids(tokenizer, names: Sequence[str]) -> NameIds:
    """Token id of " Name" for each name (each must be one token)."""
    from saelab.tasks.build import require_single_tokens

    ids = require_single_tokens(tokenizer, [" " + n for n in names])
    return {n: ids[" " + n] for n in names}


def subset(p: Prompts, rows: Tensor) -> Prompts:
    """Prompts `rows` of `p`."""
    pick = rows.tolist()
    return Prompts(
        p.tokens[rows],
        {k: v[rows] for k, v in p.positions.items()},
        p.io_ids[rows],
        p.s_ids[rows],
        {k: [v[i] for i in pick] for k, v in p.attributes.items()},
    )


# ---------------------------------------------------------------- head classes from attention patterns

ATTENTION_CLASSES: dict[str, tuple[str, str, int]] = {
    "name mover": ("end", "IO", 0),
    "s-inhibition": ("end", "S2", 0),
    "duplicate token": ("S2", "S1", 0),
    "induction": ("S2", "S1", 1),
}
"""Class -> (destination position, source position, source offset): the attention that marks the class in
Wang et al.'s IOI circuit (name movers attend from END to IO, S-inhibition heads from END to S2, duplicate-
token heads from S2 to S1, induction heads from S2 to the token after S1)."""


@torch.no_grad()
def attention_scores(
    model: HookedTransformer, prompts: "Prompts", heads: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], dict[str, float]]:
    """Each head's mean attention, over the prompts, along each class's (destination, source) pair."""
    layers = sorted({layer for layer, _ in heads})
    patterns: dict[int, Tensor] = {}

    def keep(pattern: Tensor, hook, layer: int) -> None:
        patterns[layer] = pattern

    hooks = [(block_hook(layer, "attn.hook_pattern"), partial(keep, layer=layer)) for layer in layers]
    model.run_with_hooks(prompts.tokens, fwd_hooks=hooks,
                         stop_at_layer=max(layers) + 1)
    rows = torch.arange(prompts.size)
    scores: dict[tuple[int, int], dict[str, float]] = {}
    for layer, head in heads:
        pattern = patterns[layer][:, head].cpu()  # batch dest source
        scores[(layer, head)] = {
            cls: float(pattern[rows, prompts.positions[dest], prompts.positions[src] + offset].mean())
            for cls, (dest, src, offset) in ATTENTION_CLASSES.items()}
    return scores


def classify_heads(
    model: HookedTransformer, prompts: "Prompts", heads: Sequence[tuple[int, int]], min_attention: float = 0.2
) -> list[dict]:
    """Circuit heads as {layer, head, class, position}: the class whose attention (see ATTENTION_CLASSES) is
    largest, if it reaches `min_attention`; other heads get class "other" and no position."""
    out = []
    for (layer, head), score in attention_scores(model, prompts, heads).items():
        cls, value = max(score.items(), key=lambda item: item[1])
        position = ATTENTION_CLASSES[cls][0] if value >= min_attention else None
        out.append({"layer": layer, "head": head, "class": cls if position else "other", "position": position,
                    "attention": round(value, 4)})
    return out


def circuit_heads(circuit: dict) -> list[tuple[int, int]]:
    """The heads of a ground-truth file written by saelab.circuits ("nodes": ["L.H", "mlpL", ...])."""
    heads = []
    for name in circuit.get("nodes", []):
        layer, dot, head = str(name).partition(".")
        if dot and layer.isdigit() and head.isdigit():
            heads.append((int(layer), int(head)))
    if not heads:
        raise ValueError(
            "the circuit lists no attention heads (expected 'nodes' such as '2.3' or a 'heads' list)"
        )
    return heads


def attention_role(cls: str, attention: float) -> str:
    """What was measured about a head class: "attends end→IO 0.44" (the mean attention along its
    ATTENTION_CLASSES entry), never a role name read off the pattern."""
    dest, src, offset = ATTENTION_CLASSES[cls]
    return f"attends {dest}→{src}{f'+{offset}' if offset else ''} {attention:.2f}"


def locations_from_classified(classified: list[dict]) -> list[Location]:
    """One location per (class, position) of `classify_heads` output, named by its heads, its position and its
    measured attention (the heads' mean), e.g. "0.0+0.3@end attends end→IO 0.44"."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for head in classified:
        if head["position"]:
            groups.setdefault((head["class"], head["position"]), []).append(head)
    locations = []
    for (cls, position), heads in groups.items():
        mean = sum(h["attention"] for h in heads) / len(heads)
        label = "+".join(f"{h['layer']}.{h['head']}" for h in heads)
        pairs = tuple((h["layer"], h["head"]) for h in heads)
        locations.append(Location(f"{label}@{position} {attention_role(cls, mean)}", pairs, position))
    return locations


def ioi_locations(
    circuit: dict, model: HookedTransformer, prompts: "Prompts", min_attention: float = 0.2
) -> list[Location]:
    """Locations of an IOI circuit: from its head classes and positions when it has them (published format),
    else from its heads grouped by the attention they were measured to have (saelab ground truth format) and
    named by heads, position and that measurement (`locations_from_classified`); what ablating each does is
    measured by the evaluation itself (its clean and mean-ablated logit differences)."""
    if "heads" in circuit:
        return locations_from_circuit(circuit)
    locations = locations_from_classified(
        classify_heads(model, prompts, circuit_heads(circuit), min_attention)
    )
    if not locations:
        raise ValueError(
            f"no circuit head attends (≥ {min_attention}) along any of {sorted(ATTENTION_CLASSES)}; "
            "give locations explicitly"
        )
    return locations


def synthetic_prompts(
    n: int, seed: int, names: Sequence[str], name_ids: NameIds, vocab_size: int, bos_id: int
) -> Prompts:
    """IOI-shaped prompts for plumbing checks on models whose tokenizer lacks IOI's names: random filler
    tokens, BOS, then S1/IO at positions 2/4 (ABB) or 4/2 (BAB), S2 at 7 and END at 9 (10 tokens each)."""
    if len(names) < 3:
        raise ValueError(f"synthetic prompts need at least 3 names, got {len(names)}")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (n, 10), generator=g)
    tokens[:, 0] = bos_id
    pairs = [torch.randperm(len(names), generator=g)[:2].tolist() for _ in range(n)]
    order = ["ABB" if bool(torch.rand(1, generator=g) < 0.5) else "BAB" for _ in range(n)]
    io_pos = torch.tensor([2 if o == "ABB" else 4 for o in order])
    s1_pos = 6 - io_pos
    io_ids = torch.tensor([name_ids[names[p[0]]] for p in pairs])
    s_ids = torch.tensor([name_ids[names[p[1]]] for p in pairs])
    rows = torch.arange(n)
    tokens[rows, io_pos], tokens[rows, s1_pos], tokens[:, 7] = io_ids, s_ids, s_ids
    positions = {"IO": io_pos, "S1": s1_pos, "S2": torch.full((n,), 7), "end": torch.full((n,), 9)}
    attributes = {"IO": [names[p[0]] for p in pairs], "S": [names[p[1]] for p in pairs], "pos": order}
    return Prompts(tokens, positions, io_ids, s_ids, attributes)
