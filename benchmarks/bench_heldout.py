"""Task skills off the training generator: every bundled language model on the training split's evaluation
prompts and on the held-out split (layouts and words no training generator draws), per task.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_heldout.py            # 1,000 prompts a cell, seed 777, cards updated
    PYTHONPATH=. .venv/bin/python benchmarks/bench_heldout.py --n 200 --no-cards \\
        --models saelab-tiny candidates/saelab-tiny-broad

Rows per task: "train" (`Task.generate(split="train")`: the prompts the models were trained toward and stopped
on), "heldout" (`split="heldout"`: held-out layouts and held-out words together) and two diagnostics that hold
out one factor each: "heldout layouts" (held-out layouts, training words) and "heldout words" (training
layouts, held-out words). What each split holds is data in saelab/tasks/{ioi,greater_than,docstring}.py and
saelab/tasks/words.py. Every model is scored on every task; "claimed" marks the tasks its training required.
Writes benchmarks/results/bench_heldout.{json,md} and the "Held-out split" section of each MODEL_CARD.md.
"""

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from saelab.models import load_model
from saelab.models.registry import get_bundled
from saelab.tasks import get_task
from saelab.tasks.base import TaskDataset, TaskVocabulary
from saelab.tasks.build import build_dataset

RESULTS = Path(__file__).parent / "results" / "bench_heldout"
MODELS = ("saelab-tiny", "saelab-tiny-attn", "saelab-ioi-siit", "saelab-ioi-siit-copies", "saelab-ioi-siit-even-norms",
          "saelab-docstring-siit")
TASKS = ("ioi", "greater_than", "docstring")
CLAIMS = {
    "saelab-tiny": TASKS,
    "saelab-tiny-attn": ("docstring",),
    "saelab-ioi-siit": ("ioi",),
    "saelab-ioi-siit-copies": ("ioi",),
    "saelab-ioi-siit-even-norms": ("ioi",),
    "saelab-docstring-siit": ("docstring",),
}
"""The tasks each model's training required (train_lm's --required; the SIIT models' one task)."""
CONDITIONS = ("train", "heldout", "heldout layouts", "heldout words")
BEGIN, END = "<!-- heldout-split:begin -->", "<!-- heldout-split:end -->"


class Cell(NamedTuple):
    """One model on one task under one condition."""

    model: str
    task: str
    condition: str
    claimed: bool
    n: int
    """Prompts scored: those of the `drawn` that fit the model's context (the SIIT models' n_ctx is 64)."""
    drawn: int
    seed: int
    accuracy: float
    metric: float
    metric_std: float


def condition_vocabulary(task: str, condition: str) -> TaskVocabulary:
    """The "tiny" vocabulary of a condition (the two diagnostics mix the train and heldout splits)."""
    train = get_task(task).vocabulary("tiny", "train")
    held = get_task(task).vocabulary("tiny", "heldout")
    return {
        "train": train,
        "heldout": held,
        "heldout layouts": replace(train, layouts=held.layouts),
        "heldout words": replace(held, layouts=train.layouts),
    }[condition]


def dataset(tokenizer, task: str, condition: str, n: int, seed: int, n_ctx: int) -> TaskDataset | None:
    """The condition's n prompts, less those longer than n_ctx tokens (BOS counted); None if none fit."""
    if condition in ("train", "heldout"):
        data = get_task(task).generate(tokenizer, n, seed, vocabulary="tiny", split=condition)
    else:
        spec = get_task(task)
        pairs = spec.sample_pairs(random.Random(seed), n, condition_vocabulary(task, condition), tokenizer,
                                  spec.default_corruption)
        data = build_dataset(task, spec.default_corruption, tokenizer, pairs)
    fits = (data.positions["end"] < n_ctx).tolist()
    if all(fits):
        return data
    kept = [pair for pair, fit in zip(data.pairs, fits, strict=True) if fit]
    return build_dataset(task, data.corruption, tokenizer, kept) if kept else None


@torch.no_grad()
def score(model, name: str, task: str, condition: str, n: int, seed: int, chunk: int = 250) -> Cell:
    data = dataset(model.tokenizer, task, condition, n, seed, model.cfg.n_ctx)
    claimed = task in claims(name)
    if data is None:
        nan = float("nan")
        return Cell(name, task, condition, claimed, 0, n, seed, nan, nan, nan)
    logits = torch.cat([model(data.clean_tokens[i:i + chunk]) for i in range(0, len(data), chunk)])
    metric = get_task(task).metric(logits, data)
    accuracy = get_task(task).accuracy(logits, data).float().mean().item()
    return Cell(name, task, condition, claimed, len(data), n, seed, accuracy, metric.mean().item(),
                metric.std().item())


def claims(name: str) -> tuple[str, ...]:
    """CLAIMS, or for a model trained by train_lm elsewhere (a candidate) the tasks its card required."""
    if name in CLAIMS:
        return CLAIMS[name]
    card = json.loads((model_directory(name) / "config.json").read_text()).get("saelab", {})
    return tuple(card.get("required_tasks", TASKS))


def model_directory(name: str) -> Path:
    bundled = get_bundled(name)
    return bundled.directory if bundled is not None and bundled.directory is not None else Path(name)


def table(cells: list[Cell]) -> list[str]:
    lines = ["| task | claimed | seed | train acc | train metric | heldout acc | heldout metric "
             "| heldout layouts acc | heldout words acc |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(c.task, c.condition): c for c in cells}
    for task in TASKS:
        row = [by[(task, cond)] for cond in CONDITIONS]
        lines.append(
            f"| {task} | {'yes' if row[0].claimed else 'no'} | {row[0].seed} "
            f"| {row[0].accuracy:.3f} (n {_count(row[0])}) | {row[0].metric:.2f} ± {row[0].metric_std:.2f} "
            f"| {row[1].accuracy:.3f} (n {_count(row[1])}) | {row[1].metric:.2f} ± {row[1].metric_std:.2f} "
            f"| {row[2].accuracy:.3f} (n {_count(row[2])}) | {row[3].accuracy:.3f} (n {_count(row[3])}) |"
        )
    return lines


def _count(cell: Cell) -> str:
    return str(cell.n) if cell.n == cell.drawn else f"{cell.n} of {cell.drawn} that fit n_ctx"


SPLIT_NOTE = (
    "Held-out split (saelab/tasks; `task.generate(tokenizer, n, seed, vocabulary=\"tiny\", split=\"heldout\")`): "
    "IOI: 4 templates no training text uses, 4 places and 4 objects in no training list; names are shared (the "
    "bundled tokenizer has no other name as one token). Greater-than: 2 wordings (\"went on from the year ... "
    "through the year\", \"took place between the year ... and the year\") and 10 event nouns in no training "
    "list; centuries and two-digit years are the task and are shared. Docstring: 21 layouts with 5 matching "
    "arguments (4 documented before the answer) and/or 3 suffix arguments (training draws 2-4 and 0-2; the "
    "broad generator 2, 3, 4, 6 and 0, 1, 2, 4), 56 argument names and 28 description words in no training "
    "list. No held-out prompt was used in training or in choosing when to stop. Metrics: IOI logit(IO) − "
    "logit(S); greater-than Σp(later) − Σp(not later); docstring logit(answer) − max logit of the other "
    "arguments (mean ± std over prompts). Accuracy: IOI IO above S; greater-than the top two-digit year is "
    "later; docstring top-1 among the signature's arguments."
)


def card_section(name: str, cells: list[Cell], command: str) -> str:
    lines = [BEGIN, "## Held-out split: skills off the training generator", "", *table(cells), "", SPLIT_NOTE,
             "", f"Regenerate: `{command}`", END]
    return "\n".join(lines)


def write_card(name: str, cells: list[Cell], command: str) -> None:
    path = model_directory(name) / "MODEL_CARD.md"
    text = path.read_text() if path.exists() else f"# {name}\n"
    section = card_section(name, cells, command)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="bundled names or model directories")
    parser.add_argument("--n", type=int, default=1000, help="prompts per model, task and condition")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--no-cards", action="store_true", help="do not rewrite the models' MODEL_CARD.md")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "PYTHONPATH=. .venv/bin/python benchmarks/bench_heldout.py"
    if args.n != 1000 or args.seed != 777:
        command += f" --n {args.n} --seed {args.seed}"
    if args.models != list(MODELS):
        command += f" --models {' '.join(args.models)} --out {args.out}"
    results, markdown = {}, []
    for name in args.models:
        started = time.time()
        model = load_model(name)
        cells = [score(model, name, task, cond, args.n, args.seed) for task in TASKS for cond in CONDITIONS]
        results[name] = {"cells": [c._asdict() for c in cells], "seconds": round(time.time() - started, 1)}
        markdown += [f"### {name}", "", *table(cells), ""]
        if not args.no_cards:
            write_card(name, cells, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"n": args.n, "seed": args.seed, "results": results},
                                                        indent=2))
    args.out.with_suffix(".md").write_text("\n".join([*markdown, SPLIT_NOTE, ""]))
    print("\n".join(markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
