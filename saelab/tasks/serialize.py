"""Task datasets as plain rows and JSON lines (prompts, slots, answers, attributes; tokens are recomputed)."""

import json
import os
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from saelab.tasks.base import Prompt, PromptPair, TaskDataset
from saelab.tasks.build import build_dataset

_SIDES = ("clean", "corrupted")


def _prompt_fields(prompt: Prompt, side: str) -> dict:
    return {
        f"{side}_prompt": prompt.text,
        f"{side}_slots": {name: list(span) for name, span in prompt.slots.items()},
        f"{side}_answer": prompt.answer,
        f"{side}_wrong_answers": list(prompt.wrong),
        f"{side}_candidates": list(prompt.candidates),
        f"{side}_attributes": dict(prompt.attributes),
    }


def _prompt_from_row(row: dict, side: str) -> Prompt:
    return Prompt(
        text=row[f"{side}_prompt"],
        slots={name: (int(span[0]), int(span[1])) for name, span in row[f"{side}_slots"].items()},
        answer=row[f"{side}_answer"],
        wrong=tuple(row[f"{side}_wrong_answers"]),
        candidates=tuple(row[f"{side}_candidates"]),
        attributes=row[f"{side}_attributes"],
    )


def dataset_rows(data: TaskDataset) -> list[dict]:
    """One JSON-able flat dict per prompt pair: task, corruption, index, token positions and, for each of
    "clean" and "corrupted": prompt, slots (char spans), answer, wrong_answers, candidates, attributes."""
    rows = []
    for index, pair in enumerate(data.pairs):
        row = {"task": data.task, "corruption": data.corruption, "index": index}
        row["positions"] = {name: int(pos[index]) for name, pos in data.positions.items()}
        for side, prompt in zip(_SIDES, pair, strict=True):
            row |= _prompt_fields(prompt, side)
        rows.append(row)
    return rows


def dataset_from_rows(rows: list[dict], tokenizer: PreTrainedTokenizerBase) -> TaskDataset:
    """Rebuild a dataset from `dataset_rows` output, tokenising with `tokenizer`."""
    if not rows:
        raise ValueError("no rows to rebuild a task dataset from")
    tasks = {(row["task"], row["corruption"]) for row in rows}
    if len(tasks) != 1:
        raise ValueError(f"rows mix several (task, corruption) pairs: {sorted(tasks)}")
    ordered = sorted(rows, key=lambda row: row["index"])
    pairs = [PromptPair(*(_prompt_from_row(row, side) for side in _SIDES)) for row in ordered]
    task, corruption = tasks.pop()
    return build_dataset(task, corruption, tokenizer, pairs)


def dataset_to_jsonl(data: TaskDataset, path: str | Path) -> Path:
    """Write `dataset_rows(data)` as JSON lines, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in dataset_rows(data):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def dataset_from_jsonl(path: str | Path, tokenizer: PreTrainedTokenizerBase) -> TaskDataset:
    """Read a file written by `dataset_to_jsonl` and re-tokenise it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task dataset file {str(path)!r} does not exist")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from None
    try:
        return dataset_from_rows(rows, tokenizer)
    except KeyError as error:
        raise ValueError(f"{path} is not a task dataset file: rows lack {error.args[0]!r}") from None
