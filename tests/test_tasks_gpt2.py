"""The bundled GPT-2 tokenizer and the canonical vocabularies under it."""

import pytest

from saelab.tasks import get_task, gpt2_tokenizer, list_tasks
from saelab.tasks.build import require_single_tokens
from saelab.tasks.words import IOI_NAMES


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def test_year_splits_into_century_and_two_digits(gpt2):
    ids = gpt2.encode(" 1732", add_special_tokens=False)
    assert gpt2.convert_ids_to_tokens(ids) == ["Ġ17", "32"]


def test_known_gpt2_ids_and_special_token(gpt2):
    # Ids published with GPT-2: "Then"=6423, " Mary"=5335, " John"=1757.
    assert gpt2.encode("Then, Mary and John", add_special_tokens=False) == [6423, 11, 5335, 290, 1757]
    assert gpt2.bos_token_id == gpt2.eos_token_id == gpt2.pad_token_id == 50256
    assert len(gpt2) == 50257
    assert gpt2.decode(gpt2.encode(" héllo\n    :param", add_special_tokens=False)) == " héllo\n    :param"


def test_every_canonical_ioi_name_is_one_token(gpt2):
    assert len(IOI_NAMES) == 99
    for name in IOI_NAMES:
        assert len(gpt2.encode(" " + name, add_special_tokens=False)) == 1, name


@pytest.mark.parametrize("task", list_tasks())
def test_canonical_vocabularies_validate(gpt2, task):
    vocab = get_task(task).vocabulary("canonical")
    ids = require_single_tokens(gpt2, vocab.single_tokens)
    assert len(set(ids.values())) == len(vocab.single_tokens)
