"""Task metrics against hand computations on hand-made logits."""

import math

import pytest
import torch

from saelab.tasks import get_task, gpt2_tokenizer
from saelab.tasks import metrics as m

VOCAB = 50257


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def _noise_logits(data, seed=0) -> torch.Tensor:
    """Random logits everywhere, so a metric reading the wrong position or token gives a different value."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(len(data), data.clean_tokens.shape[1], VOCAB, generator=generator)


def test_ioi_metric_and_accuracy_by_hand(gpt2):
    task = get_task("ioi")
    data = task.generate(gpt2, 4, seed=0)
    logits = _noise_logits(data)
    for i, (io, s) in enumerate(zip(data.attributes["IO"], data.attributes["S"], strict=True)):
        end = int(data.positions["end"][i])
        io_id, s_id = gpt2.convert_tokens_to_ids("Ġ" + io), gpt2.convert_tokens_to_ids("Ġ" + s)
        logits[i, end, io_id], logits[i, end, s_id] = [(2.0, -1.0), (0.5, 0.5), (-3.0, 1.0), (10.0, 9.75)][i]
    assert task.metric(logits, data).tolist() == pytest.approx([3.0, 0.0, -4.0, 0.25])
    assert task.accuracy(logits, data).tolist() == [True, False, False, True]


def test_greater_than_metric_matches_a_loop(gpt2):
    task = get_task("greater_than")
    data = task.generate(gpt2, 3, seed=2)
    logits = _noise_logits(data, seed=1)
    got = task.metric(logits, data)
    for i, yy in enumerate(data.attributes["YY"]):
        row = logits[i, int(data.positions["end"][i])].double()
        z = sum(math.exp(x) for x in row.tolist())
        diff = 0.0
        for k in range(100):
            p = math.exp(row[gpt2.convert_tokens_to_ids(f"{k:02d}")].item()) / z
            diff += p if k > yy else -p
        assert got[i].item() == pytest.approx(diff, rel=1e-4, abs=1e-7)


def test_greater_than_metric_extremes(gpt2):
    task = get_task("greater_than")
    data = task.generate(gpt2, 2, seed=0)
    logits = torch.zeros(len(data), data.clean_tokens.shape[1], VOCAB)
    later = [f"{data.attributes['YY'][0] + 1:02d}", "00"]  # row 0 sure of a later year, row 1 of "00"
    for i, token in enumerate(later):
        logits[i, int(data.positions["end"][i]), gpt2.convert_tokens_to_ids(token)] = 100.0
    assert task.metric(logits, data).tolist() == pytest.approx([1.0, -1.0], abs=1e-6)
    assert task.accuracy(logits, data).tolist() == [True, False]


def test_docstring_metric_is_answer_minus_best_wrong(gpt2):
    task = get_task("docstring")
    data = task.generate(gpt2, 3, seed=0)
    logits = _noise_logits(data, seed=3)
    expected, top1 = [], []
    for i, args in enumerate(data.attributes["args"]):
        row = logits[i, int(data.positions["end"][i])]
        scores = {a: row[gpt2.convert_tokens_to_ids("Ġ" + a)].item() for a in args}
        answer = data.attributes["answer"][i]
        expected.append(scores[answer] - max(v for a, v in scores.items() if a != answer))
        top1.append(max(scores, key=scores.get) == answer)
    assert task.metric(logits, data).tolist() == pytest.approx(expected, rel=1e-5)
    assert task.accuracy(logits, data).tolist() == top1


def test_logit_diff_and_top1_on_tiny_tensors():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 1.0, 1.0, 0.0]])
    answer = torch.tensor([1, 1])
    wrong = torch.tensor([[2, 3], [2, 3]])
    assert m.logit_diff(logits, answer, wrong).tolist() == [1.0, 0.0]
    assert m.top1_among(logits, answer, torch.tensor([[1, 2, 3], [1, 2, 3]])).tolist() == [True, False]


def test_metric_refuses_mismatched_inputs(gpt2):
    data = get_task("ioi").generate(gpt2, 2, seed=0)
    with pytest.raises(ValueError, match="do not match 2 prompts"):
        get_task("ioi").metric(torch.zeros(3, 5, VOCAB), data)
    with pytest.raises(ValueError, match="dataset is for task 'ioi'"):
        get_task("docstring").metric(torch.zeros(2, 5, VOCAB), data)
