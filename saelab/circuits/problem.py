"""What every circuit method is handed: batches of aligned clean/corrupted prompts and a metric on them."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

EndMetric = Callable[[Float[Tensor, "batch d_vocab"]], Float[Tensor, " batch"]]
"""Logits at each prompt's answer position → the per-prompt task metric (higher: the model does the task)."""


class PromptBatch(NamedTuple):
    """Clean prompts (O'Neill & Bui's positives), their corruptions (negatives), where the answer is due,
    and the metric of this batch's prompts."""

    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    end: Int[Tensor, " batch"]
    """Each prompt's last token (the answer is predicted there); tokens after it are padding."""
    metric: EndMetric


class CircuitProblem(NamedTuple):
    """A task instance for circuit discovery: a few prompt batches. The metric of a run is the mean of the
    per-prompt metrics over all batches."""

    name: str
    """E.g. "ioi"; carried into results."""
    batches: tuple[PromptBatch, ...]

    @property
    def n_prompts(self) -> int:
        return sum(len(b.end) for b in self.batches)


def check_batch(batch: PromptBatch) -> PromptBatch:
    """Validate shapes and trim the padding after the last answer position (it cannot affect the metric)."""
    if batch.clean.shape != batch.corrupted.shape or batch.clean.ndim != 2:
        raise ValueError(
            f"clean {tuple(batch.clean.shape)} and corrupted {tuple(batch.corrupted.shape)} tokens must be "
            "[batch, pos] tensors of the same shape"
        )
    if batch.end.shape != (batch.clean.shape[0],):
        raise ValueError(
            f"end positions of shape {tuple(batch.end.shape)} do not match {batch.clean.shape[0]} prompts"
        )
    if int(batch.end.min()) < 0 or int(batch.end.max()) >= batch.clean.shape[1]:
        raise ValueError(f"end positions must lie in [0, {batch.clean.shape[1]}), got {batch.end.tolist()}")
    length = int(batch.end.max()) + 1
    return batch._replace(clean=batch.clean[:, :length], corrupted=batch.corrupted[:, :length])


def make_problem(name: str, batches: Sequence[PromptBatch]) -> CircuitProblem:
    if not batches:
        raise ValueError(f"circuit problem {name!r} needs at least one prompt batch")
    return CircuitProblem(name, tuple(check_batch(b) for b in batches))


def subset_dataset(data, rows: Sequence[int]):
    """The `TaskDataset` restricted to `rows` (tensors, attributes and prompt lists alike)."""
    index = torch.as_tensor(list(rows), dtype=torch.long)
    pick = [int(i) for i in index]
    return dataclasses.replace(
        data,
        clean_prompts=[data.clean_prompts[i] for i in pick],
        corrupted_prompts=[data.corrupted_prompts[i] for i in pick],
        clean_tokens=data.clean_tokens[index],
        corrupted_tokens=data.corrupted_tokens[index],
        answer_ids=data.answer_ids[index],
        wrong_ids=data.wrong_ids[index],
        candidate_ids=data.candidate_ids[index],
        positions={k: v[index] for k, v in data.positions.items()},
        attributes={k: [v[i] for i in pick] for k, v in data.attributes.items()},
        pairs=tuple(data.pairs[i] for i in pick) if data.pairs else (),
    )


def _end_metric(task, data) -> EndMetric:
    """The task metric applied to end logits alone: logits [batch, 1, vocab] with "end" at position 0."""
    at_zero = dataclasses.replace(
        data, positions={**data.positions, "end": torch.zeros(len(data), dtype=torch.long)}
    )

    def metric(end_logits: Float[Tensor, "batch d_vocab"]) -> Float[Tensor, " batch"]:
        return task.metric_fn(end_logits[:, None, :], at_zero)

    return metric


def problem_from_task(task, data, batch_size: int = 32) -> CircuitProblem:
    """Split a `TaskDataset` of `task` into batches of at most `batch_size` prompts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    batches = []
    for start in range(0, len(data), batch_size):
        part = subset_dataset(data, range(start, min(start + batch_size, len(data))))
        batches.append(
            PromptBatch(
                part.clean_tokens, part.corrupted_tokens, part.positions["end"], _end_metric(task, part)
            )
        )
    return make_problem(task.name, batches)
