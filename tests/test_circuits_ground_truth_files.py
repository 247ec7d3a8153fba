"""The committed ground-truth files regenerate: same prompts (seed, n) → same effects and the same circuit."""

import json

import pytest
import torch

from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import edge_effects
from saelab.circuits.io import load_ground_truth
from saelab.circuits.patching import node_effects
from saelab.circuits.runner import task_problem
from saelab.models import bundled_models, load_model
from saelab.paths import data_dir
from saelab.tasks import get_task

FILES = sorted(p for p in (data_dir() / "circuits").glob("saelab-tiny*/*.json"))


def _available(model: str) -> bool:
    return any(m.name == model and m.available for m in bundled_models())


def _smallest() -> list:
    """The committed file with the fewest prompt tokens (one regeneration keeps the test short)."""
    return sorted(FILES, key=lambda p: (json.loads(p.read_text())["prompts"]["n"], p.name))[:1]


@pytest.mark.slow
@pytest.mark.parametrize("path", _smallest(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_ground_truth_regenerates(path):
    data = json.loads(path.read_text())
    if not _available(data["model"]):
        pytest.skip(f"model {data['model']} is not available")
    torch.set_num_threads(1)
    model = load_model(data["model"])
    graph = Graph.from_config(model.cfg)
    truth = load_ground_truth(path, graph)
    prompts = data["prompts"]
    problem = task_problem(get_task(data["task"]), model.tokenizer, prompts["n"], prompts["seed"],
                           prompts["vocabulary"], 32)
    nodes = node_effects(model, problem)
    tolerance = 1e-3 * max(abs(truth.gap), 1e-3)
    for node, value in truth.node_effects.items():
        assert nodes[node] == pytest.approx(value, abs=tolerance), node.name
    gap = abs(truth.gap)
    kept = {n for n, v in nodes.items() if abs(v) >= truth.rule.node_fraction * gap}
    assert kept <= truth.nodes
    # the heads' direct paths (edges into the logits) regenerate too
    direct = [e for e in truth.edge_effects if e.receiver.node.kind == "logits"]
    for edge, value in edge_effects(model, problem, direct).items():
        assert value == pytest.approx(truth.edge_effects[edge], abs=tolerance), edge.name


def test_committed_ground_truth_files_parse():
    for path in FILES:
        data = json.loads(path.read_text())
        assert {"rule", "prompts", "command", "agreement", "node_effects", "edge_effects"} <= set(data), path
        assert data["command"].startswith("python evals/ground_truth.py"), path
