"""The bundled corpus (saelab.corpus) and the pure parts of training/train_lm.py."""

import importlib.util
import random
from pathlib import Path

import pytest
import torch

from saelab import corpus

REPO = Path(__file__).resolve().parents[1]


def _train_lm():
    """training/train_lm.py is a script, not a package module: load it from its file."""
    spec = importlib.util.spec_from_file_location("train_lm", REPO / "training" / "train_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stdlib_split_is_disjoint_sorted_and_excludes_tests():
    train, held_out = corpus.stdlib_files("train"), corpus.stdlib_files("held_out")
    assert len(train) > 200 and 5 <= len(held_out) < len(train) / 5
    assert not set(train) & set(held_out)
    root = corpus.stdlib_root()
    relative = [p.relative_to(root).as_posix() for p in train]
    assert relative == sorted(relative)
    assert not [r for r in relative if "/test/" in f"/{r}" or "/tests/" in f"/{r}" or "idlelib" in r]
    assert all(corpus.is_held_out(p.relative_to(root).as_posix()) for p in held_out)


def test_held_out_membership_depends_only_on_the_path():
    assert corpus.is_held_out("json/encoder.py") == corpus.is_held_out("json/encoder.py")
    picked = [corpus.is_held_out(f"pkg/module_{i}.py") for i in range(2000)]
    assert 0.02 < sum(picked) / len(picked) < 0.09


def test_stdlib_files_filters_a_fake_root(tmp_path):
    for name in (
        "a.py",
        "test/b.py",
        "pkg/tests/c.py",
        "idlelib/d.py",
        "pkg/e.py",
        "f.txt",
        "encodings/g.py",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    found = corpus.stdlib_files("train", tmp_path) + corpus.stdlib_files("held_out", tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == ["a.py", "pkg/e.py"]
    # the library's ValueError; under pytest the Literal annotation (beartype) refuses it first
    with pytest.raises((ValueError, TypeError), match="split 'dev'|'dev'"):
        corpus.stdlib_files("dev")


def test_generated_documents_are_deterministic_and_labelled():
    first = corpus.task_documents(5, seed=3)
    assert first == corpus.task_documents(5, seed=3) and first != corpus.task_documents(5, seed=4)
    assert [d.source for d in first] == ["ioi"] * 5 + ["greater_than"] * 5 + ["docstring"] * 5
    assert corpus.narrative_texts(4, seed=1) == corpus.narrative_texts(4, seed=1)


def test_bundled_corpus_mixes_sources_and_token_shares_sum_to_one():
    mix = corpus.CorpusMix(task_texts=20, narratives=10)
    docs = corpus.bundled_documents(seed=0, mix=mix)
    counts = {s: sum(d.source == s for d in docs) for s in ("stdlib", "ioi", "narrative")}
    assert counts["ioi"] == 20 and counts["narrative"] == 10 and counts["stdlib"] > 200
    assert list(corpus.bundled_corpus(seed=0, mix=mix)) == [d.text for d in docs]
    shares = corpus.token_shares(docs[:50], lambda texts: [t.split() for t in texts])
    assert abs(sum(shares.values()) - 1) < 1e-9
    held = corpus.bundled_documents(seed=0, split="held_out", mix=mix)
    assert {d.source for d in held} == {"stdlib"} and len(held) < 40
    with pytest.raises(ValueError, match="narratives"):
        corpus.CorpusMix(narratives=-1)


def test_pad_rows_masks_padding_targets():
    batch = _train_lm().pad_rows([[0, 5, 6, 0], [0, 7, 0]], pad=0)
    assert batch.tokens.tolist() == [[0, 5, 6, 0], [0, 7, 0, 0]]
    assert batch.mask.tolist() == [[True, True, True], [True, True, False]]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    module = _train_lm()
    cfg = module.TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_frac=0.1)
    lrs = [module.lr_at(step, cfg) for step in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[110] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)


def test_train_config_rejects_bad_values():
    module = _train_lm()
    with pytest.raises(ValueError, match="shares"):
        module.TrainConfig(shares=(0.5, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="n_heads"):
        module.TrainConfig(d_model=100, n_heads=8)
    with pytest.raises(ValueError, match="required task"):
        module.TrainConfig(required=("ioi", "nope"))
    with pytest.raises(ValueError, match="never 'dev' or 'heldout'"):
        module.TrainConfig(corpus_split="heldout")


def test_broad_corpus_split_widens_only_the_docstring_texts():
    """--corpus-split broad: docstring texts draw the extra names; the other tasks' texts are unchanged."""
    from saelab.tasks import words

    module = _train_lm()
    assert module.generated_texts("ioi", 50, 3, "broad") == module.generated_texts("ioi", 50, 3)
    broad = " ".join(module.generated_texts("docstring", 200, 3, "broad"))
    train = " ".join(module.generated_texts("docstring", 200, 3))
    extra = set(words.DOCSTRING_EXTRA_VARIABLES)
    assert len(extra & set(broad.replace("(", " ").replace(",", " ").split())) > 50
    assert not extra & set(train.replace("(", " ").replace(",", " ").split())


def test_wide_corpus_split_draws_many_names_few_published_layouts_and_no_dev_counts():
    """--corpus-split wide: far more docstring names than "broad"; a tenth in the published layout."""
    from saelab.tasks.docstring import CORPUS_RANGES, PUBLISHED, _corpus_setting

    module = _train_lm()
    assert module.generated_texts("ioi", 50, 3, "wide") == module.generated_texts("ioi", 50, 3)
    wide = " ".join(module.generated_texts("docstring", 300, 3, "wide"))
    broad = " ".join(module.generated_texts("docstring", 300, 3, "broad"))

    def names(text: str) -> set[str]:
        return {line.split(":param ")[1].split(":")[0] for line in text.splitlines() if ":param " in line}

    assert len(names(wide)) > 2 * len(names(broad)) and len(names(wide)) > 500
    descriptions = {w for line in wide.splitlines() if ":param " in line
                    for w in line.split(": ", 1)[1].split()}
    assert descriptions and not descriptions & names(wide)  # one pool, split in two: no name is a description
    rng = random.Random(0)
    published = sum(_corpus_setting(rng, CORPUS_RANGES["wide"]) == PUBLISHED for _ in range(4000)) / 4000
    assert 0.08 < published < 0.15  # 0.1, plus the rare draw of the ranges that equals it
    with pytest.raises(ValueError, match="published_share"):
        CORPUS_RANGES["wide"].__class__((0,), (2,), (0,), (1,), (2,), published_share=1.5)


def test_dev_accuracy_gates_the_early_stop_only_when_asked():
    module = _train_lm()
    dev = {"docstring": {"accuracy": 0.6, "metric": 1.0}}
    assert module.dev_met(dev, module.TrainConfig())
    assert not module.dev_met(dev, module.TrainConfig(dev_accuracy=0.85))
    assert module.dev_met(dev, module.TrainConfig(dev_accuracy=0.6))
    with pytest.raises(ValueError, match="dev_accuracy"):
        module.TrainConfig(dev_accuracy=85, corpus_split="wide")
    with pytest.raises(ValueError, match="trains on the dev split's layouts"):
        module.TrainConfig(dev_accuracy=0.85, corpus_split="broad")


@pytest.mark.parametrize(("dev_accuracy", "dev_scores", "stops"), [
    (0.0, (0.5, 0.5), True), (0.85, (0.5, 0.9), False), (0.85, (0.9, 0.5), False), (0.85, (0.9, 0.9), True),
])
def test_periodic_eval_stops_only_when_dev_also_passes(monkeypatch, dev_accuracy, dev_scores, stops):
    """The early stop needs the train thresholds and, when asked, the dev split, on the periodic prompts and
    on the confirmation prompts (dev_scores: periodic, confirmation)."""
    module = _train_lm()
    cfg = module.TrainConfig(corpus_split="wide", dev_accuracy=dev_accuracy)
    passing = {"ioi": {"accuracy": 1.0, "metric": 5.0}, "greater_than": {"accuracy": 1.0, "metric": 0.9},
               "docstring": {"accuracy": 1.0, "metric": 5.0}}

    def scores(model, n, seed, chunk=250, split="train"):
        dev = dev_scores[0] if n == cfg.eval_prompts else dev_scores[1]
        return {"docstring": {"accuracy": dev, "metric": 0.0}} if split == "dev" else passing

    monkeypatch.setattr(module, "task_scores", scores)
    monkeypatch.setattr(module, "held_out_loss", lambda *args, **kwargs: 0.0)
    state = module.new_state() | {"loss_code": 1.0, "loss_gen": 1.0}
    module.periodic_eval(torch.nn.Identity(), {"held_out": None, "bos": 0}, cfg, state)
    assert (state["stop"] is not None) == stops
    assert state["history"][-1]["dev"]["docstring"]["accuracy"] == dev_scores[0]


def test_code_batches_are_a_function_of_seed_and_step():
    module = _train_lm()
    cfg = module.TrainConfig(code_rows=2, code_len=8)
    stream = torch.arange(100).numpy()
    a, b = module.code_batch(stream, 0, cfg, 5), module.code_batch(stream, 0, cfg, 5)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(
        a.tokens, module.code_batch(stream, 0, cfg, 6).tokens
    )
    assert a.tokens.shape == (2, 8) and (a.tokens[:, 0] == 0).all() and a.mask.all()


def test_repeat_texts_write_one_random_word_sequence_twice_from_the_pool():
    """The repeat source (ours): each text is a word sequence then the same sequence again, words from the
    pool only, lengths in range, a function of the seed; other sources' texts do not move when it is added."""
    module = _train_lm()
    pool = (" alpha", " beta", " gamma", " delta", " eps")
    texts = module.repeat_texts(200, 5, pool, lengths=(3, 7))
    assert texts == module.repeat_texts(200, 5, pool, lengths=(3, 7))
    lengths = set()
    for text in texts:
        words_ = text.split()
        half = len(words_) // 2
        assert len(words_) % 2 == 0 and words_[:half] == words_[half:]
        assert set(words_) <= {w.strip() for w in pool}
        lengths.add(half)
    assert lengths == set(range(3, 8))
    assert module.generated_texts("repeat", 20, 9, pool=pool) == module.repeat_texts(20, 9, pool)


def test_repeat_words_are_single_word_tokens_and_never_a_dev_or_held_out_word():
    """No repeat text copies a dev or held-out split's word (those splits measure
    copying off the generator)."""
    from saelab.tasks import words

    module = _train_lm()
    tok = module.load_or_train_tokenizer(REPO / "data" / "models" / "saelab-tiny" / "tokenizer.json")
    pool = module.repeat_words(tok)
    assert len(pool) > 1500 and pool == tuple(sorted(pool))
    assert all(len(tok.encode(w, add_special_tokens=False).ids) == 1 for w in pool[::50])
    stripped = {w[1:] for w in pool}
    for held_out in (words.DOCSTRING_HELDOUT_VARIABLES, words.DOCSTRING_DEV_VARIABLES,
                     words.DOCSTRING_DEV_NOUNS, words.DOCSTRING_HELDOUT_NOUNS, words.IOI_HELDOUT_PLACES,
                     words.IOI_HELDOUT_OBJECTS, words.GREATER_THAN_HELDOUT_NOUNS):
        one_token = {w for w in held_out if len(tok.encode(" " + w, add_special_tokens=False).ids) == 1}
        assert not stripped & one_token
        assert one_token <= {w[1:] for w in module.repeat_words(tok, "all")}  # the exclusion removes them
    assert set(words.DOCSTRING_VARIABLES[:20]) <= stripped  # training names are in it


def test_four_shares_mean_no_repeat_texts_and_old_checkpoints_resume(tmp_path):
    """Commands from before the repeat source (four shares) train exactly as before: no repeat texts; a
    checkpoint whose token counts lack "repeat" resumes."""
    module = _train_lm()
    cfg = module.TrainConfig(shares=(0.38, 0.17, 0.38, 0.07))
    assert cfg.shares == (0.38, 0.17, 0.38, 0.07, 0.0)
    with pytest.raises(ValueError, match="shares"):
        module.TrainConfig(shares=(0.5, 0.5))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    old = module.new_state()
    del old["tokens"]["repeat"]
    module.save_checkpoint(tmp_path / "checkpoint.pt", model, optimizer, old)
    state = module.load_checkpoint(tmp_path / "checkpoint.pt", model, optimizer)
    assert state["tokens"]["repeat"] == 0 and list(state["tokens"]) == ["stdlib", *module.GENERATED_SOURCES]


def test_the_all_repeat_pool_adds_exactly_the_excluded_words_and_bad_pools_are_refused():
    """--repeat-pool all adds the excluded words only; it cannot gate on the dev split, whose names it
    copies."""
    module = _train_lm()
    tok = module.load_or_train_tokenizer(REPO / "data" / "models" / "saelab-tiny" / "tokenizer.json")
    default, every = set(module.repeat_words(tok)), set(module.repeat_words(tok, "all"))
    assert default < every and {w[1:] for w in every - default} <= module.REPEAT_EXCLUDED
    with pytest.raises(ValueError, match="repeat_pool"):
        module.TrainConfig(repeat_pool="some")
    with pytest.raises(ValueError, match="dev_accuracy 0.8 cannot be used with repeat_pool 'all'"):
        module.TrainConfig(repeat_pool="all", dev_accuracy=0.8, shares=(0.2, 0.1, 0.4, 0.1, 0.2))
    module.TrainConfig(repeat_pool="all", dev_accuracy=0.8)  # no repeat texts: the dev split stays unseen


def test_four_shares_give_the_batches_of_the_four_sources_seeded_as_before():
    """Adding the repeat source moved no other source's texts: with four shares each batch is the one the old
    per-source seeds ((seed * 1_000_003 + step) * 8 + index, index 0-3) give, and no repeat batch is drawn."""
    module = _train_lm()
    tok = module.load_or_train_tokenizer(REPO / "data" / "models" / "saelab-tiny" / "tokenizer.json")
    cfg = module.TrainConfig(shares=(0.38, 0.17, 0.38, 0.07), seed=2)
    batches, counts = module.generated_batches(tok, cfg, step=5)
    assert counts["repeat"] == 0 and len(batches) == 4
    bos = tok.token_to_id("<|endoftext|>")
    for index, (source, batch) in enumerate(zip(("ioi", "greater_than", "docstring", "narrative"), batches,
                                                strict=True)):
        n = round(cfg.gen_tokens * cfg.shares[index] / module.MEAN_TOKENS[source])
        texts = module.generated_texts(source, n, seed=(2 * 1_000_003 + 5) * 8 + index)
        encoded = tok.encode_batch(texts, add_special_tokens=False)
        expected = module.pad_rows([[bos, *e.ids, bos][: cfg.gen_len] for e in encoded], bos)
        assert torch.equal(batch.tokens, expected.tokens)
