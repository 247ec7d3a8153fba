"""Prompt generation: determinism, validation, alignment, positions and positive/negative sets."""

import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saelab.tasks import (
    IOI,
    TASKS,
    Prompt,
    PromptPair,
    get_task,
    gpt2_tokenizer,
    list_tasks,
    register_task,
    required_single_tokens,
)
from saelab.tasks.build import build_dataset
from saelab.tasks.docstring import CORRUPTIONS
from saelab.tasks.task import check_seed


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def bytes_tokenizer():
    """A byte-level tokenizer with no merges: every name splits into several tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {"<bos>": len(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", name_or_path="bytes-only")


def _same(a, b) -> bool:
    return (
        a.clean_prompts == b.clean_prompts
        and a.corrupted_prompts == b.corrupted_prompts
        and torch.equal(a.clean_tokens, b.clean_tokens)
        and torch.equal(a.answer_ids, b.answer_ids)
        and a.attributes == b.attributes
    )


def test_registry_names_and_unknown_task():
    assert list_tasks() == ["docstring", "frac_prevs", "greater_than", "ioi", "reverse"]
    with pytest.raises(ValueError, match="unknown task 'nope'.*docstring, frac_prevs, greater_than, ioi"):
        get_task("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_task(IOI)
    assert TASKS["ioi"] is IOI
    with pytest.raises(ValueError, match="already registered"):
        TASKS.update({"ioi": IOI})


def test_required_single_tokens_cover_all_tasks():
    strings = required_single_tokens("tiny")
    assert {" Mary", " John", " 17", " 11", "32", "00", "99", " files", " size"} <= set(strings)
    assert len(strings) == len(set(strings)) == 99 + 7 + 100 + 111


@pytest.mark.parametrize("task", list_tasks())
def test_generate_is_deterministic_per_seed(gpt2, task):
    t = get_task(task)
    assert _same(t.generate(gpt2, 6, seed=3), t.generate(gpt2, 6, seed=3))
    assert not _same(t.generate(gpt2, 6, seed=3), t.generate(gpt2, 6, seed=4))
    if t.corpus is None:  # the tracr programs: no language model is trained on them
        with pytest.raises(ValueError, match=f"task '{task}' has no training texts"):
            t.corpus_texts(5, seed=1)
        return
    assert t.corpus_texts(5, seed=1) == t.corpus_texts(5, seed=1) != t.corpus_texts(5, seed=2)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_non_int_seed_is_refused(gpt2, seed):
    with pytest.raises(ValueError, match="seed must be an int"):
        check_seed(seed)
    # A ValueError from check_seed; a TypeError first when tests run with jaxtyping's runtime type checks.
    with pytest.raises((ValueError, TypeError), match="seed"):
        get_task("ioi").generate(gpt2, 2, seed=seed)
    with pytest.raises((ValueError, TypeError), match="seed"):
        get_task("docstring").corpus_texts(2, seed=seed)


def test_bad_count_corruption_and_vocabulary(gpt2):
    task = get_task("docstring")
    with pytest.raises(ValueError, match="n must be a positive int"):
        task.generate(gpt2, 0, seed=0)
    with pytest.raises(ValueError, match="corruption 'shuffle'"):
        task.generate(gpt2, 2, seed=0, corruption="shuffle")
    with pytest.raises(ValueError, match="vocabulary 'huge'"):
        task.generate(gpt2, 2, seed=0, vocabulary="huge")


@pytest.mark.parametrize(
    "task,example", [("ioi", "' Michael'"), ("docstring", "' data'"), ("greater_than", "' 11'")]
)
def test_multi_token_words_are_refused_by_name(bytes_tokenizer, task, example):
    with pytest.raises(ValueError, match=rf"{example} is not a single token under tokenizer 'bytes-only'"):
        get_task(task).generate(bytes_tokenizer, 2, seed=0)


@pytest.mark.parametrize("task", list_tasks())
def test_clean_and_corrupted_are_aligned(gpt2, task):
    data = get_task(task).generate(gpt2, 12, seed=0)
    assert data.clean_tokens.shape == data.corrupted_tokens.shape
    pad = gpt2.pad_token_id
    assert (data.clean_tokens[:, 0] == gpt2.bos_token_id).all()
    for i in range(len(data)):
        end = int(data.positions["end"][i])
        assert (data.clean_tokens[i, end + 1 :] == pad).all() and (
            data.clean_tokens[i, 1 : end + 1] != pad
        ).all()
        assert (data.corrupted_tokens[i, end + 1 :] == pad).all()
        assert gpt2.decode(data.clean_tokens[i, 1 : end + 1]) == data.clean_prompts[i]
        assert gpt2.decode(data.corrupted_tokens[i, 1 : end + 1]) == data.corrupted_prompts[i]


def _token(gpt2, tokens, i, position) -> str:
    return gpt2.decode(tokens[i, int(position[i])])


def test_ioi_positions_and_abc_corruption(gpt2):
    data = get_task("ioi").generate(gpt2, 16, seed=0)
    p, attr = data.positions, data.attributes
    assert set(p) == {"IO", "S1", "S2", "end"} and set(attr["pos"]) == {"ABB", "BAB"}
    for i in range(len(data)):
        io, s = attr["IO"][i], attr["S"][i]
        assert _token(gpt2, data.clean_tokens, i, p["IO"]) == " " + io
        assert (
            _token(gpt2, data.clean_tokens, i, p["S1"])
            == _token(gpt2, data.clean_tokens, i, p["S2"])
            == " " + s
        )
        assert (int(p["IO"][i]) < int(p["S1"][i])) == (attr["pos"][i] == "ABB")
        assert gpt2.decode(data.answer_ids[i]) == " " + io and gpt2.decode(data.wrong_ids[i, 0]) == " " + s
        assert data.clean_prompts[i].endswith(" to") and data.clean_prompts[i].count(io) == 1
        corrupted_names = {_token(gpt2, data.corrupted_tokens, i, p[k]) for k in ("IO", "S1", "S2")}
        assert len(corrupted_names) == 3 and not corrupted_names & {" " + io, " " + s}
        differ = (data.clean_tokens[i] != data.corrupted_tokens[i]).nonzero().flatten().tolist()
        assert differ == sorted(int(p[k][i]) for k in ("IO", "S1", "S2"))


def test_greater_than_positions_and_01_corruption(gpt2):
    data = get_task("greater_than").generate(gpt2, 16, seed=0)
    p = data.positions
    for i in range(len(data)):
        yy, xx = data.attributes["YY"][i], data.attributes["XX"][i]
        assert 2 <= yy <= 98 and 11 <= xx <= 17
        assert re.fullmatch(
            rf"The \w+ lasted from the year {xx}{yy:02d} to the year {xx}", data.clean_prompts[i]
        )
        assert _token(gpt2, data.clean_tokens, i, p["YY"]) == f"{yy:02d}"
        assert (
            _token(gpt2, data.clean_tokens, i, p["XX"])
            == _token(gpt2, data.clean_tokens, i, p["end"])
            == f" {xx}"
        )
        assert _token(gpt2, data.corrupted_tokens, i, p["YY"]) == "01"
        assert int(gpt2.decode(data.answer_ids[i])) > yy
        differ = (data.clean_tokens[i] != data.corrupted_tokens[i]).nonzero().flatten().tolist()
        assert differ == [int(p["YY"][i])]
    assert data.wrong_ids.shape == (16, 0)
    assert [gpt2.decode(t) for t in data.candidate_ids[0]] == [f"{k:02d}" for k in range(100)]


def test_docstring_positions_and_answers(gpt2):
    data = get_task("docstring").generate(gpt2, 8, seed=0)
    p = data.positions
    assert set(p) == {"A_def", "B_def", "C_def", "A_doc", "B_doc", "end"}
    for i in range(len(data)):
        args = data.attributes["args"][i]
        assert len(args) == 6 and data.attributes["answer"][i] == args[4]
        assert _token(gpt2, data.clean_tokens, i, p["A_def"]) == _token(
            gpt2, data.clean_tokens, i, p["A_doc"]
        )
        assert (
            _token(gpt2, data.clean_tokens, i, p["C_def"]) == " " + args[4] == gpt2.decode(data.answer_ids[i])
        )
        assert _token(gpt2, data.clean_tokens, i, p["end"]) == "param"
        assert sorted(gpt2.decode(t) for t in data.wrong_ids[i]) == sorted(
            " " + a for a in args if a != args[4]
        )
        prompt = data.clean_prompts[i]
        assert prompt.endswith("\n    :param") and f":param {args[4]}" not in prompt
        assert 0 < prompt.index(f":param {args[2]}: ") < prompt.index(f":param {args[3]}: ")


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_docstring_corruptions_change_only_their_part(gpt2, corruption):
    data = get_task("docstring").generate(gpt2, 6, seed=1, corruption=corruption)
    assert data.corruption == corruption
    changed_def = corruption in (
        "random_random",
        "random_def",
        "random_answer",
        "random_def_doc",
        "random_answer_doc",
    )
    changed_doc = corruption in ("random_random", "random_doc", "random_def_doc", "random_answer_doc")
    for pair in data.pairs:
        clean, bad = pair.clean.attributes, pair.corrupted.attributes
        assert (clean["args"] != bad["args"]) == changed_def
        assert (clean["doc_args"] != bad["doc_args"]) == changed_doc
        assert clean["args"][:2] == bad["args"][:2] and clean["args"][5] == bad["args"][5]
        answer_changed = clean["answer"] != bad["answer"]
        assert answer_changed == (corruption in ("random_random", "random_answer", "random_answer_doc"))
        if corruption == "random_random":
            assert not set(bad["doc_args"]) & set(bad["args"]) and not set(bad["doc_args"]) & set(
                clean["args"]
            )


@pytest.mark.parametrize("task", list_tasks())
def test_positive_negative_differ_exactly_by_the_corruption(gpt2, task):
    t = get_task(task)
    pos, neg = t.positive_negative(gpt2, 8, seed=5)
    reference = t.generate(gpt2, 8, seed=5)
    assert (
        pos.clean_prompts == reference.clean_prompts and pos.corrupted_prompts == reference.corrupted_prompts
    )
    assert neg.clean_prompts == pos.corrupted_prompts and neg.corrupted_prompts == pos.clean_prompts
    assert torch.equal(neg.clean_tokens, pos.corrupted_tokens)
    assert all(torch.equal(neg.positions[k], pos.positions[k]) for k in pos.positions)
    if task == "ioi":
        for i in range(8):
            names = {neg.attributes[k][i] for k in ("IO", "S", "S2")}
            assert len(names) == 3 and neg.attributes["template"][i] == pos.attributes["template"][i]
    if task == "greater_than":
        assert neg.attributes["YY"] == [1] * 8 and neg.attributes["XX"] == pos.attributes["XX"]
    if task == "docstring":
        for i in range(8):
            assert not set(neg.attributes["doc_args"][i]) & set(neg.attributes["args"][i])


def test_ioi_covers_all_templates_and_orders(gpt2):
    data = get_task("ioi").generate(gpt2, 200, seed=0)
    assert set(data.attributes["template"]) == set(range(15))
    assert {(t, o) for t, o in zip(data.attributes["template"], data.attributes["pos"], strict=True)} >= {
        (0, "ABB"),
        (0, "BAB"),
    }


def _prompt(text: str, name: str) -> Prompt:
    start = text.index(" " + name)
    return Prompt(text, {"IO": (start, start + len(name) + 1)}, " " + name, (), (" " + name,), {"IO": name})


def test_build_refuses_misaligned_or_split_slots(gpt2):
    aligned = PromptPair(_prompt("Then, Mary and John", "John"), _prompt("Then, Mary and Paul", "Paul"))
    data = build_dataset("ioi", "ABC", gpt2, [aligned])
    assert data.positions["IO"].tolist() == [5] and data.positions["end"].tolist() == [5]
    longer = PromptPair(aligned.clean, _prompt("Then, Mary and Paul went", "Paul"))
    with pytest.raises(ValueError, match="does not align with clean prompt"):
        build_dataset("ioi", "ABC", gpt2, [longer])
    split = PromptPair(aligned.clean, _prompt("Then, Mary and Zyxwv", "Zyxwv"))
    with pytest.raises(
        ValueError, match=r"' Zyxwv' \(slot IO\) is not a single token under tokenizer 'gpt2'"
    ):
        build_dataset("ioi", "ABC", gpt2, [split])
