"""Token sets for evaluations: packed contexts of a text source, cut to a token budget."""

import logging
from itertools import islice
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from saelab.data import TextSource, iter_contexts
from saelab.data.sources import GeneratorSource

log = logging.getLogger(__name__)


def held_out_source() -> TextSource:
    """The bundled corpus's held-out split (standard-library files never trained on)."""
    from saelab.corpus import CORPUS_NAME, bundled_corpus

    return GeneratorSource(
        lambda seed: bundled_corpus(seed, split="held_out"), name=f"{CORPUS_NAME}/held_out"
    )


def training_source() -> TextSource:
    """The bundled corpus's training split (what dashboards describe features on)."""
    from saelab.data import bundled_source

    return bundled_source()


class DocumentContexts(NamedTuple):
    """Packed contexts and the document (index in the source's stream for the seed) of each token."""

    tokens: Int[Tensor, "n_contexts context_len"]
    documents: Int[Tensor, "n_contexts context_len"]


def document_contexts(
    tokenizer, source: TextSource, n_tokens: int, context_len: int, seed: int = 0
) -> DocumentContexts:
    """ceil(n_tokens / context_len) packed contexts (BOS first) of `source`, with their document ids; fewer if
    the source runs out."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    n_contexts = -(-n_tokens // context_len)
    contexts = list(islice(iter_contexts(source, tokenizer, context_len, seed), n_contexts))
    if len(contexts) < n_contexts:
        log.warning("the source holds only %d contexts of %d tokens, fewer than the %d tokens asked for",
                    len(contexts), context_len, n_tokens)
    return DocumentContexts(torch.from_numpy(np.stack([c.tokens for c in contexts])).long(),
                            torch.from_numpy(np.stack([c.doc for c in contexts])).long())


def token_contexts(
    tokenizer, source: TextSource, n_tokens: int, context_len: int, seed: int = 0
) -> Int[Tensor, "n_contexts context_len"]:
    """ceil(n_tokens / context_len) packed contexts (BOS first) of `source`; fewer if the source runs out."""
    return document_contexts(tokenizer, source, n_tokens, context_len, seed).tokens


def batches(tokens: Int[Tensor, "n_contexts pos"], batch_size: int) -> list[Int[Tensor, "batch pos"]]:
    """Consecutive row blocks of `tokens` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return list(tokens.split(batch_size))
