"""Tasks for the tracr-compiled programs of the ACDC paper: `reverse` and `frac_prevs`.

The models (`tracr-reverse`, `tracr-frac-prevs`) are compiled by `training/compile_tracr.py`; their
circuits are known from the compiler. A prompt is `max_seq_len` input tokens ("1 3 2 2 1"); every prompt has
the same length because the compiled attention is bidirectional and padding would change the answer.
Corruption, as in ACDC: another uniformly random input, redrawn while its output at "end" equals the clean
one (so every pair has a gap).

saelab's metric is per prompt at "end", the last prompt token, where `reverse` outputs the first input token
and `frac_prevs` the fraction of "x" among all the input tokens (read from the logit of " x", the one output
column the compiled model writes). ACDC scored every position by the L2 distance to the clean output; that
distance is smallest at the clean run, so its gradient there is zero and attribution patching (EAP,
linearised at the clean run) scores every node 0 (measured: node AUC 0.50 on frac_prevs). The metrics here
are linear in the output instead: `reverse` logit(answer) − max logit(other input tokens) (clean 1,
corrupted −1); `frac_prevs` (output − the corrupted input's fraction) / (clean fraction − corrupted
fraction), 1 on the clean run and 0 on the corrupted one.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.tasks import metrics
from saelab.tasks.base import Prompt, PromptPair, TaskDataset, TaskVocabulary
from saelab.tasks.task import Task


def reverse_outputs(tokens: Sequence[str]) -> list[str]:
    """The program `reverse`: position i outputs token n−1−i."""
    return list(tokens)[::-1]


def frac_prevs_outputs(tokens: Sequence[str]) -> list[float]:
    """The program `frac_prevs(tokens == "x")`: position i outputs the fraction of "x" in tokens[0..i]."""
    count, out = 0, []
    for i, token in enumerate(tokens):
        count += token == "x"
        out.append(count / (i + 1))
    return out


@dataclass(frozen=True)
class TracrProgram:
    """A tracr program saelab ships compiled: what it reads and what it computes."""

    name: str
    """Task registry name and tracr lib name ("reverse", "frac_prevs")."""
    model: str
    """The bundled model compiled from it."""
    vocab: tuple[str, ...]
    """Input tokens (ACDC's vocabularies); BOS is added by the compiler."""
    max_seq_len: int
    """Inputs the model was compiled for; every prompt has exactly this many tokens."""
    output_kind: Literal["categorical", "numerical"]
    """Categorical: one-hot over `vocab`; numerical: one number, read from the logit of " x"."""
    outputs: Callable[[Sequence[str]], list]
    """The program in plain Python: the output at each input position."""

    def __post_init__(self) -> None:
        if self.max_seq_len < 1:
            raise ValueError(f"program {self.name!r}: max_seq_len must be ≥ 1, got {self.max_seq_len}")
        if self.output_kind == "numerical" and "x" not in self.vocab:
            raise ValueError(
                f"program {self.name!r}: a numerical output is read from ' x', not in {self.vocab}"
            )


REVERSE_PROGRAM = TracrProgram("reverse", "tracr-reverse", ("1", "2", "3"), 5, "categorical", reverse_outputs)
FRAC_PREVS_PROGRAM = TracrProgram(
    "frac_prevs", "tracr-frac-prevs", ("w", "x", "y", "z"), 5, "numerical", frac_prevs_outputs
)
TRACR_PROGRAMS: dict[str, TracrProgram] = {p.name: p for p in (REVERSE_PROGRAM, FRAC_PREVS_PROGRAM)}


def tracr_prompt(program: TracrProgram, tokens: Sequence[str], other: Sequence[str]) -> Prompt:
    """The prompt "t1 t2 … tn"; the answer is the program's output at the last token. `other` is the input
    it is paired with (its output at the last token is the attribute "other_target")."""
    target = program.outputs(tokens)[-1]
    if program.output_kind == "categorical":
        candidates = tuple(f" {t}" for t in program.vocab)
        answer, wrong = f" {target}", tuple(c for c in candidates if c != f" {target}")
    else:
        candidates, answer, wrong = (" x",), " x", ()
    return Prompt(text=" ".join(tokens), slots={}, answer=answer, wrong=wrong, candidates=candidates,
                  attributes={"tokens": list(tokens), "target": target,
                              "other_target": program.outputs(other)[-1]})


def _sampler(program: TracrProgram):
    def sample_pairs(rng: random.Random, n: int, vocab: TaskVocabulary, tokenizer, corruption: str
                     ) -> list[PromptPair]:
        words, length = vocab.words["tokens"], program.max_seq_len
        pairs = []
        for _ in range(n):
            clean = [rng.choice(words) for _ in range(length)]
            corrupted = [rng.choice(words) for _ in range(length)]
            while program.outputs(corrupted)[-1] == program.outputs(clean)[-1]:
                corrupted = [rng.choice(words) for _ in range(length)]
            pairs.append(
                PromptPair(tracr_prompt(program, clean, corrupted), tracr_prompt(program, corrupted, clean))
            )
        return pairs

    return sample_pairs


def categorical_logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Float[Tensor, " batch"]:
    """logit(answer) − max logit of the program's other output tokens, at "end"."""
    end_logits = metrics.logits_at(logits, data.positions["end"])
    return metrics.logit_diff(end_logits, data.answer_ids, data.wrong_ids)


def categorical_accuracy(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Bool[Tensor, " batch"]:
    """The answer's logit beats every other output token's at "end"."""
    end_logits = metrics.logits_at(logits, data.positions["end"])
    return metrics.top1_among(end_logits, data.answer_ids, data.candidate_ids)


def _numerical_output(logits: Tensor, data: TaskDataset) -> Tensor:
    end_logits = metrics.logits_at(logits, data.positions["end"])
    return end_logits.gather(1, data.answer_ids[:, None].to(end_logits.device))[:, 0]


def _attribute(data: TaskDataset, name: str, like: Tensor) -> Tensor:
    return torch.tensor(data.attributes[name], dtype=like.dtype, device=like.device)


def numerical_progress(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Float[Tensor, " batch"]:
    """(output at "end" − the paired input's fraction) / (this input's fraction − the paired input's)."""
    value = _numerical_output(logits, data)
    other = _attribute(data, "other_target", value)
    return (value - other) / (_attribute(data, "target", value) - other)


def numerical_accuracy(
    logits: Float[Tensor, "batch pos d_vocab"], data: TaskDataset
) -> Bool[Tensor, " batch"]:
    """The output at "end" rounds to the true fraction: |error| < 1 / (2 · number of input tokens)."""
    value = _numerical_output(logits, data)
    n_tokens = data.positions["end"].to(value.device).to(value.dtype)  # BOS is position 0
    return (value - _attribute(data, "target", value)).abs() < 0.5 / n_tokens


def tracr_task(program: TracrProgram) -> Task:
    """The circuit task of `program`: the same word list under both vocabulary kinds."""
    vocabularies = {
        kind: TaskVocabulary(kind=kind, words={"tokens": program.vocab},
                             single_tokens=tuple(f" {t}" for t in program.vocab))
        for kind in ("canonical", "tiny")
    }
    categorical = program.output_kind == "categorical"
    return Task(
        name=program.name,
        vocabularies=vocabularies,
        corruptions=("random",),
        sample_pairs=_sampler(program),
        metric_fn=categorical_logit_diff if categorical else numerical_progress,
        accuracy_fn=categorical_accuracy if categorical else numerical_accuracy,
    )


REVERSE = tracr_task(REVERSE_PROGRAM)
FRAC_PREVS = tracr_task(FRAC_PREVS_PROGRAM)
