"""Compile tracr's `reverse` and `frac_prevs` into saelab models with their circuits known by construction.

    python training/compile_tracr.py --tracr-python /work/tracr-venv/bin/python

Two steps, two Python environments, so the main install never needs JAX or Haiku:
1. `training/tracr_export.py` runs under a separate venv holding only the `tracr` extra of pyproject.toml
   (`python3 -m venv /work/tracr-venv && /work/tracr-venv/bin/pip install tracr-pypi`, which brings JAX and
   Haiku; the extra pins the versions that worked):
   it compiles each program with `tracr.compiler.compiling.compile_rasp_to_model` and writes the weights in
   TransformerLens layout (.npz), the residual-stream labels and tracr's own outputs on every input (.json).
2. This script (saelab's venv) builds a `HookedTransformer` from them (bidirectional attention, ReLU MLPs, no
   layer norm), an unembedding that copies the program's output dimensions onto the logits of the input
   tokens they name, and a word-level tokenizer whose ids are tracr's input encoding (BOS = <|endoftext|>).
   It checks the model against tracr and against the program in plain Python on every input, saves it to
   data/models/<model>, reads the circuit from the weights and writes data/circuits/<model>/<program>.json.

The circuit is read from the compiled weights: a head or MLP is a node when its weights are non-zero, it
reads the residual-stream spaces (tracr's labelled bases: "tokens", "indices", "length", ...) where its
W_Q / W_K / W_V / W_in rows are non-zero and writes those where its W_O / W_out columns are; an edge joins a
sender to a later receiver channel that reads a space the sender writes; only edges on a path from the
input to the logits are kept. Node and edge effects are then measured with saelab's own resample ablation
and path patching on the task's prompts, so the file also shows how strongly each part matters.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits.graph import Edge, Graph, Node, Receiver, input_node
from saelab.circuits.ground_truth import GroundTruth, GroundTruthRule, edge_effects
from saelab.circuits.io import ground_truth_path, save_ground_truth
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.runner import task_problem
from saelab.models import save_model
from saelab.models.tokenizer import BOS_TOKEN, word_level_tokenizer, wrap_tokenizer
from saelab.paths import data_dir
from saelab.tasks import TRACR_PROGRAMS, TracrProgram, get_task

EXPORT_SCRIPT = Path(__file__).with_name("tracr_export.py")
PAD_TOKEN = "<|pad|>"
"""tracr's compiler_pad; also the tokenizer's unknown word (its embedding is tracr's pad direction)."""
EFFECT_PROMPTS, EFFECT_SEED = 64, 1000
"""Prompts and seed of the measured node and edge effects stored beside the circuit."""
INERT = 1e-6
"""A circuit node whose measured resample-ablation effect is below this is listed as inert."""
WEIGHT_EPS = 1e-6
"""A weight row/column counts as reading/writing a residual dimension above this magnitude."""


class Check(NamedTuple):
    n_inputs: int
    """Every input of every length 1..max_seq_len."""
    agrees_with_tracr: float
    """Fraction of inputs where the converted model's decoded output equals tracr's at every position."""
    agrees_with_program: float
    """The same against the program in plain Python (saelab.tasks.TracrProgram.outputs)."""
    max_abs_error: float
    """Numerical outputs: max |model − tracr| over all positions; categorical: max |logit − one-hot|."""


def export(tracr_python: str, out_dir: Path) -> None:
    spec = {name: {"vocab": list(p.vocab), "max_seq_len": p.max_seq_len} for name, p in TRACR_PROGRAMS.items()}
    subprocess.run([tracr_python, str(EXPORT_SCRIPT), str(out_dir), json.dumps(spec)], check=True)


def token_vocab(meta: dict) -> dict[str, int]:
    """Tokenizer word → id, ids as tracr encodes its inputs (BOS and pad renamed)."""
    rename = {meta["bos"]: BOS_TOKEN, meta["pad"]: PAD_TOKEN}
    return {rename.get(word, word): i for word, i in meta["input_encoding"].items()}


def unembedding(meta: dict, vocab: dict[str, int]) -> np.ndarray:
    """W_U [d_model, d_vocab]: the output space's dimensions copied onto the logits of the tokens they name."""
    labels = meta["residual_labels"]
    w_u = np.zeros((len(labels), len(vocab)), dtype=np.float32)
    if meta["output_kind"] == "categorical":
        for value in meta["output_encoding"]:
            w_u[labels.index(f"{meta['rasp_label']}:{value}"), vocab[value]] = 1.0
    else:
        w_u[labels.index(meta["rasp_label"]), vocab["x"]] = 1.0
    return w_u


def build_model(name: str, weights: dict[str, np.ndarray], meta: dict) -> HookedTransformer:
    if meta["layer_norm"] or meta["causal"]:
        raise ValueError(f"{name}: expected a tracr model without layer norm and with bidirectional attention")
    vocab = token_vocab(meta)
    cfg = HookedTransformerConfig(
        n_layers=meta["n_layers"], d_model=len(meta["residual_labels"]), n_ctx=meta["max_seq_len"] + 1,
        d_head=meta["d_head"], n_heads=meta["n_heads"], d_mlp=meta["d_mlp"], d_vocab=len(vocab),
        act_fn=meta["activation"], normalization_type=None, attention_dir="bidirectional",
        positional_embedding_type="standard", default_prepend_bos=True, model_name=name, seed=0,
    )
    tokenizer = wrap_tokenizer(word_level_tokenizer(vocab, unknown=PAD_TOKEN), name=name)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    state = {k: torch.tensor(v) for k, v in weights.items()}
    state["unembed.W_U"] = torch.tensor(unembedding(meta, vocab))
    state["unembed.b_U"] = torch.zeros(len(vocab))
    params = dict(model.named_parameters())
    if set(params) != set(state):
        raise ValueError(f"{name}: weights do not cover the model: {sorted(set(params) ^ set(state))}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def decode(model: HookedTransformer, program: TracrProgram, tokens: list[str]) -> tuple[list, torch.Tensor]:
    """The converted model's output at each input position and the logits that decide it."""
    ids = model.tokenizer(" ".join(tokens), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids)[0, 1:]
    if program.output_kind == "numerical":
        return logits[:, model.tokenizer.convert_tokens_to_ids("x")].tolist(), logits
    out_ids = model.tokenizer.convert_tokens_to_ids(list(program.vocab))
    best = logits[:, out_ids].argmax(dim=-1)
    return [program.vocab[int(i)] for i in best], logits[:, out_ids]


def check(model: HookedTransformer, program: TracrProgram, meta: dict) -> Check:
    """Compare with tracr's outputs and with the plain-Python program on every input tracr was run on."""
    same_tracr = same_program = 0
    error = 0.0
    for tokens, tracr_out in zip(meta["inputs"], meta["outputs"], strict=True):
        ours, logits = decode(model, program, tokens)
        truth = program.outputs(tokens)
        if program.output_kind == "numerical":
            error = max(error, max(abs(a - b) for a, b in zip(ours, tracr_out, strict=True)))
            half_step = 0.5 / np.arange(1, len(tokens) + 1)
            same_tracr += bool(np.all(np.abs(np.array(ours) - tracr_out) < 1e-4))
            same_program += bool(np.all(np.abs(np.array(ours) - truth) < half_step))
        else:
            one_hot = torch.tensor([[float(v == t) for v in program.vocab] for t in truth])
            error = max(error, float((logits - one_hot).abs().max()))
            same_tracr += ours == tracr_out
            same_program += ours == truth
    n = len(meta["inputs"])
    return Check(n, same_tracr / n, same_program / n, error)


class Spaces(NamedTuple):
    reads: dict[Receiver, set[str]]
    writes: dict[Node, set[str]]


def _space(label: str) -> str:
    """tracr labels a residual dimension "space:value" (categorical) or "space" (numerical, "one")."""
    return label.split(":", 1)[0]


def _dims(matrix: torch.Tensor, dim: int, labels: list[str]) -> set[str]:
    """The spaces of the residual dimensions `matrix` touches along axis `dim` (the d_model axis)."""
    other = [d for d in range(matrix.ndim) if d != dim]
    used = matrix.abs().amax(dim=other) > WEIGHT_EPS if other else matrix.abs() > WEIGHT_EPS
    return {_space(labels[i]) for i in used.nonzero().flatten().tolist()}


def residual_spaces(model: HookedTransformer, labels: list[str]) -> Spaces:
    """Which tracr spaces every sender writes and every receiver reads, from the weights."""
    graph = Graph.from_config(model.cfg)
    writes: dict[Node, set[str]] = {input_node(): _dims(model.W_E, 1, labels) | _dims(model.W_pos, 1, labels)}
    reads: dict[Receiver, set[str]] = {}
    for node in graph.senders[1:]:
        block = model.blocks[node.layer]
        if node.kind == "head":
            writes[node] = _dims(block.attn.W_O[node.head], 1, labels)
            for channel, w in (("q", block.attn.W_Q), ("k", block.attn.W_K), ("v", block.attn.W_V)):
                reads[Receiver(node, channel)] = _dims(w[node.head], 0, labels)
        else:
            writes[node] = _dims(block.mlp.W_out, 1, labels)
            reads[Receiver(node)] = _dims(block.mlp.W_in, 0, labels)
    reads[graph.receivers[-1]] = _dims(model.W_U, 0, labels)
    return Spaces(reads, writes)


def construction_edges(model: HookedTransformer, spaces: Spaces) -> frozenset[Edge]:
    """Edges whose sender writes a space the receiver reads, on a path from the input to the logits."""
    graph = Graph.from_config(model.cfg)
    edges = {e for e in graph.edges if spaces.writes[e.sender] & spaces.reads[e.receiver]}
    live = {graph.receivers[-1].node}  # walk back from the logits
    for edge in sorted(edges, key=lambda e: e.receiver.node, reverse=True):
        if edge.receiver.node in live:
            live.add(edge.sender)
    reach = {input_node()}  # and forward from the input
    for edge in sorted(edges, key=lambda e: e.sender):
        if edge.sender in reach:
            reach.add(edge.receiver.node)
    return frozenset(e for e in edges if e.sender in reach and e.receiver.node in live)


def ground_truth(model: HookedTransformer, program: TracrProgram, labels: list[str]) -> GroundTruth:
    spaces = residual_spaces(model, labels)
    edges = construction_edges(model, spaces)
    nodes = frozenset(n for e in edges for n in (e.sender, e.receiver.node) if n.kind in ("head", "mlp"))
    problem = task_problem(get_task(program.name), model.tokenizer, EFFECT_PROMPTS, EFFECT_SEED, "tiny", 64)
    used = {e.sender for e in edges} | {e.receiver.node for e in edges}
    meta = {
        "kind": "by construction",
        "construction": (
            "compiled by tracr; nodes are the heads and MLPs with non-zero weights on a path from the input "
            "to the logits; an edge joins a sender to a later receiver channel reading a residual-stream "
            "space it writes (read from the compiled weights). The rule and the effects are saelab's "
            "patching measurements on these prompts, shown for reference; they did not choose the circuit."
        ),
        "spaces": {
            "writes": {n.name: sorted(spaces.writes[n]) for n in sorted(used) if n in spaces.writes},
            "reads": {r.name: sorted(s) for r, s in sorted(spaces.reads.items()) if s and r.node in used},
        },
        "prompts": {"seed": EFFECT_SEED, "n": EFFECT_PROMPTS, "vocabulary": "tiny", "corruption": "random"},
        "command": "python training/compile_tracr.py --tracr-python /work/tracr-venv/bin/python",
    }
    clean, corrupted = metric_means(model, problem)
    effects, path_effects = node_effects(model, problem, "resample"), edge_effects(model, problem)
    meta["inert_under_corruption"] = {
        "nodes": sorted(n.name for n in nodes if abs(effects[n]) < INERT),
        "edges": sorted(e.name for e in edges if abs(path_effects[e]) < INERT),
        "text": (
            "circuit nodes (edges) whose resample ablation (path patching) changes the metric by < 1e-6 on "
            f"these prompts: every prompt has {program.max_seq_len} tokens, so what depends only on the "
            "positions or the length is the same in the clean and the corrupted input, and no patching of it "
            "can show it (ACDC found the length nodes of reverse with zero ablation)"
        ),
    }
    return GroundTruth(program.name, program.model, nodes, edges, effects, path_effects,
                       clean, corrupted, GroundTruthRule(), meta)


def task_scores(model: HookedTransformer, program: TracrProgram, n: int = 1000, seed: int = 777) -> dict:
    task = get_task(program.name)
    data = task.generate(model.tokenizer, n, seed, vocabulary="tiny")
    with torch.no_grad():
        clean, corrupted = model(data.clean_tokens), model(data.corrupted_tokens)
    return {
        "n": n, "seed": seed,
        "accuracy": float(task.accuracy(clean, data).float().mean()),
        "metric_clean": float(task.metric(clean, data).mean()),
        "metric_corrupted": float(task.metric(corrupted, data).mean()),
    }


INERT_NOTE = """Every prompt has the same length, so the nodes that compute the length (and the indices derived
from it) carry the same values in a clean and a corrupted input: resample or mean ablation of them changes
nothing, and a patching method cannot find them. They are in the circuit because the program needs them for
inputs of other lengths; ACDC recovered them with zero ablation."""


def model_card(program: TracrProgram, meta: dict, result: Check, scores: dict, truth: GroundTruth) -> str:
    rows = "\n".join(
        f"| {name} | {', '.join(truth.meta['spaces']['writes'].get(name, []))} |"
        for name in ["input", *(n.name for n in sorted(truth.nodes))]
    )
    return f"""# {program.model}

tracr-compiled `{program.name}` (tracr's `lib.make_{program.name}`{'(rasp.tokens == "x")' if program.name == 'frac_prevs' else '(rasp.tokens)'}),
as in the ACDC paper (Conmy et al. 2023): vocabulary {{{', '.join(program.vocab)}}}, inputs of up to
{program.max_seq_len} tokens after BOS. {meta['n_layers']} layers, {meta['n_heads']} head(s) of
{meta['d_head']}, d_mlp {meta['d_mlp']}, d_model {len(meta['residual_labels'])} (one dimension per tracr basis
direction), ReLU MLPs, no layer norm, bidirectional attention. Not trained: the weights are the compiler's.

Made by `python training/compile_tracr.py --tracr-python /work/tracr-venv/bin/python` (tracr-pypi 1.0.0,
jax 0.10.2, dm-haiku 0.0.17, numpy 2.4.6 in a separate venv; see the `tracr` extra in pyproject.toml).

## Output
{'Categorical: the logits of the tokens ' + ', '.join(program.vocab) + ' are the one-hot output of `reverse` at each position (position i holds input token n−1−i); the other logits are 0.' if program.output_kind == 'categorical' else 'Numerical: the logit of `x` at position i is the fraction of `x` among input tokens 1..i; every other logit is 0.'}
Tokenizer: word-level, ids as tracr encodes inputs; BOS is `<|endoftext|>`, tracr's pad `<|pad|>` (also
the unknown word).

## Checks (every input of every length 1..{program.max_seq_len}: {result.n_inputs} inputs)

- Decoded output equal to tracr's at every position: {result.agrees_with_tracr:.4f}
- Equal to the program in plain Python (numerical: within half a step 1/(2i)): {result.agrees_with_program:.4f}
- Max |difference|: {result.max_abs_error:.2e} ({'model − tracr' if program.output_kind == 'numerical' else 'output logits − one-hot'})
- Task `{program.name}` on {scores['n']} fresh prompts (seed {scores['seed']}, length {program.max_seq_len}): accuracy
  {scores['accuracy']:.3f}; metric clean {scores['metric_clean']:.4f}, corrupted {scores['metric_corrupted']:.4f}

## Circuit (by construction; data/circuits/{program.model}/{program.name}.json)

Nodes {', '.join(n.name for n in sorted(truth.nodes))}; {len(truth.edges)} edges. Inert under the task's
corruption (resample-ablation or path-patching effect < 1e-6 on {EFFECT_PROMPTS} prompts): nodes
{', '.join(truth.meta['inert_under_corruption']['nodes']) or 'none'}; edges {', '.join(truth.meta['inert_under_corruption']['edges']) or 'none'}.
{INERT_NOTE if truth.meta['inert_under_corruption']['nodes'] else ''}

What each node writes:

| node | writes (tracr spaces) |
| --- | --- |
{rows}
"""


def compile_program(program: TracrProgram, export_dir: Path) -> None:
    meta = json.loads((export_dir / f"{program.name}.json").read_text())
    weights = dict(np.load(export_dir / f"{program.name}.npz"))
    model = build_model(program.model, weights, meta)
    result = check(model, program, meta)
    if result.agrees_with_tracr < 1 or result.agrees_with_program < 1:
        raise SystemExit(f"{program.model}: the converted model disagrees with tracr or the program: {result}")
    scores = task_scores(model, program)
    truth = ground_truth(model, program, meta["residual_labels"])
    directory = data_dir() / "models" / program.model
    save_model(model, directory, extra={
        "description": f"tracr-compiled {program.name}: {meta['n_layers']} layers, d_model "
                       f"{len(meta['residual_labels'])}, {meta['n_heads']} head(s), d_mlp {meta['d_mlp']}",
        "trained_on": "not trained: compiled by tracr (training/compile_tracr.py)",
        "program": program.name, "check": result._asdict(), "task_scores": scores,
        "residual_labels": meta["residual_labels"],
    })
    (directory / "MODEL_CARD.md").write_text(model_card(program, meta, result, scores, truth))
    save_ground_truth(truth, ground_truth_path(program.model, program.name))
    print(f"{program.model}: {result}; task {scores}; nodes {sorted(n.name for n in truth.nodes)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracr-python", help="python of a venv with tracr-pypi (runs tracr_export.py)")
    parser.add_argument("--export-dir", type=Path, help="reuse (or keep) tracr_export.py's output here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.export_dir or Path(tmp)
        if args.tracr_python:
            export(args.tracr_python, export_dir)
        elif args.export_dir is None:
            parser.error("give --tracr-python, or --export-dir holding tracr_export.py's output")
        for program in TRACR_PROGRAMS.values():
            compile_program(program, export_dir)
    print(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
