"""JSON-lines and row round trips, and the published circuits."""

import json

import pytest
import torch

from saelab.tasks import (
    dataset_from_jsonl,
    dataset_rows,
    dataset_to_jsonl,
    get_task,
    gpt2_tokenizer,
    list_tasks,
    published_circuit,
    published_heads,
)


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.mark.parametrize("task", list_tasks())
def test_jsonl_round_trip(gpt2, tmp_path, task):
    data = get_task(task).generate(gpt2, 5, seed=7)
    path = dataset_to_jsonl(data, tmp_path / "sub" / f"{task}.jsonl")
    back = dataset_from_jsonl(path, gpt2)
    assert back.pairs == data.pairs
    assert (back.task, back.corruption) == (data.task, data.corruption)
    assert back.clean_prompts == data.clean_prompts and back.corrupted_prompts == data.corrupted_prompts
    assert back.attributes == data.attributes
    for name in ("clean_tokens", "corrupted_tokens", "answer_ids", "wrong_ids", "candidate_ids"):
        assert torch.equal(getattr(back, name), getattr(data, name)), name
    assert back.positions.keys() == data.positions.keys()
    assert all(torch.equal(back.positions[k], data.positions[k]) for k in data.positions)


def test_rows_are_flat_json_with_positions(gpt2):
    data = get_task("ioi").generate(gpt2, 3, seed=0)
    rows = dataset_rows(data)
    assert [r["index"] for r in rows] == [0, 1, 2]
    row = json.loads(json.dumps(rows[1]))
    assert row["task"] == "ioi" and row["corruption"] == "ABC"
    assert (
        row["clean_prompt"] == data.clean_prompts[1] and row["clean_answer"] == " " + data.attributes["IO"][1]
    )
    assert row["clean_attributes"]["S"] == data.attributes["S"][1]
    assert row["positions"] == {k: int(v[1]) for k, v in data.positions.items()}


def test_bad_files_are_refused(gpt2, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dataset_from_jsonl(tmp_path / "missing.jsonl", gpt2)
    (tmp_path / "bad.jsonl").write_text('{"task": "ioi"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2 is not valid JSON"):
        dataset_from_jsonl(tmp_path / "bad.jsonl", gpt2)
    (tmp_path / "short.jsonl").write_text('{"task": "ioi", "corruption": "ABC", "index": 0}\n')
    with pytest.raises(ValueError, match="not a task dataset file"):
        dataset_from_jsonl(tmp_path / "short.jsonl", gpt2)


def test_published_circuits():
    ioi = published_circuit("ioi")
    assert len(ioi["heads"]) == 26 and ioi["model"] == "gpt2"
    assert {(9, 9), (10, 0), (9, 6), (7, 3), (2, 2), (4, 11)} <= set(published_heads("ioi"))
    classes = {h["class"] for h in ioi["heads"]}
    assert {e["src"] for e in ioi["class_edges"]} <= classes | {"input"}
    gt = published_circuit("greater_than")
    assert set(published_heads("greater_than")) == {
        (0, 1),
        (0, 3),
        (0, 5),
        (5, 5),
        (6, 1),
        (6, 9),
        (7, 10),
        (8, 11),
        (9, 1),
    }
    assert [m["layer"] for m in gt["mlps"]] == [0, 1, 2, 3, 8, 9, 10, 11]
    doc = published_circuit("docstring")
    assert published_heads("docstring") == [(0, 5), (1, 2), (1, 4), (2, 0), (3, 0), (3, 6)]
    heads = {f"{h['layer']}.{h['head']}" for h in doc["heads"]}
    assert {e["src"] for e in doc["edges"]} <= heads | {"input"} and {
        e["dst"] for e in doc["edges"]
    } <= heads | {"output"}
    assert all(c["sources"] for c in (ioi, gt, doc))
    with pytest.raises(ValueError, match="no published circuit for task 'induction'"):
        published_circuit("induction")
