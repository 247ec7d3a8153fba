"""Train the byte-level BPE tokenizer of the bundled models (deterministic, offline).

    .venv/bin/python training/train_tokenizer.py --out runs/tokenizer.json

Digit runs are split into pairs before BPE (" 1732" → " 17", "32"), so a year is century + two-digit YY,
as the greater-than task needs. Every word the circuit tasks' "tiny" vocabularies draw from (names, places,
objects, event nouns, docstring arguments and descriptions, with their leading space) and every two-digit
string is made a single token by repeating it in the training text; `missing_tokens` checks the result.
"""

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from saelab import corpus
from saelab.models.tokenizer import BOS_TOKEN, prepend_bos

log = logging.getLogger("train_tokenizer")

VOCAB_SIZE = 6144
# GPT-2's pre-tokenisation pattern with numbers cut into runs of at most two digits.
SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}{1,2}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
BOOST_REPEATS = 2000
"""Copies of each required token added to the training text: enough for BPE to merge it whole."""
TASK_TEXTS = 20_000
NARRATIVES = 10_000


def required_tokens() -> list[str]:
    """Strings that must be single tokens: the tasks' single tokens and word lists, leading space included."""
    from saelab.tasks import TASKS

    strings: dict[str, None] = {}
    for task in TASKS.values():
        vocabulary = task.vocabulary("tiny")
        strings.update(dict.fromkeys(vocabulary.single_tokens))
        for values in vocabulary.words.values():
            strings.update(dict.fromkeys(" " + word for word in values))
    for values in corpus.narrative_words().values():
        strings.update(dict.fromkeys(" " + word for word in values))
    strings.update(dict.fromkeys(f"{k:02d}" for k in range(100)))
    strings.update(dict.fromkeys(f" {k}" for k in range(10, 21)))
    return list(strings)


def empty_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def training_texts(seed: int) -> Iterator[str]:
    """Stdlib training files, task texts, narratives, then the boosted required tokens."""
    for doc in corpus.stdlib_documents("train"):
        yield doc.text
    for doc in corpus.task_documents(TASK_TEXTS, seed):
        yield doc.text
    yield from corpus.narrative_texts(NARRATIVES, seed)
    for string in required_tokens():
        # Separated by newlines so that each copy is pre-tokenised on its own.
        yield "\n".join([string] * BOOST_REPEATS)


def train_tokenizer(vocab_size: int = VOCAB_SIZE, seed: int = 0) -> Tokenizer:
    """The bundled tokenizer: BPE over `training_texts`, BOS special token, BOS prepended on encoding."""
    tokenizer = empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(training_texts(seed), trainer=trainer)
    missing = missing_tokens(tokenizer)
    if missing:
        raise ValueError(f"{len(missing)} required strings are not single tokens, e.g. {missing[:5]}; "
                         "raise BOOST_REPEATS or the vocabulary size")
    return prepend_bos(tokenizer)


def missing_tokens(tokenizer: Tokenizer) -> list[str]:
    """Required strings that do not encode to exactly one token."""
    return [s for s in required_tokens() if len(tokenizer.encode(s, add_special_tokens=False).ids) != 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tokenizer.json"))
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tokenizer = train_tokenizer(args.vocab_size, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out))
    log.info("wrote %s (%d tokens)", args.out, tokenizer.get_vocab_size())


if __name__ == "__main__":
    main()
