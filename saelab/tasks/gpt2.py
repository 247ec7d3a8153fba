"""GPT-2's byte-level BPE tokenizer, built offline from the vocabulary bundled in `data/gpt2/`."""

import json
from functools import cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saelab.paths import data_dir

GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256


@cache
def _gpt2_backend() -> Tokenizer:
    folder = data_dir() / "gpt2"
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    # The first line is the "#version" header; each other line is one merge "left right".
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([GPT2_EOS])
    return tokenizer


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's tokenizer (as `HookedTransformer("gpt2").tokenizer` tokenises): bos = eos = pad = id 50256.

    Like TransformerLens' own GPT-2 tokenizer it has `add_bos_token=True` (so TransformerLens uses it as is
    instead of re-fetching "gpt2" from the hub); pass `add_special_tokens=False` for the bare token ids.
    """
    backend = _gpt2_backend()
    if backend.token_to_id(GPT2_EOS) != GPT2_EOS_ID:
        raise ValueError(f"data/gpt2 is damaged: {GPT2_EOS!r} is not id {GPT2_EOS_ID}; restore it from git")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend.__class__.from_str(backend.to_str()),
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        pad_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        add_bos_token=True,
        name_or_path="gpt2",
    )
