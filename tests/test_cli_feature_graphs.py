"""`saelab circuits --features` and `saelab graph` end to end on saelab-tiny (untrained dictionaries: this
tests the wiring, storage and summary, not the graphs' content, which tests/test_feature_circuits_sparse.py
and tests/test_feature_attribution.py check), and their one-line refusals of bad input before the model
loads."""

import pytest

from saelab.cli import main
from saelab.db import ResultsStore
from saelab.db import queries as q
from saelab.feature_circuits.storage import load_feature_graph
from saelab.sae import SAE, SAEConfig, save_sae

PROMPT = "The war lasted from the year 1732 to the year 17"


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    """Directories of untrained saelab-tiny dictionaries: a transcoder per block (resid_mid -> mlp_out), an
    SAE on 1.resid_post, and an SAE trained for another model."""
    root = tmp_path_factory.mktemp("dicts")
    for layer in range(4):
        save_sae(SAE(SAEConfig("topk", d_in=256, d_sae=32, k=4, hook_site=f"{layer}.resid_mid",
                               output_site=f"{layer}.mlp_out", model_name="saelab-tiny",
                               normalize_activations=False, seed=layer)), root / f"tc{layer}")
    save_sae(SAE(SAEConfig("topk", d_in=256, d_sae=32, k=4, hook_site="1.resid_post",
                           model_name="saelab-tiny", normalize_activations=False)), root / "sae1")
    save_sae(SAE(SAEConfig("topk", d_in=64, d_sae=32, k=4, hook_site="1.resid_post",
                           model_name="saelab-random", normalize_activations=False)), root / "other-model")
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the error must come first."""
    import saelab.models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(saelab.models, "load_model", refuse)


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("argv, code, needles", [
    (["circuits", "--features", "--task", "greater_than", "--dicts", "no-such-sae"], 1,
     ("'no-such-sae'", "saelab train")),
    (["circuits", "--features", "--task", "greater_than"], 2, ("--dicts",)),
    (["circuits", "--task", "greater_than", "--dicts", "x"], 2, ("--features",)),
    (["circuits", "--features", "--task", "no_task", "--dicts", "x"], 2, ("no_task",)),
    (["circuits", "--features", "--task", "greater_than", "--dicts", "x", "--node-threshold", "-1"], 2,
     ("threshold",)),
    (["graph", "--prompt", "   ", "--transcoders", "x"], 2, ("--prompt is empty",)),
    (["graph", "--prompt", PROMPT, "--transcoders", "nope"], 1, ("'nope'",)),
    (["graph", "--prompt", PROMPT, "--transcoders", "x", "--node-threshold", "2"], 2, ("node_threshold",)),
])
def test_bad_input_is_one_line_before_the_model_loads(tmp_path, capsys, no_model, argv, code, needles):
    assert main([*argv, "--workspace", str(tmp_path)]) == code
    _one_line_error(capsys, *needles)
    assert not (tmp_path / "saelab.duckdb").exists()  # nothing was written


def test_an_sae_given_as_a_transcoder_is_refused_by_name(tmp_path, capsys, no_model, dicts):
    argv = ["graph", "--prompt", PROMPT, "--transcoders", f"{dicts / 'tc0'},{dicts / 'sae1'}"]
    assert main([*argv, "--workspace", str(tmp_path)]) == 1
    _one_line_error(capsys, f"'{dicts / 'sae1'}' is not a transcoder", "--arch transcoder")


def test_dictionaries_of_another_model_are_refused(tmp_path, capsys, no_model, dicts):
    argv = ["circuits", "--features", "--task", "greater_than", "--dicts",
            f"{dicts / 'sae1'},{dicts / 'other-model'}"]
    assert main([*argv, "--workspace", str(tmp_path)]) == 1
    _one_line_error(capsys, "saelab-random", "--model")
    argv = ["circuits", "--features", "--task", "greater_than", "--dicts", str(dicts / "sae1"), "--model",
            "gpt2"]
    assert main([*argv, "--workspace", str(tmp_path)]) == 1
    _one_line_error(capsys, "'gpt2'")


@pytest.mark.slow
def test_feature_circuit_and_attribution_graph_are_stored_and_summarised(tmp_path, capsys, dicts):
    workspace = tmp_path / "ws"
    argv = ["circuits", "--features", "--task", "greater_than", "--dicts",
            f"{dicts / 'sae1'},{dicts / 'tc2'}",
            "--prompts", "4", "--node-method", "attrib", "--workspace", str(workspace)]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "nodes:" in out and "edges:" in out and "faithfulness" in out and "completeness" in out
    store = ResultsStore(workspace / "saelab.duckdb")
    (circuit_id,) = q.list_feature_graphs(store)["graph_id"]
    assert circuit_id in out
    circuit = load_feature_graph(store, circuit_id)
    assert (circuit.kind, circuit.model, circuit.task) == ("feature_circuit", "saelab-tiny", "greater_than")
    assert circuit.dictionaries == ("sae1", "tc2") and circuit.params["n_prompts"] == 4
    assert circuit.params["example_prompt"].startswith("The ")  # a clean prompt: the app edits latents on it
    assert {"sae1", "tc2"} <= set(q.list_saes(store)["sae_id"])  # the app can load them to ablate/steer

    transcoders = ",".join(str(dicts / f"tc{layer}") for layer in range(4))
    argv = ["graph", "--prompt", PROMPT, "--transcoders", transcoders, "--workspace", str(workspace)]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    graph_ids = q.list_feature_graphs(store)["graph_id"].tolist()
    assert len(graph_ids) == 2 and graph_ids[0] in out and "replacement_score" in out
    graph = load_feature_graph(store, graph_ids[0])
    assert graph.kind == "attribution_graph" and graph.prompt == PROMPT and graph.model == "saelab-tiny"
    assert sum(n.kind == "token" for n in graph.nodes) <= len(PROMPT.split()) + 12 and graph.edges
    runs = store.runs()
    assert set(runs["kind"]) == {"feature_circuit", "attribution_graph"} and set(runs["status"]) == {"done"}
