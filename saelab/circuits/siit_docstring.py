"""The high-level causal model of the docstring task that saelab-docstring-siit implements (SIIT).

Shape of Heimersheim & Janiak's circuit (layer-0 heads that copy a token's identity at its own position, a
previous-argument head at the signature, a head that brings the last documented argument to the final
`:param`, argument movers that match the two), as stages in three layers. The five-stage designs align
all five (`siit_task("docstring")`, MOVER's no-match output the method's name, and the bundled
saelab-docstring-siit's `siit_task("docstring-self-fallback")`, that output the signature's "self"); the first
training stage used the three-stage design (`siit_task("docstring-three-stage")`), which aligns PREV, LAST and
MOVER only:

  B_NAME at B_doc (the last documented argument's name): that name, copied by a layer-0 head at its own
         position (the value LAST moves);
  C_NAME at C_def (the answer's signature position): the answer's name, copied the same way (the value MOVER
         moves when it matches C_def);
  PREV   at C_def: the signature argument before it (B; "self" for the first);
  LAST   at end: B_NAME, brought to the final :param;
  MOVER  at end: the signature argument whose PREV equals LAST, read with PREV as key and LAST as query; its
         name is C_NAME when that argument is the answer's; when no argument matches (an intervention broke
         the match), the method's name (the self-fallback design: the signature's "self").

Every variable is a token, so every intervention has one output: patching PREV, LAST or B_NAME from a prompt
with other names makes the match fail (→ the method's name, or "self"); from a prompt that permutes the base's
own names it points MOVER at another argument; patching C_NAME or MOVER outputs the source's answer.
"""

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from string import ascii_uppercase
from typing import NamedTuple

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from saelab.circuits.siit import STRICT_GROUPS, AlignedNode, PairSet, SIITTask, Target
from saelab.tasks import words
from saelab.tasks.build import encode_prompts
from saelab.tasks.docstring import PUBLISHED, DocstringSetting, docstring_prompt


@dataclass(frozen=True)
class DocSplit:
    """The layouts and word lists a set of docstring prompts draws from."""

    layouts: tuple[DocstringSetting, ...]
    variables: tuple[str, ...]
    """Argument and method names (outputs: never held out, an unseen name's unembedding is never trained)."""
    descriptions: tuple[str, ...]
    """Words of the method and argument descriptions."""

    def __post_init__(self) -> None:
        if not self.layouts:
            raise ValueError("a docstring split needs at least one layout")
        most = max(1 + s.n_prefix + s.n_matching + s.n_suffix for s in self.layouts)
        if len(self.variables) < 2 * most:
            raise ValueError(f"{len(self.variables)} names cannot fill two disjoint prompts of {most} names")


def _layout(n_prefix: int, n_matching: int, n_suffix: int, desc_words: int, method_desc_words: int):
    return DocstringSetting(n_prefix, n_matching, n_suffix, desc_words, method_desc_words)


_SHAPES = [(p, m, s) for p in range(4) for m in (2, 3, 4) for s in range(3)]
HELD_OUT_SHAPES = ((1, 3, 2), (3, 2, 0), (0, 4, 1), (2, 4, 2), (3, 3, 1))
"""(prefix, matching, suffix) argument counts never used in training or in choosing when to stop."""
HELD_OUT_DESC_WORDS = 4
"""Words per argument description never used in training (training uses 1-3)."""
_DESCRIPTIONS = tuple(w for w in words.DOCSTRING_NOUNS if w not in words.DOCSTRING_VARIABLES)
HELD_OUT_DESCRIPTIONS = _DESCRIPTIONS[::5]
"""Description words never used in training (every fifth noun that is not also an argument name)."""
_TRAIN_DESCRIPTIONS = tuple(w for w in words.DOCSTRING_NOUNS if w not in HELD_OUT_DESCRIPTIONS)


def _layouts(shapes, desc_words: Sequence[int], method_words: Sequence[int]) -> tuple[DocstringSetting, ...]:
    return tuple(_layout(*shape, d, w) for shape in shapes for d in desc_words for w in method_words)


TRAIN_SPLIT = DocSplit(
    _layouts([s for s in _SHAPES if s not in HELD_OUT_SHAPES], (1, 2, 3), (2, 3, 4)),
    words.DOCSTRING_VARIABLES,
    _TRAIN_DESCRIPTIONS,
)
"""Training and early-stopping prompts (the published layout is among them)."""
HELD_OUT_LAYOUT_SPLIT = DocSplit(
    _layouts(HELD_OUT_SHAPES, (1, 2, 3), (2, 3, 4)) + _layouts(_SHAPES[:12], (HELD_OUT_DESC_WORDS,), (3,)),
    words.DOCSTRING_VARIABLES,
    _TRAIN_DESCRIPTIONS,
)
HELD_OUT_WORD_SPLIT = DocSplit(TRAIN_SPLIT.layouts, words.DOCSTRING_VARIABLES, HELD_OUT_DESCRIPTIONS)
assert PUBLISHED in TRAIN_SPLIT.layouts


class DocSpec(NamedTuple):
    """One clean docstring prompt: layout, method name and description, signature args, their descriptions."""

    layout: DocstringSetting
    method: str
    method_desc: tuple[str, ...]
    def_args: tuple[str, ...]
    arg_descs: tuple[tuple[str, ...], ...]
    doc_args: tuple[str, ...] | None = None
    """The documented arguments (None: the signature's matching ones but the last, as in a clean prompt)."""

    def prompt(self):
        """The prompt, with a slot at every signature argument ("def0", "def1", ...)."""
        s = self.layout
        doc = self.doc_args or self.def_args[s.n_prefix : s.n_prefix + s.n_matching - 1]
        prompt = docstring_prompt(self.method, self.method_desc, self.def_args, doc, self.arg_descs, s)
        last_doc = prompt.slots[f"{ascii_uppercase[s.n_matching - 2]}_doc"]
        start = len(f"\ndef {self.method}(")
        slots = {"last_doc": last_doc, "self": (start, start + len("self"))}
        start += len("self")
        for i, arg in enumerate(self.def_args):
            start += 1  # the comma
            slots[f"def{i}"] = (start, start + len(arg) + 1)
            start += len(arg) + 1
        return replace(prompt, slots=slots)


def _spec(rng: random.Random, split: DocSplit, layout: DocstringSetting, names: Sequence[str]) -> DocSpec:
    method, *args = names
    return DocSpec(
        layout, method, tuple(rng.sample(split.descriptions, layout.method_desc_words)), tuple(args),
        tuple(tuple(rng.sample(split.descriptions, layout.desc_words)) for _ in range(layout.n_matching - 1)),
    )


def sample_spec(rng: random.Random, split: DocSplit, layout: DocstringSetting,
                avoid: Sequence[str] = ()) -> DocSpec:
    """A clean prompt of `layout` whose names avoid `avoid`."""
    pool = [v for v in split.variables if v not in set(avoid)]
    return _spec(rng, split, layout,
                 rng.sample(pool, 1 + layout.n_prefix + layout.n_matching + layout.n_suffix))


def permuted_spec(rng: random.Random, split: DocSplit, base: DocSpec) -> DocSpec:
    """A clean prompt of the base's layout whose signature is the base's own arguments in another order."""
    args = list(base.def_args)
    while tuple(args) == base.def_args:
        rng.shuffle(args)
    method = rng.choice([v for v in split.variables if v not in set(base.def_args) | {base.method}])
    return _spec(rng, split, base.layout, [method, *args])


def corrupted_spec(rng: random.Random, split: DocSplit, base: DocSpec) -> DocSpec:
    """The base's random_random corruption (`saelab.tasks.docstring.CORRUPTIONS`), the source of the
    construction check's resample ablation: the same layout, method, descriptions, prefix and suffix
    arguments; new matching signature arguments and new documented ones, all distinct and none of the base's
    names."""
    s = base.layout
    pool = [v for v in split.variables if v not in {base.method, *base.def_args}]
    mid = rng.sample(pool, 2 * s.n_matching - 1)
    prefix, suffix = base.def_args[: s.n_prefix], base.def_args[s.n_prefix + s.n_matching :]
    return base._replace(def_args=(*prefix, *mid[: s.n_matching], *suffix),
                         doc_args=tuple(mid[s.n_matching :]))


def near_miss_spec(rng: random.Random, split: DocSplit, group: str, base: DocSpec, source: DocSpec,
                   nearest: Mapping[str, Sequence[str]]) -> DocSpec:
    """For B_NAME, LAST and PREV rows whose source uses other names (a no-match intervention): the source with
    its last documented argument B (what B_NAME, LAST and PREV carry from it) renamed to the untaken name
    nearest (`nearest`: the model's input-embedding cosine) to a name a false match would need it to
    resemble: for LAST and B_NAME, the PREV of one of the base's arguments (an argument followed by another;
    MOVER's keys); for PREV, the base's B (LAST, the query it is compared with). The intervention still
    matches nothing but is the kind the mover mistakes for a match (on run 4's misses MOVER attended to an
    argument whose PREV had embedding cosine 0.56 with the source's name, 0.08 on average); other rows
    unchanged."""
    if group not in ("B_NAME", "LAST", "PREV") or set(source.def_args) & set(base.def_args):
        return source
    s = base.layout
    b = s.n_prefix + s.n_matching - 2
    taken = {base.method, *base.def_args, source.method, *source.def_args}
    target = base.def_args[b] if group == "PREV" else rng.choice(base.def_args[:-1])
    name = next(n for n in nearest[target] if n not in taken)
    args = list(source.def_args)
    args[b] = name
    return source._replace(def_args=tuple(args))


class DocRows(NamedTuple):
    """Tokenised clean docstring prompts with the facts the high-level model reads."""

    tokens: Int[Tensor, "n pos"]
    """BOS first, right-padded with BOS."""
    end: Int[Tensor, " n"]
    answer_def: Int[Tensor, " n"]
    """Position of the answer's signature argument (C_def)."""
    answer_index: Int[Tensor, " n"]
    """Its index among the signature arguments."""
    def_tokens: Int[Tensor, "n args"]
    """Token ids of the signature arguments in order (-1 past the last)."""
    prev_tokens: Int[Tensor, "n args"]
    """The token before each signature argument's comma: the previous argument ("self" for the first; -1
    past)."""
    method: Int[Tensor, " n"]
    """Token id of the method's name (MOVER's output when nothing matches, in the "method" fallback
    design)."""
    self_pos: Int[Tensor, " n"]
    """Position of the signature's "self" (MOVER's key and output when nothing matches, in the "self"
    fallback design, the shipped one)."""
    last_doc_pos: Int[Tensor, " n"]
    """Position of the last documented argument's name (B_doc)."""
    def_pos: Int[Tensor, "n args"]
    """Positions of the signature arguments in order (-1 past the last)."""

    def position(self, name: str) -> Int[Tensor, " n"]:
        if name == "end":
            return self.end
        if name == "C_def":
            return self.answer_def
        if name == "B_doc":
            return self.last_doc_pos
        raise ValueError(f"unknown docstring position {name!r}; expected 'C_def', 'B_doc' or 'end'")

    @property
    def last_doc(self) -> Int[Tensor, " n"]:
        """The last documented argument (the one before the answer in the signature)."""
        return self.def_tokens.gather(1, (self.answer_index - 1)[:, None])[:, 0]

    @property
    def answer(self) -> Int[Tensor, " n"]:
        """The answer's name (the signature argument at C_def)."""
        return self.def_tokens.gather(1, self.answer_index[:, None])[:, 0]

    @property
    def prev_at_answer(self) -> Int[Tensor, " n"]:
        """PREV's value: the signature argument before the answer's."""
        return self.prev_tokens.gather(1, self.answer_index[:, None])[:, 0]


def encode_specs(tokenizer, specs: Sequence[DocSpec]) -> DocRows:
    """Tokenise specs with saelab's docstring prompt builder and record the positions the model reads."""
    encoded = encode_prompts(tokenizer, [s.prompt() for s in specs])
    length = max(len(e.ids) for e in encoded)
    width = max(len(s.def_args) for s in specs)
    pad = tokenizer.bos_token_id
    tokens = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in encoded], dtype=torch.long)
    where = torch.full((len(specs), width), -1, dtype=torch.long)
    for row, (e, s) in enumerate(zip(encoded, specs, strict=True)):
        where[row, : len(s.def_args)] = torch.tensor([e.positions[f"def{i}"] for i in range(len(s.def_args))])
    rows = torch.arange(len(specs))[:, None]
    valid = where >= 0
    def_tokens = torch.where(valid, tokens[rows, where.clamp(min=2)], -1)
    prev_tokens = torch.where(valid, tokens[rows, (where - 2).clamp(min=0)], -1)
    answer_index = torch.tensor([s.layout.answer_index for s in specs])
    return DocRows(
        tokens=tokens,
        end=torch.tensor([e.positions["end"] for e in encoded]),
        answer_def=where.gather(1, answer_index[:, None])[:, 0],
        answer_index=answer_index,
        def_tokens=def_tokens,
        prev_tokens=prev_tokens,
        method=tokens[:, 3],
        self_pos=torch.tensor([e.positions["self"] for e in encoded]),
        last_doc_pos=torch.tensor([e.positions["last_doc"] for e in encoded]),
        def_pos=where,
    )


FALLBACKS = ("method", "self")
"""MOVER's output when no argument matches: the method's name (runs 1-6; its key is left to the model, -1), or
(ours, `siit_task("docstring-self-fallback")`, the shipped model's since 2026-12-01) the signature's "self", a
token that is the same on every prompt, read from its own position — a fallback key whose score the query need
not move."""
SHIPPED_FALLBACK = "self"
"""The fallback of the bundled saelab-docstring-siit: the five-stage entry with it is named after the
model."""
FALLBACK_TEXT = {"method": "the method's name", "self": "the signature's 'self'"}
"""Each fallback's output in words (MOVER's meaning in the alignment)."""


class Match(NamedTuple):
    """MOVER's result: what it outputs and the key position it reads it from (-1: no argument matched and
    the design leaves the key to the model)."""

    ids: Int[Tensor, " n"]
    key: Int[Tensor, " n"]


def mover_match(
    rows: DocRows, prev_at_answer: Int[Tensor, " n"], last: Int[Tensor, " n"], answer: Int[Tensor, " n"],
    fallback: str = "method",
) -> Match:
    """The argument whose PREV (PREV at C_def set to `prev_at_answer`) equals `last`, named as C_NAME says
    (`answer`) when it is the answer's, and its signature position; if none matches, the method and -1
    (`fallback` "method") or "self" and its position ("self")."""
    rows_index = torch.arange(len(last))
    prev = rows.prev_tokens.clone()
    prev[rows_index, rows.answer_index] = prev_at_answer
    names = rows.def_tokens.clone()
    names[rows_index, rows.answer_index] = answer
    match = (prev == last[:, None]) & (rows.def_tokens >= 0)
    first = match.int().argmax(dim=1)[:, None]
    found = match.any(dim=1)
    if fallback == "method":
        none_id, none_key = rows.method, torch.full_like(rows.method, -1)
    elif fallback == "self":
        none_key = rows.self_pos
        none_id = rows.tokens.gather(1, none_key[:, None])[:, 0]
    else:
        raise ValueError(f"unknown MOVER fallback {fallback!r}; expected one of {FALLBACKS}")
    return Match(torch.where(found, names.gather(1, first)[:, 0], none_id),
                 torch.where(found, rows.def_pos.gather(1, first)[:, 0], none_key))


def mover_output(
    rows: DocRows, prev_at_answer: Int[Tensor, " n"], last: Int[Tensor, " n"], answer: Int[Tensor, " n"],
    fallback: str = "method",
) -> Int[Tensor, " n"]:
    """`mover_match`'s output token."""
    return mover_match(rows, prev_at_answer, last, answer, fallback).ids


VARIABLES = ("B_NAME", "C_NAME", "PREV", "LAST", "MOVER")


def _intervened(base: DocRows, source: DocRows, variable: str | None):
    """MOVER's inputs (rows, PREV, LAST, C_NAME) on `base` with `variable` set to its value on `source`."""
    prev, last, answer = base.prev_at_answer, base.last_doc, base.answer
    if variable == "PREV":
        prev = source.prev_at_answer
    elif variable in ("LAST", "B_NAME"):
        last = source.last_doc
    elif variable == "C_NAME":
        answer = source.answer
    elif variable == "MOVER":
        base, prev, last, answer = source, source.prev_at_answer, source.last_doc, source.answer
    elif variable is not None:
        raise ValueError(f"unknown high-level variable {variable!r}; expected one of {VARIABLES}")
    return base, prev, last, answer


def high_level_output(
    base: DocRows, source: DocRows, variable: str | None, fallback: str = "method"
) -> Target:
    """The high-level model's output on `base` with `variable` set to its value on `source` (None: no
    change). LAST is B_NAME moved, so setting either sets LAST."""
    ids = mover_output(*_intervened(base, source, variable), fallback=fallback)
    return Target(ids[:, None].expand(-1, 2), torch.full((len(ids), 2), 0.5))


def intervened_attention_targets(
    base: DocRows, source: DocRows, variable: str, fallback: str = "method"
) -> dict[str, Bool[Tensor, "n pos"]]:
    """The key positions MOVER may attend to on `base` with an upstream `variable` set from `source`: the
    matched argument's signature position; when nothing matches, any position up to the end but the signature
    arguments (it moves none of them; where it reads the method's name from is left to the model, whose run-4
    MOVER read it from the signature's commas, "(" and "self"). The no-match mask also allows BOS and the
    docstring, documented names included, so it penalises attention to the signature's arguments only (what
    run 6 trained with); with the "self" fallback, "self"'s position; none when MOVER itself is set."""
    if variable == "MOVER":
        return {}
    key = mover_match(*_intervened(base, source, variable), fallback=fallback).key
    positions = torch.arange(base.tokens.shape[1])
    matched = positions[None, :] == key[:, None]
    arguments = (positions[None, None, :] == base.def_pos[:, :, None]).any(dim=1)
    fallback = (positions[None, :] <= base.end[:, None]) & ~arguments
    return {"MOVER": torch.where((key >= 0)[:, None], matched, fallback)}


def attention_targets(rows: DocRows) -> dict[str, Int[Tensor, " n"]]:
    """Where each aligned head attends on a clean prompt (from its named position): B_NAME and C_NAME → their
    own position, PREV → the previous argument, LAST → the last documented argument, MOVER → the answer's
    signature position."""
    return {"B_NAME": rows.last_doc_pos, "C_NAME": rows.answer_def, "PREV": rows.answer_def - 2,
            "LAST": rows.last_doc_pos, "MOVER": rows.answer_def}


def pair_specs(
    rng: random.Random, split: DocSplit, group: str, permuted_share: float
) -> tuple[DocSpec, DocSpec]:
    """A base prompt and a same-layout source for one training row of `group` ("task", a variable,
    "strict-*").

    PREV, LAST, B_NAME and C_NAME sources permute the base's own names with `permuted_share` (so the match
    moves to another argument, or C_NAME names another argument), else use other names (the match fails);
    the trainer's strict rows (`STRICT_GROUPS`) take half their sources from the base's
    random_random corruption (what the construction check's resample ablation patches from); every other
    source uses other names (so `sample_pairs`'s "strict" evaluation pairs are as before)."""
    base = sample_spec(rng, split, rng.choice(split.layouts))
    if group in _PERMUTED_GROUPS and rng.random() < permuted_share:
        return base, permuted_spec(rng, split, base)
    if group in STRICT_GROUPS and rng.random() < 0.5:
        return base, corrupted_spec(rng, split, base)
    return base, sample_spec(rng, split, base.layout, avoid=(base.method, *base.def_args))


_PERMUTED_GROUPS = ("PREV", "LAST", "B_NAME", "C_NAME")


def sample_pairs(tokenizer, split: DocSplit, n: int, seed: int, purpose: str) -> PairSet:
    """n base prompts with same-layout sources: for "iit", half permute the base's names; for "strict" and
    "task", all use other names."""
    rng = random.Random(seed)
    share = 0.5 if purpose == "iit" else 0.0
    specs = [pair_specs(rng, split, "PREV" if purpose == "iit" else purpose, share) for _ in range(n)]
    return PairSet(encode_specs(tokenizer, [b for b, _ in specs]),
                   encode_specs(tokenizer, [s for _, s in specs]))


THREE_STAGE_ALIGNMENT = (
    AlignedNode("PREV", 0, 1, "C_def",
                "the signature argument before the answer's (B): a previous-argument head"),
    AlignedNode("LAST", 1, 2, "end", "the last documented argument (B), brought to the final :param"),
    AlignedNode("MOVER", 2, 0, "end",
                f"the signature argument whose PREV equals LAST (the answer C); {FALLBACK_TEXT['method']} "
                "when none does"),
)
"""The three-stage design (`siit_task("docstring-three-stage")`, the bundled model's first training stage):
B_NAME and C_NAME are not aligned, so head 0.0 is non-aligned everywhere."""
THREE_STAGE_EDGES = (
    "input->0.1.q", "input->0.1.k", "input->0.1.v", "input->1.2.q", "input->1.2.k", "input->1.2.v",
    "0.1->2.0.k", "1.2->2.0.q", "input->2.0.v", "2.0->logits",
)
"""The edges the three-stage model's data flow implies: PREV is MOVER's key, LAST its query."""
ALIGNMENT = (
    AlignedNode("B_NAME", 0, 0, "B_doc",
                "the last documented argument's name (B), copied at its own position"),
    AlignedNode("C_NAME", 0, 0, "C_def", "the answer's name (C), copied at its own signature position"),
    THREE_STAGE_ALIGNMENT[0],
    AlignedNode("LAST", 1, 2, "end", "B_NAME, brought to the final :param"),
    THREE_STAGE_ALIGNMENT[2],
)
"""The five-stage alignment (`siit_task("docstring")`; the shipped "docstring-self-fallback" entry states
MOVER's other fallback in its meaning): head 0.0's name copies are stages."""
CIRCUIT_EDGES = (
    "input->0.0.q", "input->0.0.k", "input->0.0.v", "input->0.1.q", "input->0.1.k", "input->0.1.v",
    "input->1.2.q", "input->1.2.k", "0.0->1.2.v", "0.1->2.0.k", "1.2->2.0.q", "0.0->2.0.v", "input->2.0.v",
    "2.0->logits",
)
"""The edges the five-stage model's data flow implies: B_NAME is LAST's value, PREV MOVER's key, LAST its
query, C_NAME its value at C_def (the embedding at the other arguments, where a permuted intervention points
it)."""


def candidates(rows: DocRows) -> Int[Tensor, "n args"]:
    """The signature arguments (-1 past the last): the metric is logit(answer) − max logit of the others."""
    return rows.def_tokens


def train_split(trained_on: frozenset[str] = frozenset()) -> DocSplit:
    """The training split, plus the held-out splits named in `trained_on`."""
    layouts, descriptions = TRAIN_SPLIT.layouts, TRAIN_SPLIT.descriptions
    if "held_out_layouts" in trained_on:
        layouts = layouts + HELD_OUT_LAYOUT_SPLIT.layouts
    if "held_out_descriptions" in trained_on:
        descriptions = descriptions + HELD_OUT_WORD_SPLIT.descriptions
    return DocSplit(layouts, TRAIN_SPLIT.variables, descriptions)


def task_entry(three_stage: bool = False, fallback: str = "method") -> SIITTask:
    """The docstring entry: the five-stage design whose layer-0 name copies are stages, or (`three_stage`)
    the design of the bundled model's first training stage; `fallback` is MOVER's no-match output
    (`FALLBACKS`). Only the bundled model's design (five stages, `SHIPPED_FALLBACK`) is named
    saelab-docstring-siit; every other has its own default output name, so a run of it does not overwrite the
    bundled weights."""
    name_copy = not three_stage
    model = "saelab-docstring-siit" if name_copy else "saelab-docstring-siit-three-stage"
    if fallback != SHIPPED_FALLBACK:
        model = f"{model}-{fallback}-fallback" if name_copy else model
    output, attention = high_level_output, intervened_attention_targets
    alignment = ALIGNMENT if name_copy else THREE_STAGE_ALIGNMENT
    if fallback != "method":
        model = model if name_copy else f"{model}-{fallback}-fallback"
        output = partial(high_level_output, fallback=fallback)
        attention = partial(intervened_attention_targets, fallback=fallback)
        said = FALLBACK_TEXT["method"], FALLBACK_TEXT[fallback]
        alignment = tuple(replace(a, meaning=a.meaning.replace(*said)) for a in alignment)
    return SIITTask(
        task="docstring",
        model=model,
        alignment=alignment,
        circuit_edges=CIRCUIT_EDGES if name_copy else THREE_STAGE_EDGES,
        high_level_output=output,
        encode=encode_specs,
        pair_specs=pair_specs,
        sample_pairs=sample_pairs,
        train_split=train_split,
        held_out_splits={"held_out_layouts": HELD_OUT_LAYOUT_SPLIT,
                         "held_out_descriptions": HELD_OUT_WORD_SPLIT},
        summary=("B_NAME at B_doc -> LAST at END (query); PREV at C_def (key); C_NAME at C_def (value) "
                 "-> MOVER at END") if name_copy else
                "PREV at C_def (key) and LAST at END (query) -> MOVER at END",
        n_ctx=96,
        positional_embedding_type="rotary",
        attention_targets=attention_targets,
        # the three-stage entry keeps run 2's options
        candidates=candidates if name_copy else None,
        intervened_attention_targets=attention if name_copy else None,
        near_miss=near_miss_spec if name_copy else None,
        source_share=0.5,
    )
