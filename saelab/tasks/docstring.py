"""Docstring (Heimersheim & Janiak 2023): predict the next `:param` name from the function's signature."""

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from jaxtyping import Bool, Float
from torch import Tensor

from saelab.tasks import metrics, words
from saelab.tasks.base import Prompt, PromptPair, TaskDataset, TaskVocabulary
from saelab.tasks.build import Piece, choose_layout, compose
from saelab.tasks.task import Task

INDENT = "    "


@dataclass(frozen=True)
class DocstringSetting:
    """How a docstring prompt is laid out (defaults: the published setting)."""

    n_prefix: int = 2
    """Signature args before the matching ones (not documented)."""
    n_matching: int = 3
    """Signature args the docstring documents in order; the prompt stops before the last one's name."""
    n_suffix: int = 1
    """Signature args after the matching ones (not documented)."""
    desc_words: int = 2
    """Words describing each documented arg."""
    method_desc_words: int = 3
    """Words in the method description line."""

    def __post_init__(self) -> None:
        for name in ("n_prefix", "n_suffix", "desc_words", "method_desc_words"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 2 <= self.n_matching <= len(string.ascii_uppercase):
            raise ValueError(f"n_matching must be in 2..26, got {self.n_matching}")

    @property
    def answer_index(self) -> int:
        return self.n_prefix + self.n_matching - 1


PUBLISHED = DocstringSetting()


@dataclass(frozen=True)
class CorpusRanges:
    """The argument counts and description lengths a docstring training text draws from (uniformly, each
    independently) when it is not in the published setting (half of them are)."""

    n_prefix: tuple[int, ...]
    n_matching: tuple[int, ...]
    n_suffix: tuple[int, ...]
    desc_words: tuple[int, ...]
    method_desc_words: tuple[int, ...]
    published_share: float = 0.5
    """Share of texts in the published setting instead (whose evaluation prompts are their prefixes)."""

    def __post_init__(self) -> None:
        for name in ("n_prefix", "n_matching", "n_suffix", "desc_words", "method_desc_words"):
            if not getattr(self, name):
                raise ValueError(f"CorpusRanges.{name} is empty; give at least one count")
        if not 0 <= self.published_share <= 1:
            raise ValueError(f"CorpusRanges.published_share must be in [0, 1], got {self.published_share}")
        DocstringSetting(max(self.n_prefix), max(self.n_matching), max(self.n_suffix))  # validates the counts

    def draw(self, rng: random.Random) -> DocstringSetting:
        return DocstringSetting(
            n_prefix=rng.choice(self.n_prefix),
            n_matching=rng.choice(self.n_matching),
            n_suffix=rng.choice(self.n_suffix),
            desc_words=rng.choice(self.desc_words),
            method_desc_words=rng.choice(self.method_desc_words),
        )


CORPUS_RANGES: dict[str, CorpusRanges] = {
    "train": CorpusRanges((0, 1, 2), (2, 3, 4), (0, 1, 2), (1, 2, 3), (2, 3, 4, 5)),
    "broad": CorpusRanges((0, 1, 2, 3), (2, 3, 4, 6), (0, 1, 2, 4), (1, 2, 3), (2, 3, 4, 5)),
    "wide": CorpusRanges(
        (0, 1, 2, 3), (2, 3, 4, 7), (0, 1, 2, 5), (1, 2, 3), (2, 3, 4, 5), published_share=0.1
    ),
}
"""Training-text layouts by split: "train" made the bundled models; "broad" adds argument counts around the
held-out ones (and more words, see `words.DOCSTRING_EXTRA_*`); "wide" draws counts on both sides of the dev
and held-out ones, only a tenth of its texts in the published setting, and ~1,400 words
(`words.DOCSTRING_WIDE_WORDS`)."""
HELDOUT_MATCHING = 5
"""Documented-argument count (matching args) no training split draws: 4 `:param` lines before the answer."""
HELDOUT_SUFFIX = 3
"""Suffix-argument count no training split draws."""
DEV_MATCHING = 6
"""Matching-argument count of the dev layouts; "wide" never draws it ("broad" does)."""
DEV_SUFFIX = 4
"""Suffix-argument count of the dev layouts; "wide" never draws it ("broad" does)."""


def _off_generator_layouts(matching: int, suffix: int) -> tuple[DocstringSetting, ...]:
    """Layouts with `matching` documented arguments or `suffix` suffix arguments (or both)."""
    return tuple(
        DocstringSetting(n_prefix=p, n_matching=m, n_suffix=s)
        for p in (0, 1, 2)
        for m in (2, 3, 4, matching)
        for s in (0, 1, 2, suffix)
        if m == matching or s == suffix
    )


HELDOUT_LAYOUTS = _off_generator_layouts(HELDOUT_MATCHING, HELDOUT_SUFFIX)
"""Evaluation-only layouts: each has the held-out matching count or the held-out suffix count (or both)."""
DEV_LAYOUTS = _off_generator_layouts(DEV_MATCHING, DEV_SUFFIX)
"""Layouts of the dev split, to watch while training on "wide" (which never draws their counts)."""


def draws_dev_layouts(split: str) -> bool:
    """Whether the training texts of `split` draw the dev layouts' counts ("broad" does)."""
    ranges = CORPUS_RANGES[split]
    return DEV_MATCHING in ranges.n_matching or DEV_SUFFIX in ranges.n_suffix


def _slot(index: int, where: str, n_matching: int) -> str | None:
    """Slot names "A_def", "B_def", ... for the matching args (None outside them)."""
    return f"{string.ascii_uppercase[index]}_{where}" if 0 <= index < n_matching else None


def docstring_prompt(
    method: str,
    method_desc: Sequence[str],
    def_args: Sequence[str],
    doc_args: Sequence[str],
    arg_descs: Sequence[Sequence[str]],
    setting: DocstringSetting = PUBLISHED,
) -> Prompt:
    """The prompt: signature, description, one `:param` line per doc arg, then a bare `:param`."""
    pieces: list[Piece] = [(f"\ndef {method}(self", None)]
    for i, arg in enumerate(def_args):
        pieces += [(",", None), (f" {arg}", _slot(i - setting.n_prefix, "def", setting.n_matching))]
    pieces.append((f'):\n{INDENT}"""{" ".join(method_desc)}\n', None))
    for i, (arg, desc) in enumerate(zip(doc_args, arg_descs, strict=True)):
        pieces += [
            (f"\n{INDENT}:param", None),
            (f" {arg}", _slot(i, "doc", setting.n_matching)),
            (f": {' '.join(desc)}", None),
        ]
    pieces.append((f"\n{INDENT}:param", None))
    text, slots = compose(pieces)
    answer = def_args[setting.answer_index]
    return Prompt(
        text=text,
        slots=slots,
        answer=f" {answer}",
        wrong=tuple(f" {a}" for a in def_args if a != answer),
        candidates=tuple(f" {a}" for a in def_args),
        attributes={"method": method, "args": list(def_args), "doc_args": list(doc_args), "answer": answer},
    )


class _Draw(NamedTuple):
    """Everything one prompt pair is made of (all names distinct)."""

    method: str
    method_desc: list[str]
    arg_descs: list[list[str]]
    prefix: list[str]
    matching: list[str]
    suffix: list[str]
    not_matching: list[str]
    random_answer: str
    random_def_mid: list[str]
    random_doc_mid: list[str]


def _draw(rng: random.Random, vocab: TaskVocabulary, setting: DocstringSetting) -> _Draw:
    m = setting.n_matching
    sizes = (1, 1, setting.n_prefix, m, setting.n_suffix, m - 1, m, m - 1)
    names = rng.sample(vocab.words["variables"], sum(sizes))
    (method,), (random_answer,), prefix, matching, suffix, not_matching, def_mid, doc_mid = _split(
        names, sizes
    )
    nouns = vocab.words["descriptions"]
    return _Draw(
        method=method,
        method_desc=rng.sample(nouns, setting.method_desc_words),
        arg_descs=[rng.sample(nouns, setting.desc_words) for _ in range(m - 1)],
        prefix=prefix,
        matching=matching,
        suffix=suffix,
        not_matching=not_matching,
        random_answer=random_answer,
        random_def_mid=def_mid,
        random_doc_mid=doc_mid,
    )


def _split(items: list[str], sizes: Sequence[int]) -> list[list[str]]:
    out, start = [], 0
    for size in sizes:
        out.append(items[start : start + size])
        start += size
    return out


# Each corruption is a (signature variant, docstring variant) pair; "clean" keeps that part unchanged.
_DEF_VARIANTS: dict[str, Callable[[_Draw], list[str]]] = {
    "clean": lambda d: d.prefix + d.matching + d.suffix,
    "random_def": lambda d: d.prefix + d.not_matching + d.matching[-1:] + d.suffix,
    "random_answer": lambda d: d.prefix + d.matching[:-1] + [d.random_answer] + d.suffix,
    "random_random": lambda d: d.prefix + d.random_def_mid + d.suffix,
}
_DOC_VARIANTS: dict[str, Callable[[_Draw], list[str]]] = {
    "clean": lambda d: d.matching[:-1],
    "random_doc": lambda d: d.not_matching,
    "random_random": lambda d: d.random_doc_mid,
}
CORRUPTIONS: dict[str, tuple[str, str]] = {
    "random_random": ("random_random", "random_random"),
    "random_doc": ("clean", "random_doc"),
    "random_def": ("random_def", "clean"),
    "random_answer": ("random_answer", "clean"),
    "random_def_doc": ("random_def", "random_doc"),
    "random_answer_doc": ("random_answer", "random_doc"),
}


def _prompt(draw: _Draw, def_variant: str, doc_variant: str, setting: DocstringSetting) -> Prompt:
    return docstring_prompt(
        draw.method,
        draw.method_desc,
        _DEF_VARIANTS[def_variant](draw),
        _DOC_VARIANTS[doc_variant](draw),
        draw.arg_descs,
        setting,
    )


def sample_pairs(
    rng: random.Random, n: int, vocab: TaskVocabulary, tokenizer, corruption: str
) -> list[PromptPair]:
    pairs = []
    for _ in range(n):
        setting = choose_layout(rng, vocab.layouts)
        draw = _draw(rng, vocab, setting)
        clean = _prompt(draw, "clean", "clean", setting)
        pairs.append(PromptPair(clean, _prompt(draw, *CORRUPTIONS[corruption], setting)))
    return pairs


def _corpus_setting(rng: random.Random, ranges: CorpusRanges) -> DocstringSetting:
    return PUBLISHED if rng.random() < ranges.published_share else ranges.draw(rng)


def corpus_function(draw: _Draw, setting: DocstringSetting, return_arg: str) -> str:
    """A whole function: every arg from the first matching one on is documented, then a body."""
    args = draw.prefix + draw.matching + draw.suffix
    documented = draw.matching + draw.suffix
    lines = [f"\ndef {draw.method}(self, {', '.join(args)}):", f'{INDENT}"""{" ".join(draw.method_desc)}', ""]
    lines += [
        f"{INDENT}:param {arg}: {' '.join(desc)}"
        for arg, desc in zip(documented, draw.arg_descs, strict=True)
    ]
    lines += [f'{INDENT}"""', f"{INDENT}return {return_arg}", ""]
    return "\n".join(lines)


def corpus(rng: random.Random, n: int, vocab: TaskVocabulary) -> list[str]:
    """Whole functions; half in the published setting, whose prompts are prefixes of these texts."""
    ranges = CORPUS_RANGES[vocab.split]
    texts = []
    for _ in range(n):
        setting = _corpus_setting(rng, ranges)
        draw = _draw(rng, vocab, setting)
        nouns = vocab.words["descriptions"]
        extra = [rng.sample(nouns, setting.desc_words) for _ in range(setting.n_suffix + 1)]
        draw = draw._replace(arg_descs=draw.arg_descs + extra)
        texts.append(corpus_function(draw, setting, rng.choice(draw.matching)))
    return texts


def docstring_metric(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Float[Tensor, " batch"]:
    """logit(correct arg) − max logit over the other signature args, at "end"."""
    return metrics.logit_diff(
        metrics.logits_at(logits, data.positions["end"]), data.answer_ids, data.wrong_ids
    )


def docstring_accuracy(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Bool[Tensor, " batch"]:
    """Whether the correct arg is the top-1 among the signature args at "end"."""
    return metrics.top1_among(
        metrics.logits_at(logits, data.positions["end"]), data.answer_ids, data.candidate_ids
    )


_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (words.DOCSTRING_VARIABLES, words.DOCSTRING_NOUNS),
    "broad": (
        words.DOCSTRING_VARIABLES + words.DOCSTRING_EXTRA_VARIABLES,
        words.DOCSTRING_NOUNS + words.DOCSTRING_EXTRA_NOUNS,
    ),
    "wide": (words.DOCSTRING_WIDE_WORDS[0::2], words.DOCSTRING_WIDE_WORDS[1::2]),
    "dev": (words.DOCSTRING_DEV_VARIABLES, words.DOCSTRING_DEV_NOUNS),
    "heldout": (words.DOCSTRING_HELDOUT_VARIABLES, words.DOCSTRING_HELDOUT_NOUNS),
}
"""Split → (argument names, description words); "wide" splits its pool in two, so no description word is
also an argument name."""
_LAYOUTS: dict[str, tuple[DocstringSetting, ...]] = {
    "train": (PUBLISHED,),
    "broad": (PUBLISHED,),
    "wide": (PUBLISHED,),
    "dev": DEV_LAYOUTS,
    "heldout": HELDOUT_LAYOUTS,
}
"""Split → the layouts `Task.generate` draws evaluation prompts from."""


def _vocabulary(kind: str, split: str) -> TaskVocabulary:
    variables, descriptions = _WORDS[split]
    return TaskVocabulary(
        kind=kind,
        words={"variables": variables, "descriptions": descriptions},
        single_tokens=tuple(f" {v}" for v in variables),
        split=split,
        layouts=_LAYOUTS[split],
    )


def _vocabularies(split: str) -> dict[str, TaskVocabulary]:
    return {kind: _vocabulary(kind, split) for kind in ("canonical", "tiny")}


DOCSTRING = Task(
    name="docstring",
    vocabularies=_vocabularies("train"),
    splits={split: _vocabularies(split) for split in ("broad", "wide", "dev", "heldout")},
    corruptions=tuple(CORRUPTIONS),
    sample_pairs=sample_pairs,
    corpus=corpus,
    metric_fn=docstring_metric,
    accuracy_fn=docstring_accuracy,
)
