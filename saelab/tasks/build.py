"""Turn prompt specs into a tokenised `TaskDataset`, checking single tokens and clean/corrupted alignment."""

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from saelab.tasks.base import Prompt, PromptPair, Span, TaskDataset

Piece = tuple[str, str | None]
"""A piece of prompt text and the slot name it fills (None for plain text)."""


def compose(pieces: Iterable[Piece]) -> tuple[str, dict[str, Span]]:
    """Concatenate pieces into a text, recording the character span of each named piece."""
    text, slots = "", {}
    for piece, slot in pieces:
        if slot is not None:
            if slot in slots:
                raise ValueError(f"slot {slot!r} appears twice in one prompt")
            slots[slot] = (len(text), len(text) + len(piece))
        text += piece
    return text, slots


def tokenizer_name(tokenizer: PreTrainedTokenizerBase) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def require_single_tokens(tokenizer: PreTrainedTokenizerBase, strings: Iterable[str]) -> dict[str, int]:
    """Map each string to its one token id; ValueError naming the first string that is not one token."""
    ids = {}
    for string in dict.fromkeys(strings):
        encoded = tokenizer.encode(string, add_special_tokens=False)
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise ValueError(
                f"{string!r} is not a single token under tokenizer {tokenizer_name(tokenizer)!r} "
                f"(it splits into {pieces}); use a vocabulary whose words are single tokens for it"
            )
        ids[string] = encoded[0]
    return ids


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.bos_token_id is None:
        raise ValueError(f"tokenizer {tokenizer_name(tokenizer)!r} has no bos_token_id; set a BOS token")
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.bos_token_id


class Encoded(NamedTuple):
    ids: list[int]
    """BOS then the prompt's tokens."""
    positions: dict[str, int]
    """Slot name → token index (BOS counted), plus "end"."""


def _slot_position(offsets: Sequence[tuple[int, int]], span: Span) -> int | None:
    """The index of the one token covering `span` exactly (a leading space may be trimmed), else None."""
    start, end = span
    overlapping = [i for i, (s, e) in enumerate(offsets) if s < end and e > start]
    if len(overlapping) != 1:
        return None
    s, e = offsets[overlapping[0]]
    return overlapping[0] if s >= start and e == end else None


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]) -> list[Encoded]:
    """Tokenise prompts (no special tokens, then BOS prepended) and locate their slots."""
    batch = tokenizer([p.text for p in prompts], add_special_tokens=False, return_offsets_mapping=True)
    encoded = []
    for prompt, ids, offsets in zip(prompts, batch["input_ids"], batch["offset_mapping"], strict=True):
        positions = {}
        for slot, span in prompt.slots.items():
            index = _slot_position(offsets, span)
            if index is None:
                piece = prompt.text[span[0] : span[1]]
                raise ValueError(
                    f"{piece!r} (slot {slot}) is not a single token under tokenizer "
                    f"{tokenizer_name(tokenizer)!r} in prompt {prompt.text!r}"
                )
            positions[slot] = index + 1
        positions["end"] = len(ids)
        encoded.append(Encoded([tokenizer.bos_token_id, *ids], positions))
    return encoded


def _check_aligned(clean: Encoded, corrupted: Encoded, pair: PromptPair) -> None:
    if len(clean.ids) != len(corrupted.ids) or clean.positions != corrupted.positions:
        raise ValueError(
            f"corrupted prompt {pair.corrupted.text!r} does not align with clean prompt {pair.clean.text!r} "
            f"({len(corrupted.ids)} vs {len(clean.ids)} tokens); its slots must be single tokens too"
        )


def _pad(rows: Sequence[list[int]], length: int, fill: int) -> torch.Tensor:
    return torch.tensor([row + [fill] * (length - len(row)) for row in rows], dtype=torch.long)


def _answer_tensors(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]
) -> tuple[torch.Tensor, ...]:
    strings = [s for p in prompts for s in (p.answer, *p.wrong, *p.candidates)]
    ids = require_single_tokens(tokenizer, strings)
    answer = torch.tensor([ids[p.answer] for p in prompts], dtype=torch.long)
    wrong = _repeat_last([[ids[s] for s in p.wrong] for p in prompts])
    candidates = _repeat_last([[ids[s] for s in p.candidates] for p in prompts])
    return answer, wrong.reshape(len(prompts), -1), candidates.reshape(len(prompts), -1)


def _repeat_last(rows: Sequence[list[int]]) -> torch.Tensor:
    """Rows padded to the longest by repeating their last id: a repeated id changes no max over the row
    (prompts of several layouts have different numbers of wrong answers and candidates)."""
    length = max(len(row) for row in rows)
    return torch.tensor([row + row[-1:] * (length - len(row)) for row in rows], dtype=torch.long)


def build_dataset(
    task: str, corruption: str, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PromptPair]
) -> TaskDataset:
    """Tokenise clean/corrupted pairs into a `TaskDataset` (BOS first, right-padded, aligned)."""
    if not pairs:
        raise ValueError(f"task {task!r}: no prompts to build a dataset from (n must be ≥ 1)")
    fill = pad_id(tokenizer)
    clean = encode_prompts(tokenizer, [p.clean for p in pairs])
    corrupted = encode_prompts(tokenizer, [p.corrupted for p in pairs])
    for c, k, pair in zip(clean, corrupted, pairs, strict=True):
        _check_aligned(c, k, pair)
    # Prompts of several layouts (a held-out split) can name different slots: keep those every prompt has.
    names = [name for name in clean[0].positions if all(name in e.positions for e in clean)]
    length = max(len(e.ids) for e in clean)
    answer_ids, wrong_ids, candidate_ids = _answer_tensors(tokenizer, [p.clean for p in pairs])
    positions = {name: torch.tensor([e.positions[name] for e in clean], dtype=torch.long) for name in names}
    attribute_keys = pairs[0].clean.attributes.keys()
    return TaskDataset(
        task=task,
        corruption=corruption,
        clean_prompts=[p.clean.text for p in pairs],
        corrupted_prompts=[p.corrupted.text for p in pairs],
        clean_tokens=_pad([e.ids for e in clean], length, fill),
        corrupted_tokens=_pad([e.ids for e in corrupted], length, fill),
        answer_ids=answer_ids,
        wrong_ids=wrong_ids,
        candidate_ids=candidate_ids,
        positions=positions,
        attributes={key: [p.clean.attributes[key] for p in pairs] for key in attribute_keys},
        pairs=tuple(pairs),
    )


def choose_layout(rng, layouts: Sequence):
    """The one layout, or a uniform draw when there are several (a single layout consumes no randomness, so
    a split with one layout draws exactly the prompts it drew before layouts existed)."""
    if not layouts:
        raise ValueError("a split needs at least one layout to draw prompts from")
    return layouts[0] if len(layouts) == 1 else rng.choice(layouts)
