"""Value types shared by the circuit tasks: prompt specs, vocabularies and the tokenised dataset."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from jaxtyping import Int
from torch import Tensor

VocabularyKind = Literal["canonical", "tiny"]
VOCABULARY_KINDS: tuple[str, ...] = ("canonical", "tiny")
TRAINING_SPLITS: tuple[str, ...] = ("train", "broad", "wide")
"""Splits a training generator may draw from: "train" (what the bundled models were first trained and stopped
on), "broad" and "wide" (wider training generators; the same as "train" except where a task widens them)."""
EVALUATION_SPLITS: tuple[str, ...] = ("dev", "heldout")
"""Evaluation-only splits (`Task.corpus_texts` refuses them): "dev" (unseen words and layouts to watch and
choose when to stop on, where a task has them) and "heldout" (layouts and words no training generator ever
draws, never used while training)."""
SPLITS: tuple[str, ...] = TRAINING_SPLITS + EVALUATION_SPLITS

Span = tuple[int, int]


@dataclass(frozen=True)
class TaskVocabulary:
    """The word lists a task draws from, for one tokenizer family."""

    kind: str
    """"canonical" (the published lists, GPT-2 tokenisation) or "tiny" (the bundled tokenizer)."""
    words: Mapping[str, tuple[str, ...]]
    """Named word lists, e.g. {"names": (...), "places": (...), "objects": (...)}; words carry no spaces."""
    single_tokens: tuple[str, ...]
    """Strings exactly as they appear in prompts (with their leading space where they follow one) that a
    tokenizer must keep as single tokens for the task's prompts to be valid."""
    split: str = "train"
    """Which of `SPLITS` these lists belong to."""
    layouts: tuple[Any, ...] = ()
    """The prompt layouts `Task.generate` draws from, task-specific (IOI: template strings; greater-than:
    (text before " XX", text between "YY" and the final " XX"); docstring: `DocstringSetting`s)."""

    def __post_init__(self) -> None:
        if self.kind not in VOCABULARY_KINDS:
            raise ValueError(f"vocabulary kind {self.kind!r} is not one of {VOCABULARY_KINDS}")
        if self.split not in SPLITS:
            raise ValueError(f"vocabulary split {self.split!r} is not one of {SPLITS}")
        for key, values in self.words.items():
            if len(set(values)) != len(values):
                raise ValueError(f"vocabulary list {key!r} has duplicate words")


@dataclass(frozen=True)
class Prompt:
    """One prompt before tokenisation: its text and where its named single-token slots are."""

    text: str
    """The prompt, ending just before the answer."""
    slots: Mapping[str, Span]
    """Slot name → character span [start, end) of the slot's token text (leading space included)."""
    answer: str
    """The correct next token's text (e.g. " Mary", "58", " size")."""
    wrong: tuple[str, ...]
    """Texts of the wrong answers the metric compares against (may be empty)."""
    candidates: tuple[str, ...]
    """Texts of the answer tokens the task's metric and accuracy range over."""
    attributes: Mapping[str, Any]
    """JSON-able facts about the prompt (names, template index, year, ...)."""


class PromptPair(NamedTuple):
    """A clean prompt and its corruption; both have the same slots and the same token length."""

    clean: Prompt
    corrupted: Prompt


@dataclass(frozen=True)
class TaskDataset:
    """A batch of tokenised clean/corrupted prompt pairs with answers and named positions.

    Token tensors start with BOS and are right-padded (pad id, or BOS if the tokenizer has none); a clean
    row and its corrupted row have the same length and the same positions.
    """

    task: str
    """The task's registry name."""
    corruption: str
    """The name of the corruption that made `corrupted_prompts`."""
    clean_prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    answer_ids: Int[Tensor, " batch"]
    """The correct next token at "end"."""
    wrong_ids: Int[Tensor, "batch n_wrong"]
    """IOI: [S]; docstring: the other signature args; greater-than: none (n_wrong = 0). Rows shorter than
    the longest (prompts of several layouts) repeat their last id, which changes no max over a row."""
    candidate_ids: Int[Tensor, "batch n_candidates"]
    """The tokens a metric ranges over: IOI [IO, S]; greater-than "00".."99" in order; docstring the
    signature args in order."""
    positions: dict[str, Int[Tensor, " batch"]]
    """Named token positions (BOS counted): always "end", the last prompt token, where the answer is due;
    the slots every prompt of the batch has (prompts of several layouts may have others)."""
    attributes: dict[str, list]
    """Per-prompt attributes of the clean prompts (IOI: "IO", "S", "pos", "template"; greater-than "YY")."""
    pairs: tuple[PromptPair, ...] = field(repr=False)
    """The specs the tensors were built from (for serialisation and re-tokenisation)."""

    def __len__(self) -> int:
        return len(self.clean_prompts)


class PosNeg(NamedTuple):
    """O'Neill & Bui's prompt sets: the answer is inferable (positive) or not (negative)."""

    positive: TaskDataset
    negative: TaskDataset
