"""Tokenizers for saelab's own models: Hugging Face `tokenizers` objects wrapped for TransformerLens."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS_TOKEN = "<|endoftext|>"


def wrap_tokenizer(tokenizer: Tokenizer, name: str) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` whose post-processor prepends BOS, as TransformerLens expects.

    `add_bos_token=True` and `name_or_path` stop TransformerLens from re-fetching the tokenizer by name,
    which would need the model hub.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=BOS_TOKEN,
        pad_token=BOS_TOKEN,
        add_bos_token=True,
        name_or_path=name,
    )


def prepend_bos(tokenizer: Tokenizer) -> Tokenizer:
    """Set the post-processor so that every encoding starts with BOS (in place; returns the tokenizer)."""
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    if bos_id is None:
        raise ValueError(f"tokenizer has no {BOS_TOKEN!r} token; add it as a special token first")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return tokenizer


def byte_level_tokenizer() -> Tokenizer:
    """256 byte tokens (id = byte value) plus BOS at id 256: no merges, so any text is encodable."""
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    # ByteLevel.alphabet() is unordered; rebuild GPT-2's byte -> printable-char table to make id == byte.
    chars = _gpt2_bytes_to_unicode()
    assert set(chars.values()) == set(byte_to_char)
    vocab = {chars[b]: b for b in range(256)}
    vocab[BOS_TOKEN] = 256
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.add_special_tokens([BOS_TOKEN])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return prepend_bos(tokenizer)


def word_level_tokenizer(vocab: dict[str, int], unknown: str) -> Tokenizer:
    """Whitespace-separated words, one id each (e.g. a tracr program's "1 3 2"); BOS must be in `vocab`.

    Words outside `vocab` encode as `unknown` (a word of `vocab`); decoding joins words with spaces.
    """
    if BOS_TOKEN not in vocab or unknown not in vocab:
        raise ValueError(f"a word-level vocabulary needs {BOS_TOKEN!r} and the unknown word {unknown!r}")
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unknown))
    tokenizer.add_special_tokens([BOS_TOKEN])
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return prepend_bos(tokenizer)


def _gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def load_tokenizer(path: Path, name: str) -> PreTrainedTokenizerFast:
    """Read a `tokenizer.json` written by `tokenizers` and wrap it."""
    return wrap_tokenizer(prepend_bos(Tokenizer.from_file(str(path))), name)
