"""The tracr-compiled models: they load by name, compute their programs, carry their by-construction
circuits, and their tasks generate and score."""

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from saelab.circuits.graph import Graph
from saelab.circuits.io import ground_truth_path, load_ground_truth
from saelab.models import bundled_models, load_model
from saelab.tasks import TRACR_PROGRAMS, get_task, required_single_tokens

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = sorted(TRACR_PROGRAMS)
# From the compiler (and ACDC's acdc/tracr_task/utils.py edge lists, found with zero ablation).
EXPECTED_NODES = {"reverse": {"0.0", "mlp0", "mlp1", "mlp2", "3.0"}, "frac_prevs": {"mlp0", "1.0"}}
EXPECTED_EDGES = {
    "reverse": {"0.0->mlp0", "mlp0->mlp1", "mlp1->mlp2", "mlp2->3.0.q", "input->3.0.k", "input->3.0.v",
                "3.0->logits"},
    "frac_prevs": {"input->mlp0", "mlp0->1.0.v", "input->1.0.k", "1.0->logits"},
}


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {name: load_model(TRACR_PROGRAMS[name].model) for name in PROGRAMS}


def _compile_script():
    """training/compile_tracr.py is a script, not a package module: load it from its file."""
    spec = importlib.util.spec_from_file_location("compile_tracr", REPO / "training" / "compile_tracr.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_inputs(program, n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(program.vocab) for _ in range(rng.randint(1, program.max_seq_len))] for _ in range(n)]


def _outputs(model, program, inputs: list[list[str]]) -> list[list]:
    """The model's output at each input position, decoded as the model card describes (batched by length)."""
    out: list[list] = [[] for _ in inputs]
    for length in {len(t) for t in inputs}:
        rows = [i for i, t in enumerate(inputs) if len(t) == length]
        ids = model.tokenizer([" ".join(inputs[i]) for i in rows], return_tensors="pt")["input_ids"]
        assert ids.shape[1] == length + 1 and (ids[:, 0] == model.tokenizer.bos_token_id).all()
        with torch.no_grad():
            logits = model(ids)[:, 1:]
        if program.output_kind == "numerical":
            decoded = logits[:, :, model.tokenizer.convert_tokens_to_ids("x")].tolist()
        else:
            best = logits[:, :, model.tokenizer.convert_tokens_to_ids(list(program.vocab))].argmax(dim=-1)
            decoded = [[program.vocab[int(i)] for i in row] for row in best]
        for i, row in zip(rows, decoded, strict=True):
            out[i] = row
    return out


def _accuracy(model, program, inputs: list[list[str]]) -> float:
    """Fraction of inputs whose output is right at every position (numerical: within 1/(2i) at position i)."""
    right = 0
    for ours, tokens in zip(_outputs(model, program, inputs), inputs, strict=True):
        truth = program.outputs(tokens)
        if program.output_kind == "numerical":
            right += all(abs(a - b) < 0.5 / (i + 1) for i, (a, b) in enumerate(zip(ours, truth, strict=True)))
        else:
            right += ours == truth
    return right / len(inputs)


def test_models_are_registered_and_load_by_name(models):
    names = {m.name: m for m in bundled_models()}
    for name in PROGRAMS:
        program = TRACR_PROGRAMS[name]
        assert names[program.model].available
        cfg = models[name].cfg
        assert cfg.attention_dir == "bidirectional" and cfg.normalization_type is None
        assert cfg.n_ctx == program.max_seq_len + 1


@pytest.mark.parametrize("name", PROGRAMS)
def test_models_compute_their_programs_on_fresh_inputs(models, name):
    program = TRACR_PROGRAMS[name]
    assert _accuracy(models[name], program, _random_inputs(program, 200, seed=12345)) == 1.0
    if program.output_kind == "numerical":  # exact, not just rounding to the right count
        out = _outputs(models[name], program, [["x", "w", "x", "x"]])[0]
        assert out == pytest.approx([1, 0.5, 2 / 3, 0.75], abs=1e-5)
    else:
        assert _outputs(models[name], program, [["1", "3", "2", "2"]])[0] == ["2", "2", "3", "1"]


def test_plain_python_programs():
    assert TRACR_PROGRAMS["reverse"].outputs(["1", "3", "2"]) == ["2", "3", "1"]
    assert TRACR_PROGRAMS["frac_prevs"].outputs(["x", "w", "x", "y"]) == [1.0, 0.5, 2 / 3, 0.5]


@pytest.mark.parametrize("name", PROGRAMS)
def test_circuit_files_parse_and_match_the_weights(models, name):
    program, model = TRACR_PROGRAMS[name], models[name]
    path = ground_truth_path(program.model, program.name)
    truth = load_ground_truth(path, Graph.from_config(model.cfg))
    assert truth.meta["kind"] == "by construction" and truth.task == name and truth.model == program.model
    assert {n.name for n in truth.nodes} == EXPECTED_NODES[name]
    assert EXPECTED_EDGES[name] <= {e.name for e in truth.edges}
    # The edges are what the saved weights imply (re-read here from the model directory's labels).
    script = _compile_script()
    labels = json.loads((path.parents[2] / "models" / program.model / "config.json").read_text())["saelab"][
        "residual_labels"]
    spaces = script.residual_spaces(model, labels)
    assert script.construction_edges(model, spaces) == truth.edges


@pytest.mark.parametrize("name", PROGRAMS)
def test_every_circuit_node_is_needed_under_zero_ablation(models, name):
    """Zeroing any circuit node breaks the program; zeroing a node outside it changes nothing."""
    program, model = TRACR_PROGRAMS[name], models[name]
    truth = load_ground_truth(ground_truth_path(program.model, name), Graph.from_config(model.cfg))
    inputs = _random_inputs(program, 100, seed=7)
    for node in Graph.from_config(model.cfg).senders[1:]:
        hook = (
            f"blocks.{node.layer}.hook_mlp_out" if node.kind == "mlp" else f"blocks.{node.layer}.attn.hook_z"
        )

        def zero(x, hook):
            return torch.zeros_like(x)

        with model.hooks(fwd_hooks=[(hook, zero)]):
            accuracy = _accuracy(model, program, inputs)
        assert (accuracy < 0.5) if node in truth.nodes else (accuracy == 1.0), (node.name, accuracy)


@pytest.mark.parametrize("name", PROGRAMS)
def test_tasks_generate_and_score_clean_one_corrupted_apart(models, name):
    program, model, task = TRACR_PROGRAMS[name], models[name], get_task(name)
    data = task.generate(model.tokenizer, 100, seed=3, vocabulary="tiny")
    assert data.clean_tokens.shape == (100, program.max_seq_len + 1)
    assert (data.positions["end"] == program.max_seq_len).all()
    assert all(p.clean.attributes["target"] != p.corrupted.attributes["target"] for p in data.pairs)
    assert all(p.clean.attributes["other_target"] == p.corrupted.attributes["target"] for p in data.pairs)
    with torch.no_grad():
        clean, corrupted = model(data.clean_tokens), model(data.corrupted_tokens)
    assert task.accuracy(clean, data).all() and not task.accuracy(corrupted, data).any()
    low = -1.0 if program.output_kind == "categorical" else 0.0
    assert task.metric(clean, data) == pytest.approx(torch.ones(100), abs=1e-4)
    assert task.metric(corrupted, data) == pytest.approx(torch.full((100,), low), abs=1e-4)


def test_frac_prevs_metric_by_hand(models):
    """Progress from the corrupted fraction to the clean one, on hand-made logits."""
    task, model = get_task("frac_prevs"), models["frac_prevs"]
    data = task.generate(model.tokenizer, 4, seed=0, vocabulary="tiny")
    x_id = model.tokenizer.convert_tokens_to_ids("x")
    target = torch.tensor(data.attributes["target"])
    other = torch.tensor(data.attributes["other_target"])
    logits = torch.zeros(4, data.clean_tokens.shape[1], model.cfg.d_vocab_out)
    logits[:, -1, x_id] = (target + other) / 2  # halfway
    assert task.metric(logits, data) == pytest.approx(torch.full((4,), 0.5), abs=1e-6)
    n_tokens = TRACR_PROGRAMS["frac_prevs"].max_seq_len
    logits[:, -1, x_id] = target + 0.4 / n_tokens  # rounds to the right count of "x"
    assert task.accuracy(logits, data).all()
    logits[:, -1, x_id] = target - 0.6 / n_tokens
    assert not task.accuracy(logits, data).any()


def test_tracr_words_are_not_required_of_the_bundled_tokenizer():
    assert not {" w", " x", " y", " z"} & set(required_single_tokens("tiny"))
    with pytest.raises(ValueError, match="task 'reverse' has no training texts"):
        get_task("reverse").corpus_texts(2, seed=0)
