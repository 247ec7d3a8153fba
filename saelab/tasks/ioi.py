"""Indirect object identification (Wang et al. 2022): "... [S] gave a [OBJECT] to" → " [IO]"."""

import random
import re

from jaxtyping import Bool, Float
from torch import Tensor

from saelab.tasks import metrics, words
from saelab.tasks.base import Prompt, PromptPair, TaskDataset, TaskVocabulary
from saelab.tasks.build import Piece, compose
from saelab.tasks.task import Task

# The 15 published BABA templates ([B] = subject S, [A] = indirect object IO), ending before the answer.
BABA_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to",
)
# Extra templates for training text only, so the bundled model learns the task beyond the eval wording.
TRAINING_TEMPLATES: tuple[str, ...] = (
    "Later, [B] and [A] met at the [PLACE], and [B] handed the [OBJECT] to",
    "Yesterday [B] and [A] walked to the [PLACE]. [B] threw the [OBJECT] to",
    "At the [PLACE], [B] and [A] found a [OBJECT]. [B] passed it to",
    "[B] and [A] were sitting in the [PLACE]. [B] showed the [OBJECT] to",
    "Once [B] and [A] arrived at the [PLACE], [B] sent a [OBJECT] to",
    "On Sunday, [B] and [A] cleaned the [PLACE]. [B] brought a [OBJECT] to",
    "Then, [B] and [A] talked for hours, and later [B] wrote a letter to",
    "When [B] and [A] left the [PLACE], [B] lent the [OBJECT] to",
)
# Held-out templates: no training generator uses them (evaluation only; Task.generate(split="heldout")).
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "Earlier, [B] and [A] drove to the [PLACE]. [B] offered a [OBJECT] to",
    "In the morning [B] and [A] stayed at the [PLACE], and [B] sold the [OBJECT] to",
    "Since [B] and [A] were both at the [PLACE], [B] mailed a [OBJECT] to",
    "After work, [B] and [A] went shopping near the [PLACE]. Then [B] gave the [OBJECT] to",
)

_PLACEHOLDER = re.compile(r"( ?\[(?:A|B|PLACE|OBJECT)\])")


def abba(template: str) -> str:
    """The ABBA version of a BABA template: the first [B] and [A] swap places."""
    return template.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)


def _pieces(template: str, first: str, io: str, s2: str, place: str, obj: str) -> list[Piece]:
    """Fill a template: `first` is the name at the first [B] (S1), `io` at [A], `s2` at the second [B]."""
    pieces: list[Piece] = []
    n_b = 0
    for part in _PLACEHOLDER.split(template):
        space = " " if part.startswith(" ") else ""
        key = part.strip()
        if key == "[A]":
            pieces.append((space + io, "IO"))
        elif key == "[B]":
            pieces.append((space + (first if n_b == 0 else s2), "S1" if n_b == 0 else "S2"))
            n_b += 1
        elif key in ("[PLACE]", "[OBJECT]"):
            pieces.append((space + (place if key == "[PLACE]" else obj), None))
        elif part:
            pieces.append((part, None))
    return pieces


def ioi_prompt(
    template_index: int,
    order: str,
    names: tuple[str, str, str],
    place: str,
    obj: str,
    templates: tuple[str, ...] = BABA_TEMPLATES,
) -> Prompt:
    """A prompt from `templates[template_index]` in `order` ("BAB" or "ABB") with names (S1, IO, S2)."""
    template = templates[template_index]
    template = template if order == "BAB" else abba(template)
    s1, io, s2 = names
    text, slots = compose(_pieces(template, s1, io, s2, place, obj))
    return Prompt(
        text=text,
        slots=slots,
        answer=" " + io,
        wrong=(" " + s1,),
        candidates=(" " + io, " " + s1),
        attributes={
            "IO": io,
            "S": s1,
            "S2": s2,
            "pos": order,
            "template": template_index,
            "place": place,
            "object": obj,
        },
    )


def _sample_pair(rng: random.Random, vocab: TaskVocabulary) -> PromptPair:
    templates = vocab.layouts
    template_index = rng.randrange(len(templates))
    order = rng.choice(("ABB", "BAB"))
    io, s, c1, c2, c3 = rng.sample(vocab.words["names"], 5)
    place, obj = rng.choice(vocab.words["places"]), rng.choice(vocab.words["objects"])
    clean = ioi_prompt(template_index, order, (s, io, s), place, obj, templates)
    # ABC: three fresh distinct names, so no name repeats and the indirect object is not inferable.
    corrupted = ioi_prompt(template_index, order, (c1, c2, c3), place, obj, templates)
    return PromptPair(clean, corrupted)


def sample_pairs(
    rng: random.Random, n: int, vocab: TaskVocabulary, tokenizer, corruption: str
) -> list[PromptPair]:
    return [_sample_pair(rng, vocab) for _ in range(n)]


def corpus(rng: random.Random, n: int, vocab: TaskVocabulary) -> list[str]:
    """Whole IOI sentences: half from the eval templates (both orders), half from training-only ones."""
    places = vocab.words["places"] + words.IOI_EXTRA_PLACES
    objects = vocab.words["objects"] + words.IOI_EXTRA_OBJECTS
    texts = []
    for _ in range(n):
        template = rng.choice(BABA_TEMPLATES if rng.random() < 0.5 else TRAINING_TEMPLATES)
        template = template if rng.random() < 0.5 else abba(template)
        io, s = rng.sample(vocab.words["names"], 2)
        text, _ = compose(_pieces(template, s, io, s, rng.choice(places), rng.choice(objects)))
        texts.append(f"{text} {io}.")
    return texts


def ioi_metric(logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset) -> Float[Tensor, " batch"]:
    """logit(IO) − logit(S) at "end"."""
    return metrics.logit_diff(
        metrics.logits_at(logits, data.positions["end"]), data.answer_ids, data.wrong_ids
    )


def ioi_accuracy(logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset) -> Bool[Tensor, " batch"]:
    """Whether logit(IO) > logit(S) at "end"."""
    return metrics.top1_among(
        metrics.logits_at(logits, data.positions["end"]), data.answer_ids, data.candidate_ids
    )


def _vocabulary(kind: str, split: str) -> TaskVocabulary:
    """Names are shared by every split: the bundled tokenizer has no other name as one token (a held-out name
    would need a new tokenizer); the held-out split has its own templates, places and objects."""
    names = words.IOI_NAMES
    held = split == "heldout"
    return TaskVocabulary(
        kind=kind,
        words={
            "names": names,
            "places": words.IOI_HELDOUT_PLACES if held else words.IOI_PLACES,
            "objects": words.IOI_HELDOUT_OBJECTS if held else words.IOI_OBJECTS,
        },
        single_tokens=tuple(" " + name for name in names),
        split=split,
        layouts=HELDOUT_TEMPLATES if held else BABA_TEMPLATES,
    )


def _vocabularies(split: str) -> dict[str, TaskVocabulary]:
    return {kind: _vocabulary(kind, split) for kind in ("canonical", "tiny")}


IOI = Task(
    name="ioi",
    vocabularies=_vocabularies("train"),
    splits={split: _vocabularies(split) for split in ("broad", "wide", "heldout")},
    corruptions=("ABC",),
    sample_pairs=sample_pairs,
    corpus=corpus,
    metric_fn=ioi_metric,
    accuracy_fn=ioi_accuracy,
)
