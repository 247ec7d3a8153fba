"""Token sets for evaluations: packed contexts of a text source, cut to a token budget."""

import logging
from itertools import islice

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


def token_contexts(
    tokenizer, source: TextSource, n_tokens: int, context_len: int, seed: int = 0
) -> Int[Tensor, "n_contexts context_len"]:
    """ceil(n_tokens / context_len) packed contexts (BOS first) of `source`; fewer if the source runs out."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    n_contexts = -(-n_tokens // context_len)
    contexts = [c.tokens for c in islice(iter_contexts(source, tokenizer, context_len, seed), n_contexts)]
    if len(contexts) < n_contexts:
        log.warning("the source holds only %d contexts of %d tokens, fewer than the %d tokens asked for",
                    len(contexts), context_len, n_tokens)
    return torch.from_numpy(np.stack(contexts)).long()


def batches(tokens: Int[Tensor, "n_contexts pos"], batch_size: int) -> list[Int[Tensor, "batch pos"]]:
    """Consecutive row blocks of `tokens` (the last may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return list(tokens.split(batch_size))
