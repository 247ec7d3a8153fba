"""The held-out split: layouts and words no training generator draws, and prompts built from them."""

import random
import re

import pytest
import torch

from saelab import corpus
from saelab.models.io import model_files
from saelab.models.registry import get_bundled
from saelab.models.tokenizer import load_tokenizer
from saelab.tasks import get_task, gpt2_tokenizer, words
from saelab.tasks.base import TRAINING_SPLITS
from saelab.tasks.build import build_dataset
from saelab.tasks.docstring import (
    CORPUS_RANGES,
    DEV_LAYOUTS,
    DEV_MATCHING,
    DEV_SUFFIX,
    HELDOUT_LAYOUTS,
    HELDOUT_MATCHING,
    HELDOUT_SUFFIX,
    PUBLISHED,
)
from saelab.tasks.greater_than import CORPUS_TEMPLATES
from saelab.tasks.greater_than import HELDOUT_LAYOUTS as GT_HELDOUT
from saelab.tasks.greater_than import TRAIN_LAYOUTS as GT_TRAIN
from saelab.tasks.ioi import BABA_TEMPLATES, HELDOUT_TEMPLATES, TRAINING_TEMPLATES, abba

TASKS = ("ioi", "greater_than", "docstring")
SHARED = {("ioi", "names"), ("greater_than", "centuries")}
"""Lists every split shares on purpose: the task itself (centuries) or what the tokenizer allows (names)."""


@pytest.fixture(scope="module")
def bundled_tokenizer():
    """The bundled models' tokenizer, without loading weights."""
    return load_tokenizer(model_files(get_bundled("saelab-tiny").directory).tokenizer, name="saelab-tiny")


def _held_out_words(split: str = "heldout") -> set[str]:
    return {
        w
        for task in TASKS
        if split in get_task(task).splits
        for key, values in get_task(task).vocabulary("tiny", split).words.items()
        if (task, key) not in SHARED
        for w in values
    }


def _training_words() -> set[str]:
    """Every word any training generator draws: the training splits, the extras, the narratives."""
    lists = [
        values
        for task in TASKS
        for split in TRAINING_SPLITS
        for values in get_task(task).vocabulary("tiny", split).words.values()
    ]
    lists += [words.IOI_EXTRA_PLACES, words.IOI_EXTRA_OBJECTS, words.GREATER_THAN_EXTRA_NOUNS]
    lists += list(corpus.narrative_words().values())
    return {w for values in lists for w in values}


@pytest.mark.parametrize("task", TASKS)
def test_held_out_word_lists_are_disjoint_from_every_training_list(task):
    train_words = _training_words()
    held = get_task(task).vocabulary("tiny", "heldout").words
    for key, values in held.items():
        if (task, key) in SHARED:
            assert set(values) == set(get_task(task).vocabulary("tiny", "train").words[key])
        else:
            assert values and not set(values) & train_words, (task, key, set(values) & train_words)


def test_held_out_layouts_are_disjoint_from_training_layouts():
    trained = set(BABA_TEMPLATES + TRAINING_TEMPLATES)
    trained |= {abba(t) for t in trained}
    assert HELDOUT_TEMPLATES and not set(HELDOUT_TEMPLATES) & trained
    assert not {abba(t) for t in HELDOUT_TEMPLATES} & trained
    assert GT_HELDOUT and not set(GT_HELDOUT) & set(GT_TRAIN)
    for _, middle in GT_HELDOUT:
        assert not any(middle in template for template in CORPUS_TEMPLATES)
    trained_matching = {m for r in CORPUS_RANGES.values() for m in r.n_matching} | {PUBLISHED.n_matching}
    trained_suffix = {s for r in CORPUS_RANGES.values() for s in r.n_suffix} | {PUBLISHED.n_suffix}
    assert HELDOUT_MATCHING not in trained_matching and HELDOUT_SUFFIX not in trained_suffix
    wide = CORPUS_RANGES["wide"]
    assert DEV_MATCHING not in wide.n_matching and DEV_SUFFIX not in wide.n_suffix
    assert DEV_LAYOUTS and not set(DEV_LAYOUTS) & set(HELDOUT_LAYOUTS)
    assert all(s.n_matching == DEV_MATCHING or s.n_suffix == DEV_SUFFIX for s in DEV_LAYOUTS)
    assert HELDOUT_LAYOUTS and all(
        s.n_matching == HELDOUT_MATCHING or s.n_suffix == HELDOUT_SUFFIX for s in HELDOUT_LAYOUTS
    )
    assert get_task("docstring").vocabulary("tiny", "train").layouts == (PUBLISHED,)


def test_dev_words_are_disjoint_from_held_out_and_every_training_list():
    dev = _held_out_words("dev")
    assert len(dev) >= 60 and not dev & _held_out_words() and not dev & _training_words()


@pytest.mark.parametrize("split", TRAINING_SPLITS)
def test_training_texts_never_contain_held_out_words_or_layouts(split):
    """Fails if a training generator leaks the held-out split (its words, templates, wordings or counts), or
    a docstring training text the dev split's words (other texts may: "left" is in an IOI template)."""
    held = _held_out_words()
    dev = _held_out_words("dev")
    template_patterns = [
        re.compile(re.escape(t).replace(re.escape("[A]"), r"\w+").replace(re.escape("[B]"), r"\w+")
                   .replace(re.escape("[PLACE]"), r"\w+").replace(re.escape("[OBJECT]"), r"\w+"))
        for t in HELDOUT_TEMPLATES + tuple(abba(t) for t in HELDOUT_TEMPLATES)
    ]
    texts = [(t, text) for t in TASKS for text in get_task(t).corpus_texts(400, seed=11, split=split)]
    texts += [("narrative", text) for text in corpus.narrative_texts(2000, seed=11)]  # template words too
    for task, text in texts:
        assert not set(re.findall(r"[A-Za-z]+", text)) & held, (task, text)
        assert task != "docstring" or not set(re.findall(r"[A-Za-z]+", text)) & dev, text
        assert not any(p.search(text) for p in template_patterns), text
        assert not any(middle + " " in text for _, middle in GT_HELDOUT), text
    rng = random.Random(0)
    for _ in range(3000):
        setting = CORPUS_RANGES[split].draw(rng)
        assert setting.n_matching != HELDOUT_MATCHING and setting.n_suffix != HELDOUT_SUFFIX
        if split == "wide":
            assert setting.n_matching != DEV_MATCHING and setting.n_suffix != DEV_SUFFIX


@pytest.mark.parametrize("split", ["heldout", "dev"])
def test_evaluation_splits_are_never_training_text(split):
    with pytest.raises(ValueError, match=f"the {split} split is for evaluation only"):
        get_task("docstring").corpus_texts(5, seed=0, split=split)
    with pytest.raises(ValueError, match="has no split 'dev'"):
        get_task("ioi").generate(gpt2_tokenizer(), 5, seed=0, split="dev")


def _layout(attributes: dict, row: int) -> tuple[int, int, int]:
    """(prefix, matching, suffix) counts of a docstring prompt, read back from its attributes."""
    args, doc_args = attributes["args"][row], attributes["doc_args"][row]
    matching = len(doc_args) + 1
    prefix = args.index(attributes["answer"][row]) - matching + 1
    return prefix, matching, len(args) - prefix - matching


@pytest.mark.parametrize("kind", ["tiny", "canonical"])
def test_held_out_prompts_use_only_held_out_layouts_and_words(kind, bundled_tokenizer):
    tokenizer = bundled_tokenizer if kind == "tiny" else gpt2_tokenizer()
    held = _held_out_words()
    doc = get_task("docstring").generate(tokenizer, 120, seed=3, vocabulary=kind, split="heldout")
    layouts = {_layout(doc.attributes, i) for i in range(len(doc))}
    assert all(m == HELDOUT_MATCHING or s == HELDOUT_SUFFIX for _, m, s in layouts) and len(layouts) >= 10
    assert all(set(args) <= held for args in doc.attributes["args"])
    train = get_task("docstring").generate(tokenizer, 20, seed=3, vocabulary=kind)
    assert {_layout(train.attributes, i) for i in range(20)} == {(2, 3, 1)}
    ioi = get_task("ioi").generate(tokenizer, 60, seed=3, vocabulary=kind, split="heldout")
    assert set(ioi.attributes["place"]) | set(ioi.attributes["object"]) <= held
    assert {ioi.attributes["template"][i] for i in range(60)} == set(range(len(HELDOUT_TEMPLATES)))
    gt = get_task("greater_than").generate(tokenizer, 40, seed=3, vocabulary=kind, split="heldout")
    assert set(gt.attributes["noun"]) <= held
    assert all(any(p.endswith(f"{middle} {xx}") for _, middle in GT_HELDOUT)
               for p, xx in zip(gt.clean_prompts, gt.attributes["XX"], strict=True))


def test_mixed_layout_batch_scores_each_prompt_as_it_would_alone():
    """Prompts of different layouts have different numbers of wrong answers; padding must not change them."""
    tokenizer = gpt2_tokenizer()
    task = get_task("docstring")
    data = task.generate(tokenizer, 24, seed=5, split="heldout")
    assert len({len(a) for a in data.attributes["args"]}) > 1
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(data), data.clean_tokens.shape[1], len(tokenizer), generator=generator)
    metric, accuracy = task.metric(logits, data), task.accuracy(logits, data)
    for i, pair in enumerate(data.pairs):
        alone = build_dataset("docstring", data.corruption, tokenizer, [pair])
        row = logits[i : i + 1, : alone.clean_tokens.shape[1]]
        assert torch.allclose(task.metric(row, alone), metric[i : i + 1])
        assert bool(task.accuracy(row, alone)[0]) == bool(accuracy[i])
