"""The bundled models really solve the circuit tasks, and their tokenizer has the properties the tasks need.

Fresh prompts (seeds the training run never used) from `saelab.tasks`, "tiny" vocabulary.
"""

import pytest
import torch

from saelab.models import bundled_models, load_model, read_model_card
from saelab.models.io import model_files
from saelab.models.registry import get_bundled
from saelab.models.tokenizer import load_tokenizer
from saelab.tasks import get_task

N_PROMPTS = 300
SEED = 31_337


def _available(name: str) -> bool:
    return any(m.name == name and m.available for m in bundled_models())


needs_tiny = pytest.mark.skipif(not _available("saelab-tiny"), reason="saelab-tiny has not been trained yet")
needs_attn = pytest.mark.skipif(not _available("saelab-tiny-attn"), reason="saelab-tiny-attn not trained yet")


needs_either = pytest.mark.skipif(
    not (_available("saelab-tiny") or _available("saelab-tiny-attn")), reason="no bundled model trained yet"
)


@pytest.fixture(scope="module")
def tokenizer():
    """The bundled tokenizer (both models ship the same one), without loading weights."""
    name = "saelab-tiny" if _available("saelab-tiny") else "saelab-tiny-attn"
    return load_tokenizer(model_files(get_bundled(name).directory).tokenizer, name=name)


@pytest.fixture(scope="module")
def tiny():
    return load_model("saelab-tiny")


@pytest.fixture(scope="module")
def tiny_attn():
    return load_model("saelab-tiny-attn")


@torch.no_grad()
def _scores(model, task_name: str, n: int = N_PROMPTS, seed: int = SEED) -> tuple[float, float]:
    """(mean accuracy, mean task metric) on n fresh prompts."""
    task = get_task(task_name)
    data = task.generate(model.tokenizer, n=n, seed=seed, vocabulary="tiny")
    logits = model(data.clean_tokens)
    return task.accuracy(logits, data).float().mean().item(), task.metric(logits, data).mean().item()


# --- tokenizer ---------------------------------------------------------------------------------------------

@needs_either
def test_years_split_into_century_and_two_digits(tokenizer):
    tok = tokenizer
    for year in (1102, 1732, 1798, 1505):
        ids = tok.encode(f" {year}", add_special_tokens=False)
        assert tok.convert_ids_to_tokens(ids) == [f"Ġ{year // 100}", f"{year % 100:02d}"]


@needs_either
def test_two_digit_strings_and_centuries_are_single_tokens(tokenizer):
    tok = tokenizer
    for text in [f"{k:02d}" for k in range(100)] + [f" {c}" for c in range(11, 18)]:
        assert len(tok.encode(text, add_special_tokens=False)) == 1, text
    assert len({tok.encode(f"{k:02d}", add_special_tokens=False)[0] for k in range(100)}) == 100


@needs_either
def test_task_words_are_single_tokens_with_leading_space(tokenizer):
    tok = tokenizer
    for name in ("ioi", "greater_than", "docstring"):
        vocab = get_task(name).vocabulary("tiny")
        strings = list(vocab.single_tokens) + [" " + w for words in vocab.words.values() for w in words]
        split = [s for s in strings if len(tok.encode(s, add_special_tokens=False)) != 1]
        assert split == [], f"{name}: {split[:5]}"


@needs_either
def test_tokenizer_prepends_bos_and_round_trips_code(tokenizer):
    tok = tokenizer
    text = 'def f(x):\n    """Return x."""\n    return x + 1732\n'
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and tok.convert_ids_to_tokens(ids[0]) == "<|endoftext|>"
    assert tok.decode(ids[1:]) == text


@pytest.mark.skipif(
    not (_available("saelab-tiny") and _available("saelab-tiny-attn")), reason="needs both models"
)
def test_both_models_share_one_tokenizer():
    texts = [
        model_files(get_bundled(n).directory).tokenizer.read_text()
        for n in ("saelab-tiny", "saelab-tiny-attn")
    ]
    assert texts[0] == texts[1]


# --- task thresholds ---------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_tiny
def test_tiny_solves_ioi(tiny):
    accuracy, logit_diff = _scores(
        tiny, "ioi", n=1000
    )  # the 1,000 fresh prompts (0.952 at this seed)
    assert accuracy >= 0.95, (accuracy, logit_diff)
    assert logit_diff >= 3.0, (accuracy, logit_diff)


@pytest.mark.slow
@needs_tiny
def test_tiny_solves_greater_than(tiny):
    _, prob_diff = _scores(tiny, "greater_than")
    assert prob_diff >= 0.6, prob_diff


@pytest.mark.slow
@needs_tiny
def test_tiny_solves_docstring(tiny):
    accuracy, _ = _scores(tiny, "docstring")
    assert accuracy >= 0.8, accuracy


@pytest.mark.slow
@needs_tiny
def test_tiny_fails_on_corrupted_ioi(tiny):
    """On ABC prompts the IO is not inferable: the logit difference collapses (the metric can fail)."""
    task = get_task("ioi")
    data = task.generate(tiny.tokenizer, n=100, seed=SEED, vocabulary="tiny")
    with torch.no_grad():
        clean = task.metric(tiny(data.clean_tokens), data).mean().item()
        corrupted = task.metric(tiny(data.corrupted_tokens), data).mean().item()
    assert corrupted < clean - 2.0, (clean, corrupted)


@pytest.mark.slow
@needs_attn
def test_attn_only_solves_docstring(tiny_attn):
    assert tiny_attn.cfg.attn_only
    accuracy, _ = _scores(tiny_attn, "docstring")
    assert accuracy >= 0.8, accuracy


@needs_tiny
def test_model_card_records_training(tiny):
    card = read_model_card(get_bundled("saelab-tiny").directory)
    for key in (
        "token_shares",
        "steps",
        "tokens_trained",
        "wall_time_s",
        "held_out_stdlib_loss",
        "task_scores",
    ):
        assert key in card, key
    assert abs(sum(card["token_shares"].values()) - 1) < 1e-3
    assert tiny.cfg.n_layers == card["config"]["n_layers"]
