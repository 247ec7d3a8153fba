"""Feature graphs in a workspace: resolve the dictionaries a user names (stored sae_ids or SAE directories),
build a sparse feature circuit of a task or an attribution graph of one prompt, and store it (with a `saes`
row for every dictionary it used, so the app can link its latents and load them).

Bad input is refused before the model loads: an unknown dictionary, a dictionary for another model, an SAE
where a transcoder is needed, an empty prompt, an unknown task.
"""

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.errors import SaelabError
from saelab.workspace import Workspace


class DictionaryError(SaelabError):
    """A dictionary named on the command line that cannot be used."""


class Dictionary(NamedTuple):
    """A dictionary to build a graph over: its id in the store, its directory and the loaded
    SAE/transcoder."""

    sae_id: str
    path: Path
    sae: object
    """The loaded `saelab.sae.SAE`."""


class GraphRun(NamedTuple):
    graph_id: str
    graph: object
    """The stored `FeatureGraph`."""
    seconds: float
    """Time to build the graph (model and dictionaries already loaded)."""


def _directory_of(workspace: Workspace, spec: str) -> tuple[str, Path]:
    """(sae_id, directory) of a stored sae_id, or of a directory holding a saved SAE."""
    from saelab.db import queries as q

    if workspace.db_path.is_file():
        row = q.get_sae(ResultsStore(workspace.db_path), spec)
        if row is not None:
            path = Path(row.path) if Path(row.path).is_absolute() else workspace.absolute(row.path)
            return spec, path
    path = Path(spec).expanduser()
    if (path / "cfg.json").is_file():
        return path.resolve().name, path.resolve()
    raise DictionaryError(f"unknown dictionary {spec!r}: it is neither an SAE id in {workspace.db_path} "
                          "nor a directory holding a saved SAE (cfg.json); train one with `saelab train` or "
                          "pass its directory")


def resolve_dictionaries(workspace: Workspace, specs: Sequence[str],
                         transcoders: bool = False) -> list[Dictionary]:
    """Load every dictionary in `specs` (ids or directories); with `transcoders`, each must be a
    transcoder."""
    from saelab.sae import load_sae

    if not specs:
        raise DictionaryError("no dictionaries given; pass sae ids or SAE directories, comma-separated")
    found = []
    for spec in specs:
        sae_id, path = _directory_of(workspace, spec)
        try:
            sae = load_sae(path)
        except ValueError as exc:
            raise DictionaryError(f"dictionary {spec!r}: {exc}") from None
        if transcoders and not sae.cfg.is_transcoder:
            raise DictionaryError(
                f"dictionary {spec!r} is not a transcoder (it reconstructs its own input "
                f"{sae.cfg.hook_site!r}); pass transcoders, e.g. trained with "
                "`saelab train --arch transcoder --sites L.resid_mid:L.mlp_out`")
        found.append(Dictionary(sae_id, path, sae))
    ids = [d.sae_id for d in found]
    if len(set(ids)) != len(ids):
        raise DictionaryError(f"a dictionary is named twice in {list(specs)}; name each once")
    return found


def model_of(dictionaries: Sequence[Dictionary], model: str | None) -> str:
    """The model to run: `model` if given, else the one the dictionaries were trained on; refuses a mix."""
    trained_on = {d.sae.cfg.model_name for d in dictionaries if d.sae.cfg.model_name}
    if model is None:
        if len(trained_on) != 1:
            raise DictionaryError(f"the dictionaries name models {sorted(trained_on) or 'none'}; "
                                  "pass --model")
        return trained_on.pop()
    other = sorted(trained_on - {model})
    if other:
        raise DictionaryError(f"dictionaries trained on {other} cannot be used on model {model!r}; pass "
                              "dictionaries of that model or pick it with --model")
    return model


def _store(workspace: Workspace, graph, dictionaries: Sequence[Dictionary], kind: str, name: str) -> str:
    from saelab.feature_circuits.storage import save_feature_graph
    from saelab.workflows.eval import stored_path
    from saelab.workflows.storage import ensure_sae_row

    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run(kind, name, {"dictionaries": [d.sae_id for d in dictionaries], **graph.params})
    try:
        for d in dictionaries:
            ensure_sae_row(store, d.sae, d.sae_id, stored_path(workspace, d.path), run_id)
        graph_id = save_feature_graph(store, graph, run_id)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done", f"graph {graph_id}: {len(graph.nodes)} nodes, {len(graph.edges)} edges")
    return graph_id


def feature_circuit_in_workspace(workspace: Workspace, task: str, dictionaries: Sequence[Dictionary],
                                 model_name: str, n_prompts: int, seed: int, config, vocabulary: str = "tiny",
                                 model=None) -> GraphRun:
    """The sparse feature circuit of `task` on `n_prompts` prompt pairs (seed `seed`) over `dictionaries`
    (config: a `FeatureCircuitConfig`), stored in the workspace."""
    from saelab.circuits.problem import problem_from_task
    from saelab.feature_circuits.sparse import feature_circuit
    from saelab.models import load_model
    from saelab.tasks import get_task

    task_spec = get_task(task)
    model = model if model is not None else load_model(model_name)
    dataset = task_spec.generate(model.tokenizer, n_prompts, seed, vocabulary=vocabulary)
    # as the circuit runner's task_problem, keeping the text
    problem = problem_from_task(task_spec, dataset, 16)
    start = time.perf_counter()
    graph = feature_circuit(model, problem, {d.sae_id: d.sae for d in dictionaries}, config)
    seconds = time.perf_counter() - start
    params = {**graph.params, "seed": seed, "vocabulary": vocabulary, "seconds": seconds,
              "example_prompt": dataset.clean_prompts[0]}
    graph = dataclasses.replace(graph, model=model_name, params=params)
    return GraphRun(_store(workspace, graph, dictionaries, "feature_circuit", f"{task}/{model_name}"), graph,
                    seconds)


def attribution_graph_in_workspace(workspace: Workspace, prompt: str, transcoders: Sequence[Dictionary],
                                   model_name: str, config, model=None) -> GraphRun:
    """The attribution graph of `prompt` through `transcoders` (config: an `AttributionConfig`), stored."""
    from saelab.app_support.prompts import prompt_tokens
    from saelab.feature_circuits.attribution import attribution_graph
    from saelab.models import load_model

    model = model if model is not None else load_model(model_name)
    tokens = prompt_tokens(model, prompt)  # refuses text over the model's context
    start = time.perf_counter()
    graph = attribution_graph(model, tokens, {d.sae_id: d.sae for d in transcoders}, config)
    seconds = time.perf_counter() - start
    graph = dataclasses.replace(graph, model=model_name, prompt=prompt,
                                params={**graph.params, "seconds": seconds})
    return GraphRun(_store(workspace, graph, transcoders, "attribution_graph",
                           f"{prompt[:40]!r}/{model_name}"),
                    graph, seconds)
