"""Where ground-truth circuit files live and how they are read and written (the only file I/O here)."""

import json
from pathlib import Path

from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import GroundTruth, from_json, to_json
from saelab.paths import data_dir


def ground_truth_path(model: str, task: str, root: Path | None = None) -> Path:
    """data/circuits/{model}/{task}.json (model names with slashes are flattened)."""
    return (root or data_dir() / "circuits") / model.replace("/", "__") / f"{task}.json"


def ground_truth_kind(model: str, task: str, root: Path | None = None) -> str:
    """What the model's ground-truth circuit for `task` is made of: the file's "kind" ("by construction"),
    "patching" for files written by evals/ground_truth.py (they carry no kind), or "" where there is none."""
    path = ground_truth_path(model, task, root)
    return json.loads(path.read_text(encoding="utf-8")).get("kind", "patching") if path.is_file() else ""


def save_ground_truth(truth: GroundTruth, path: Path) -> Path:
    """Write atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_json(truth), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_ground_truth(path: Path, graph: Graph) -> GroundTruth:
    """Read a ground-truth file for a model with `graph`; ValueError naming the file if it does not fit."""
    if not path.is_file():
        raise ValueError(f"no ground-truth file at {path}; generate it with `python evals/ground_truth.py`")
    try:
        return from_json(json.loads(path.read_text(encoding="utf-8")), graph)
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"ground-truth file {path} is malformed ({exc}); regenerate it") from None
    except ValueError as exc:
        raise ValueError(f"ground-truth file {path} does not fit this model: {exc}") from None


def find_ground_truth(model: str, task: str, graph: Graph) -> GroundTruth | None:
    """The bundled ground truth for (model, task), or None if there is none."""
    path = ground_truth_path(model, task)
    return load_ground_truth(path, graph) if path.is_file() else None
