"""Tokenise documents and pack them into fixed-length contexts that each start with BOS.

Documents are joined with BOS as a separator (after each document) and cut into pieces of
`context_len - 1` tokens; each context is BOS followed by one piece. The final partial piece is dropped.
"""

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from saelab.data.sources import DataSourceError, TextSource

Encoder = Callable[[list[str]], list[list[int]]]


class PackedContext(NamedTuple):
    """One context: its token ids and, per token, the index of the document it came from."""

    index: int
    """Position of this context in the packed stream (0-based)."""
    tokens: Int[np.ndarray, " context_len"]
    doc: Int[np.ndarray, " context_len"]


class ContextBatch(NamedTuple):
    """Consecutive contexts [first, first + batch) of the packed stream."""

    first: int
    tokens: Int[Tensor, "batch context_len"]
    doc: Int[Tensor, "batch context_len"]


def make_encoder(tokenizer) -> Encoder:
    """Token ids of texts without special tokens, from a Hugging Face (fast) tokenizer."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda texts: [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]


def bos_id_of(tokenizer) -> int:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise DataSourceError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no BOS token; "
            "set tokenizer.bos_token first"
        )
    return int(bos)


def pack_contexts(
    documents: Iterable[str], encode: Encoder, bos_id: int, context_len: int, docs_per_call: int = 64
) -> Iterator[PackedContext]:
    """Contexts of `context_len` tokens (BOS + context_len - 1 document tokens), in stream order."""
    if context_len < 2:
        raise ValueError(f"context_len {context_len} must be at least 2 (BOS plus one token)")
    body = context_len - 1
    tokens, docs = np.empty(0, np.int32), np.empty(0, np.int64)
    index, doc_index = 0, 0
    texts, per_call = iter(documents), 1
    # Few documents per call at first, so a short run does not tokenise far more text than it uses.
    while chunk := list(islice(texts, per_call)):
        per_call = min(2 * per_call, docs_per_call)
        pieces, owners = [tokens], [docs]
        for ids in encode(chunk):
            if ids:
                pieces.append(np.asarray([*ids, bos_id], np.int32))
                owners.append(np.full(len(ids) + 1, doc_index, np.int64))
            doc_index += 1
        tokens, docs = np.concatenate(pieces), np.concatenate(owners)
        n_full = len(tokens) // body
        for i in range(n_full):
            piece = slice(i * body, (i + 1) * body)
            yield PackedContext(index, np.concatenate([[bos_id], tokens[piece]]).astype(np.int32),
                                np.concatenate([docs[piece][:1], docs[piece]]))
            index += 1
        tokens, docs = tokens[n_full * body:], docs[n_full * body:]


def iter_contexts(source: TextSource, tokenizer, context_len: int, seed: int) -> Iterator[PackedContext]:
    """The packed context stream of `source` for `seed`; the same arguments always give the same stream."""
    contexts = pack_contexts(
        source.documents(seed), make_encoder(tokenizer), bos_id_of(tokenizer), context_len
    )
    first = next(contexts, None)
    if first is None:
        raise DataSourceError(f"source {describe_short(source)} holds fewer than {context_len} tokens; "
                              "give it more text or use a shorter context")
    yield first
    yield from contexts


def batch_contexts(contexts: Iterable[PackedContext], batch_size: int) -> Iterator[ContextBatch]:
    """Group contexts into batches of `batch_size` (the last one may be shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be positive")
    contexts = iter(contexts)
    while group := list(islice(contexts, batch_size)):
        yield ContextBatch(group[0].index, torch.from_numpy(np.stack([c.tokens for c in group])),
                           torch.from_numpy(np.stack([c.doc for c in group])))


def describe_short(source: TextSource) -> str:
    info = source.describe()
    return repr(info.get("name") or info["kind"])
