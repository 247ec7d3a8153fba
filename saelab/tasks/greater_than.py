"""Greater-than (Hanna, Liu & Variengien 2023): "...from the year 1732 to the year 17" → a YY above 32."""

import random

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.tasks import metrics, words
from saelab.tasks.base import Prompt, PromptPair, TaskDataset, TaskVocabulary
from saelab.tasks.build import choose_layout, compose, tokenizer_name
from saelab.tasks.task import Task

CENTURIES: tuple[int, ...] = tuple(range(11, 18))
"""Years 1100–1799."""
START_YY: tuple[int, ...] = tuple(range(2, 99))
"""Start years end in 02..98, so both a later and an earlier-or-equal end year exist."""
TWO_DIGITS: tuple[str, ...] = tuple(f"{k:02d}" for k in range(100))
CORRUPT_YY = 1

# Training-text variants; the first is the evaluation template.
CORPUS_TEMPLATES: tuple[str, ...] = (
    "The {noun} lasted from the year {start} to the year {end}.",
    "The {noun} lasted from the year {start} to {end}.",
    "The {noun} lasted from {start} to {end}.",
    "The {noun} started in the year {start} and ended in the year {end}.",
    "The {noun} began in {start} and ended in {end}.",
    "The {noun} ran from the year {start} until the year {end}.",
)

GreaterThanLayout = tuple[str, str]
"""(text before " XX" with a {noun} field, text between "YY" and the final " XX")."""
TRAIN_LAYOUTS: tuple[GreaterThanLayout, ...] = (("The {noun} lasted from the year", " to the year"),)
"""Hanna et al.'s evaluation prompt (the first of CORPUS_TEMPLATES)."""
HELDOUT_LAYOUTS: tuple[GreaterThanLayout, ...] = (
    ("The {noun} went on from the year", " through the year"),
    ("The {noun} took place between the year", " and the year"),
)
"""Wordings no training text uses (evaluation only; Task.generate(split="heldout"))."""


def valid_years(tokenizer) -> list[tuple[int, int]]:
    """(century, YY) pairs whose " XXYY" tokenises as [" XX", "YY"], as does the corrupted " XX01"."""
    centuries = [xx for xx in CENTURIES if _splits(tokenizer, xx, CORRUPT_YY)]
    keep = [(xx, yy) for xx in centuries for yy in START_YY if _splits(tokenizer, xx, yy)]
    if not keep:
        raise ValueError(
            f"no year 1102–1798 tokenises as [' XX', 'YY'] under tokenizer {tokenizer_name(tokenizer)!r}"
        )
    return keep


def _splits(tokenizer, xx: int, yy: int) -> bool:
    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    return encode(f" {xx}{yy:02d}") == encode(f" {xx}") + encode(f"{yy:02d}")


def greater_than_prompt(
    noun: str, xx: int, yy: int, answer_yy: int, layout: GreaterThanLayout = TRAIN_LAYOUTS[0]
) -> Prompt:
    head, middle = layout
    text, slots = compose(
        [
            (head.format(noun=noun), None),
            (f" {xx}", "XX"),
            (f"{yy:02d}", "YY"),
            (f"{middle} {xx}", None),
        ]
    )
    return Prompt(
        text=text,
        slots=slots,
        answer=f"{answer_yy:02d}",
        wrong=(),
        candidates=TWO_DIGITS,
        attributes={"YY": yy, "XX": xx, "noun": noun, "answer_YY": answer_yy},
    )


def sample_pairs(
    rng: random.Random, n: int, vocab: TaskVocabulary, tokenizer, corruption: str
) -> list[PromptPair]:
    years = valid_years(tokenizer)
    pairs = []
    for _ in range(n):
        noun = rng.choice(vocab.words["nouns"])
        xx, yy = rng.choice(years)
        answer_yy = rng.randint(yy + 1, 99)
        layout = choose_layout(rng, vocab.layouts)
        pairs.append(
            PromptPair(
                greater_than_prompt(noun, xx, yy, answer_yy, layout),
                greater_than_prompt(noun, xx, CORRUPT_YY, answer_yy, layout),
            )
        )
    return pairs


def corpus(rng: random.Random, n: int, vocab: TaskVocabulary) -> list[str]:
    """Whole sentences with a later end year; half use the evaluation template."""
    nouns = vocab.words["nouns"] + words.GREATER_THAN_EXTRA_NOUNS
    texts = []
    for _ in range(n):
        template = CORPUS_TEMPLATES[0] if rng.random() < 0.5 else rng.choice(CORPUS_TEMPLATES[1:])
        xx, yy = rng.choice(CENTURIES), rng.choice(START_YY)
        end = f"{xx}{rng.randint(yy + 1, 99):02d}"
        texts.append(template.format(noun=rng.choice(nouns), start=f"{xx}{yy:02d}", end=end))
    return texts


def _start_yy(data: TaskDataset) -> torch.Tensor:
    return torch.tensor(data.attributes["YY"], dtype=torch.long)


def greater_than_metric(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Float[Tensor, " batch"]:
    """Σ_{YY' > YY} p(YY') − Σ_{YY' ≤ YY} p(YY') at "end", over the 100 two-digit tokens."""
    end_logits = metrics.logits_at(logits, data.positions["end"])
    return metrics.year_prob_diff(end_logits, data.candidate_ids, _start_yy(data))


def greater_than_accuracy(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Bool[Tensor, " batch"]:
    """Whether the most likely two-digit token at "end" is later than YY."""
    end_logits = metrics.logits_at(logits, data.positions["end"])
    return metrics.year_argmax_later(end_logits, data.candidate_ids, _start_yy(data))


def _vocabulary(kind: str, split: str) -> TaskVocabulary:
    """Centuries and two-digit years are shared by every split (they are the task); nouns and wordings are
    not."""
    held = split == "heldout"
    nouns = words.GREATER_THAN_HELDOUT_NOUNS if held else words.GREATER_THAN_NOUNS
    return TaskVocabulary(
        kind=kind,
        words={"nouns": nouns, "centuries": tuple(str(c) for c in CENTURIES)},
        single_tokens=tuple(f" {c}" for c in CENTURIES) + TWO_DIGITS,
        split=split,
        layouts=HELDOUT_LAYOUTS if held else TRAIN_LAYOUTS,
    )


def _vocabularies(split: str) -> dict[str, TaskVocabulary]:
    return {kind: _vocabulary(kind, split) for kind in ("canonical", "tiny")}


GREATER_THAN = Task(
    name="greater_than",
    vocabularies=_vocabularies("train"),
    splits={split: _vocabularies(split) for split in ("broad", "wide", "heldout")},
    corruptions=("01",),
    sample_pairs=sample_pairs,
    corpus=corpus,
    metric_fn=greater_than_metric,
    accuracy_fn=greater_than_accuracy,
)
