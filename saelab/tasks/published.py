"""Published ground-truth circuits (GPT-2 small for IOI and greater-than, attn-only-4l for docstring)."""

import json

from saelab.paths import data_dir


def published_dir():
    return data_dir() / "circuits" / "published"


def published_circuit(task: str) -> dict:
    """The published circuit for `task` as stored in `data/circuits/published/{task}.json`.

    Keys: task, model, sources (citations), heads ({layer, head, class, position}), mlps, and
    `class_edges` (between head classes) or `edges` (between heads), plus notes.
    """
    path = published_dir() / f"{task}.json"
    if not path.is_file():
        known = sorted(p.stem for p in published_dir().glob("*.json"))
        raise ValueError(f"no published circuit for task {task!r}; known: {', '.join(known)}")
    circuit = json.loads(path.read_text(encoding="utf-8"))
    if circuit.get("task") != task:
        raise ValueError(f"{path} describes task {circuit.get('task')!r}, not {task!r}; restore it from git")
    return circuit


def published_heads(task: str) -> list[tuple[int, int]]:
    """The circuit's attention heads as (layer, head) pairs."""
    return [(h["layer"], h["head"]) for h in published_circuit(task)["heads"]]
