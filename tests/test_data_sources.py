"""Token sources: files, generators, in-memory texts and the hub; packing into BOS-led contexts."""

import numpy as np
import pytest

from saelab.data import (
    DataSourceError,
    FileSource,
    GeneratorSource,
    HubSource,
    TextsSource,
    iter_contexts,
    pack_contexts,
    parse_token_count,
    source_from_spec,
)

BOS = 256


def _byte_encode(texts):
    return [list(t.encode()) for t in texts]


def test_packing_puts_bos_first_and_separates_documents():
    contexts = list(pack_contexts(["abcde", "fgh", "ijklmnop"], _byte_encode, BOS, context_len=5))
    # stream: a b c d e BOS f g h BOS i j k l m n o p BOS  -> pieces of 4, the last partial one dropped
    assert [c.tokens.tolist() for c in contexts] == [
        [BOS, *b"abcd"], [BOS, ord("e"), BOS, *b"fg"], [BOS, ord("h"), BOS, *b"ij"], [BOS, *b"klmn"],
    ]
    assert [c.index for c in contexts] == [0, 1, 2, 3]
    assert contexts[1].doc.tolist() == [0, 0, 0, 1, 1]
    assert contexts[3].doc.tolist() == [2, 2, 2, 2, 2]
    assert all(c.tokens.dtype == np.int32 and c.doc.dtype == np.int64 for c in contexts)


def test_empty_documents_are_skipped_but_keep_their_index():
    contexts = list(pack_contexts(["ab", "", "cd"], _byte_encode, BOS, context_len=4))
    assert contexts[0].tokens.tolist() == [BOS, *b"ab", BOS]
    assert contexts[0].doc.tolist() == [0, 0, 0, 0]
    assert contexts[1].doc.tolist()[1:] == [2, 2, 2]


def _write_corpus(directory, n_files=6):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    for i in range(n_files):
        text = " ".join(rng.choice(words, size=60))
        (directory / f"doc{i}.txt").write_text(f"file {i}: {text}\n\nsecond paragraph {i}\n")
    return FileSource.from_patterns([str(directory)])


def test_file_source_is_deterministic_for_a_seed(tmp_path, random_model):
    source = _write_corpus(tmp_path)
    run = [c.tokens.tolist() for c in iter_contexts(source, random_model.tokenizer, 16, seed=3)]
    again = [c.tokens.tolist() for c in iter_contexts(source, random_model.tokenizer, 16, seed=3)]
    other = [c.tokens.tolist() for c in iter_contexts(source, random_model.tokenizer, 16, seed=4)]
    assert run == again and run != other
    assert all(tokens[0] == random_model.tokenizer.bos_token_id for tokens in run)


def test_file_source_split_by_paragraph(tmp_path, random_model):
    (tmp_path / "a.txt").write_text("first\n\nsecond\n\nthird\n")
    source = FileSource((str(tmp_path / "a.txt"),), split_by="paragraph", shuffle_buffer=0)
    contexts = list(iter_contexts(source, random_model.tokenizer, 4, seed=0))
    assert contexts[-1].doc.max() == 2


def test_generator_source_gets_the_seed():
    source = GeneratorSource(lambda seed: [f"text {seed} {i}" for i in range(3)], name="gen")
    assert list(source.documents(7)) == ["text 7 0", "text 7 1", "text 7 2"]
    assert source.describe() == {"kind": "generator", "name": "gen"}
    with pytest.raises(DataSourceError, match="yielded a int"):
        list(GeneratorSource(lambda: [1], name="bad").documents(0))


def test_empty_data_is_an_error(tmp_path, random_model):
    with pytest.raises(DataSourceError, match="fewer than 16 tokens"):
        list(iter_contexts(TextsSource(("", "")), random_model.tokenizer, 16, seed=0))
    with pytest.raises(DataSourceError, match="no input files"):
        FileSource(())
    with pytest.raises(DataSourceError, match="matches no files"):
        FileSource.from_patterns([str(tmp_path / "nothing*.txt")])


def test_non_utf8_file_is_named(tmp_path, random_model):
    (tmp_path / "good.txt").write_text("fine text " * 20)
    (tmp_path / "bad.txt").write_bytes(b"latin-1 \xe9t\xe9 " * 20)
    source = FileSource.from_patterns([str(tmp_path)])
    with pytest.raises(DataSourceError, match=r"bad\.txt.*not UTF-8"):
        list(iter_contexts(source, random_model.tokenizer, 8, seed=0))


def test_hub_source_offline_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataSourceError, match="'someone/corpus' needs the Hugging Face hub") as info:
        list(HubSource("someone/corpus").documents(0))
    assert "\n" not in str(info.value)


def test_source_from_spec(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert isinstance(source_from_spec(str(tmp_path)), FileSource)
    assert isinstance(source_from_spec(f"files:{tmp_path}/*.txt"), FileSource)
    assert source_from_spec("hub:org/name:validation") == HubSource("org/name", split="validation")
    assert source_from_spec("bundled").describe()["kind"] == "generator"


@pytest.mark.parametrize(("text", "count"), [("4096", 4096), ("2M", 2_000_000), ("500k", 500_000),
                                              ("1.5e3", 1500), (128, 128), ("1_000", 1000)])
def test_parse_token_count(text, count):
    assert parse_token_count(text) == count


@pytest.mark.parametrize("text", ["-5", -5, "0", "2X", "1.5", "", True])
def test_bad_token_counts(text):
    with pytest.raises(ValueError, match="token count"):
        parse_token_count(text)
