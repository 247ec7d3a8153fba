"""Compile tracr's `reverse` and `frac_prevs` programs and export their weights (run in the tracr venv).

This file imports tracr, JAX and numpy only; saelab and torch never see JAX. `compile_tracr.py` runs it as
`<tracr venv>/bin/python training/tracr_export.py OUT_DIR SPEC_JSON` and finishes the conversion in saelab's
venv; SPEC_JSON gives each program's input vocabulary and max_seq_len (saelab.tasks.TRACR_PROGRAMS owns them).
For each program it writes OUT_DIR/<program>.npz (TransformerLens-layout weights, as in ACDC's
`acdc/tracr_task/utils.py`) and OUT_DIR/<program>.json: the residual-stream labels, the input encoding, the
output dimensions, and tracr's own outputs on every input of every length 1..max_seq_len, which the
converted model is checked against.
"""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from tracr.compiler import compiling, lib
from tracr.rasp import rasp

BOS = "BOS"
PAD = "compiler_pad"


def programs() -> dict:
    """name → (RASP program from tracr's lib, output kind); `frac_prevs` counts the token "x"."""
    return {
        "reverse": (lib.make_reverse(rasp.tokens), "categorical"),
        "frac_prevs": (lib.make_frac_prevs(rasp.tokens == "x"), "numerical"),
    }


def _heads(w, pattern: str, n_heads: int) -> np.ndarray:
    """tracr's (d_model, n_heads * d_head) projection → TransformerLens' (n_heads, d_model, d_head)."""
    w = np.asarray(w)
    if pattern == "in":
        return w.reshape(w.shape[0], n_heads, -1).transpose(1, 0, 2)
    if pattern == "bias":
        return w.reshape(n_heads, -1)
    return w.reshape(n_heads, -1, w.shape[1])  # "out": (n_heads * d_head, d_model) → (n_heads, d_head, d_model)


def tl_weights(model) -> dict[str, np.ndarray]:
    """The compiled model's parameters under TransformerLens' state-dict names (no unembedding)."""
    p, cfg = model.params, model.model_config
    sd = {"embed.W_E": p["token_embed"]["embeddings"], "pos_embed.W_pos": p["pos_embed"]["embeddings"]}
    for layer in range(cfg.num_layers):
        pre = f"transformer/layer_{layer}"
        for tl_name, tracr_name in (("Q", "query"), ("K", "key"), ("V", "value")):
            sd[f"blocks.{layer}.attn.W_{tl_name}"] = _heads(p[f"{pre}/attn/{tracr_name}"]["w"], "in", cfg.num_heads)
            sd[f"blocks.{layer}.attn.b_{tl_name}"] = _heads(p[f"{pre}/attn/{tracr_name}"]["b"], "bias", cfg.num_heads)
        sd[f"blocks.{layer}.attn.W_O"] = _heads(p[f"{pre}/attn/linear"]["w"], "out", cfg.num_heads)
        sd[f"blocks.{layer}.attn.b_O"] = p[f"{pre}/attn/linear"]["b"]
        sd[f"blocks.{layer}.mlp.W_in"] = p[f"{pre}/mlp/linear_1"]["w"]
        sd[f"blocks.{layer}.mlp.b_in"] = p[f"{pre}/mlp/linear_1"]["b"]
        sd[f"blocks.{layer}.mlp.W_out"] = p[f"{pre}/mlp/linear_2"]["w"]
        sd[f"blocks.{layer}.mlp.b_out"] = p[f"{pre}/mlp/linear_2"]["b"]
    return {k: np.asarray(v, dtype=np.float32) for k, v in sd.items()}


def tracr_outputs(model, vocab: list, max_seq_len: int, kind: str) -> dict:
    """tracr's decoded output on every input of every length 1..max_seq_len (BOS excluded)."""
    inputs, outputs = [], []
    for length in range(1, max_seq_len + 1):
        for seq in itertools.product(vocab, repeat=length):
            decoded = model.apply([BOS, *seq]).decoded[1:]
            inputs.append([str(t) for t in seq])
            outputs.append([str(t) for t in decoded] if kind == "categorical" else [float(t) for t in decoded])
    return {"inputs": inputs, "outputs": outputs}


def export(name: str, vocab: list[str], max_seq_len: int, out_dir: Path) -> None:
    program, kind = programs()[name]
    model = compiling.compile_rasp_to_model(program, vocab=set(vocab), max_seq_len=max_seq_len,
                                            compiler_bos=BOS, compiler_pad=PAD)
    cfg = model.model_config
    labels = [str(label) for label in model.residual_labels]
    meta = {
        "program": name,
        "rasp_label": program.label,
        "output_kind": kind,
        "input_encoding": {str(k): int(v) for k, v in model.input_encoder.encoding_map.items()},
        "output_encoding": ({str(k): int(v) for k, v in model.output_encoder.encoding_map.items()}
                            if kind == "categorical" else None),
        "residual_labels": labels,
        "n_layers": cfg.num_layers, "n_heads": cfg.num_heads, "d_head": cfg.key_size,
        "d_mlp": cfg.mlp_hidden_size, "layer_norm": bool(cfg.layer_norm), "causal": bool(cfg.causal),
        "max_seq_len": max_seq_len, "bos": BOS, "pad": PAD,
        "activation": "relu",
        **tracr_outputs(model, vocab, max_seq_len, kind),
    }
    np.savez(out_dir / f"{name}.npz", **tl_weights(model))
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1))


def main() -> None:
    out_dir, spec = Path(sys.argv[1]), json.loads(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, facts in spec.items():
        export(name, facts["vocab"], facts["max_seq_len"], out_dir)


if __name__ == "__main__":
    main()
