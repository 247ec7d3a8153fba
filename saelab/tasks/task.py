"""`Task`: one circuit task assembled from its sampling, corpus and metric functions."""

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from jaxtyping import Bool, Float
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from saelab.tasks.base import (
    EVALUATION_SPLITS,
    SPLITS,
    TRAINING_SPLITS,
    VOCABULARY_KINDS,
    PosNeg,
    PromptPair,
    TaskDataset,
    TaskVocabulary,
)
from saelab.tasks.build import build_dataset, require_single_tokens

SamplePairs = Callable[
    [random.Random, int, TaskVocabulary, PreTrainedTokenizerBase, str], Sequence[PromptPair]
]
"""(rng, n, vocabulary, tokenizer, corruption) → n prompt pairs; the tokenizer is for filtering only."""
CorpusTexts = Callable[[random.Random, int, TaskVocabulary], list[str]]
"""(rng, n, vocabulary) → n complete texts (prompt + answer)."""
Score = Callable[[Float[Tensor, "batch pos d_vocab"], TaskDataset], Tensor]


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    return seed


def check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return n


@dataclass(frozen=True)
class Task:
    """A circuit task: prompt generation for evaluation, training texts and the task metric."""

    name: str
    """Registry name ("ioi", "greater_than", "docstring")."""
    vocabularies: Mapping[str, TaskVocabulary]
    """Word lists by kind: "canonical" (published, GPT-2) and "tiny" (bundled tokenizer)."""
    corruptions: tuple[str, ...]
    """Corruption names `generate` accepts; the first is the default and makes O'Neill & Bui's negatives."""
    sample_pairs: SamplePairs
    metric_fn: Score
    """(logits, data) → the per-prompt task metric at "end"."""
    accuracy_fn: Score
    """(logits, data) → per-prompt bool: the model gets the prompt right."""
    corpus: CorpusTexts | None = None
    """Training texts for the bundled language model; None for tasks no language model is trained on
    (the tracr programs, whose models are compiled)."""
    splits: Mapping[str, Mapping[str, TaskVocabulary]] = field(default_factory=dict)
    """The other splits' word lists and layouts: split ("broad", "wide", "dev", "heldout") → kind →
    vocabulary; `vocabularies` is the "train" split."""

    def __post_init__(self) -> None:
        for split, vocabularies in {"train": self.vocabularies, **self.splits}.items():
            if split not in SPLITS:
                raise ValueError(f"task {self.name!r}: split {split!r} is not one of {SPLITS}")
            if set(vocabularies) != set(VOCABULARY_KINDS):
                raise ValueError(
                    f"task {self.name!r} needs {split} vocabularies {VOCABULARY_KINDS}, "
                    f"got {list(vocabularies)}"
                )
            if any(v.split != split for v in vocabularies.values()):
                raise ValueError(f"task {self.name!r}: a vocabulary under split {split!r} names another one")
        if not self.corruptions:
            raise ValueError(f"task {self.name!r} needs at least one corruption")

    @property
    def default_corruption(self) -> str:
        return self.corruptions[0]

    def vocabulary(self, kind: str = "canonical", split: str = "train") -> TaskVocabulary:
        """The word lists and layouts of `split` for a `kind` tokenizer."""
        available = {"train": self.vocabularies, **self.splits}
        if split not in available:
            raise ValueError(f"task {self.name!r} has no split {split!r}; it has {sorted(available)}")
        if kind not in available[split]:
            raise ValueError(f"vocabulary {kind!r} is not one of {sorted(available[split])}")
        return available[split][kind]

    def corpus_texts(self, n: int, seed: int, vocabulary: str = "tiny", split: str = "train") -> list[str]:
        """n complete texts (prompt + answer) for language-model training; deterministic per seed.

        `split` is one of `TRAINING_SPLITS`; never "dev" or "heldout".
        """
        if self.corpus is None:
            raise ValueError(f"task {self.name!r} has no training texts: no language model is trained on it")
        if split in EVALUATION_SPLITS:
            raise ValueError(
                f"task {self.name!r}: the {split} split is for evaluation only; "
                f"train on one of {TRAINING_SPLITS}"
            )
        rng = random.Random(check_seed(seed))
        return self.corpus(rng, check_count(n), self.vocabulary(vocabulary, split))

    def _pairs(
        self,
        tokenizer: PreTrainedTokenizerBase,
        n: int,
        seed: int,
        vocabulary: str,
        corruption: str | None,
        split: str = "train",
    ) -> Sequence[PromptPair]:
        corruption = self.default_corruption if corruption is None else corruption
        if corruption not in self.corruptions:
            raise ValueError(
                f"corruption {corruption!r} is not one of {list(self.corruptions)} for task {self.name!r}"
            )
        vocab = self.vocabulary(vocabulary, split)
        require_single_tokens(tokenizer, vocab.single_tokens)
        rng = random.Random(check_seed(seed))
        return self.sample_pairs(rng, check_count(n), vocab, tokenizer, corruption)

    def generate(
        self,
        tokenizer: PreTrainedTokenizerBase,
        n: int,
        seed: int,
        vocabulary: str = "canonical",
        corruption: str | None = None,
        split: str = "train",
    ) -> TaskDataset:
        """n clean/corrupted pairs tokenised by `tokenizer`; deterministic per seed.

        `vocabulary` picks the word lists ("canonical": GPT-2's published lists; "tiny": the bundled
        tokenizer's); every word a slot uses must be one token under `tokenizer` (ValueError otherwise).
        `corruption` is one of `self.corruptions` (default: the first). `split` is one of `SPLITS`:
        "heldout" draws layouts and words no training generator ever draws.
        """
        pairs = self._pairs(tokenizer, n, seed, vocabulary, corruption, split)
        return build_dataset(self.name, corruption or self.default_corruption, tokenizer, pairs)

    def positive_negative(
        self,
        tokenizer: PreTrainedTokenizerBase,
        n: int,
        seed: int,
        vocabulary: str = "canonical",
        split: str = "train",
    ) -> PosNeg:
        """O'Neill & Bui's sets: positives are `generate(...)` with the default corruption; the negatives are
        the same pairs swapped, so `negative.clean_prompts == positive.corrupted_prompts` (same template, the
        answer not inferable) and the negatives' answers and attributes describe their own prompts."""
        pairs = self._pairs(tokenizer, n, seed, vocabulary, None, split)
        swapped = [PromptPair(clean=p.corrupted, corrupted=p.clean) for p in pairs]
        corruption = self.default_corruption
        return PosNeg(
            positive=build_dataset(self.name, corruption, tokenizer, pairs),
            negative=build_dataset(self.name, corruption, tokenizer, swapped),
        )

    def metric(
        self, logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
    ) -> Float[Tensor, " batch"]:
        self._check(logits, data)
        return self.metric_fn(logits, data)

    def accuracy(
        self, logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
    ) -> Bool[Tensor, " batch"]:
        self._check(logits, data)
        return self.accuracy_fn(logits, data)

    def _check(self, logits: Tensor, data: TaskDataset) -> None:
        if data.task != self.name:
            raise ValueError(f"dataset is for task {data.task!r}, not {self.name!r}")
        if logits.ndim != 3 or logits.shape[0] != len(data):
            raise ValueError(
                f"logits of shape {tuple(logits.shape)} do not match {len(data)} prompts (batch pos d_vocab)"
            )
