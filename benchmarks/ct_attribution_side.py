"""The circuit-tracer half of bench_attribution.py, run by circuit-tracer's own interpreter (a separate venv:
circuit-tracer 0.5 needs transformer-lens 2.x and transformers <= 4.57, saelab runs on transformer-lens 3.9).

    <ct-venv>/bin/python benchmarks/ct_attribution_side.py EXCHANGE_DIR

Reads from EXCHANGE_DIR (written by bench_attribution.py): request.json (the saved model's directory, the token
ids, the logit targets, batch size, threads) and transcoders.safetensors (per layer, in circuit-tracer's layout:
W_enc (d_sae, d_model), b_enc with saelab's b_dec shift folded in, W_dec, b_dec, k, optional W_skip). Loads the
same weights into circuit-tracer's TransformerLensReplacementModel and TranscoderSet, runs `attribute`, and
writes ct_graph.safetensors (adjacency, active_features, activation values) and ct_result.json (seconds,
graph scores). This file imports nothing from saelab.
"""

import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class ReluTopK(nn.Module):
    """saelab's TopK activation: the k largest pre-activations, then ReLU (circuit-tracer's TopK skips the ReLU)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, indices = x.topk(self.k, dim=-1)
        return torch.zeros_like(x).scatter(-1, indices, values.relu())


def build_model(request: dict, tensors: dict):
    from transformer_lens import HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast

    from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
    from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet

    model_dir = Path(request["model_dir"])
    saved = json.loads((model_dir / "config.json").read_text())["hooked_transformer_config"]
    known = HookedTransformerConfig.__dataclass_fields__
    cfg = HookedTransformerConfig(**{k: v for k, v in saved.items() if k in known}, device="cpu")
    model = TransformerLensReplacementModel(cfg, move_to_device=False)
    # every parameter from the file; buffers (causal masks) as transformer-lens 2.x builds them (3.9 saves them empty)
    weights = load_file(str(model_dir / "model.safetensors"))
    params = dict(model.named_parameters())
    missing = set(params) - set(weights)
    if missing:
        raise SystemExit(f"the saved model lacks parameters {sorted(missing)[:5]}")
    model.load_state_dict({k: v for k, v in weights.items() if k in params}, strict=False)
    # circuit-tracer reads only decode, all_special_ids and vocab_size; the token ids come from the request
    model.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"),
                                              bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                              pad_token="<|endoftext|>")
    layers = {}
    for layer in range(cfg.n_layers):
        W_enc = tensors[f"{layer}.W_enc"]
        skip = f"{layer}.W_skip" in tensors
        tc = SingleLayerTranscoder(cfg.d_model, W_enc.shape[0], ReluTopK(int(tensors[f"{layer}.k"])), layer,
                                   skip_connection=skip, device=torch.device("cpu"), dtype=torch.float32)
        state = {name: tensors[f"{layer}.{name}"] for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if skip:
            state["W_skip"] = tensors[f"{layer}.W_skip"]
        tc.load_state_dict(state, strict=True)
        layers[layer] = tc
    transcoders = TranscoderSet(layers, feature_input_hook="hook_resid_mid", feature_output_hook="hook_mlp_out")
    model._configure_replacement_model(transcoders)
    return model


def main(exchange: Path) -> None:
    from circuit_tracer import attribute
    from circuit_tracer.graph import compute_graph_scores

    request = json.loads((exchange / "request.json").read_text())
    torch.set_num_threads(request["threads"])
    model = build_model(request, load_file(str(exchange / "transcoders.safetensors")))
    tokens = torch.tensor(request["tokens"])
    targets = torch.tensor(request["logit_tokens"])
    times = []
    for _ in range(request["repeats"]):
        start = time.perf_counter()
        graph = attribute(tokens, model, attribution_targets=targets, batch_size=request["ct_batch_size"])
        times.append(time.perf_counter() - start)
    replacement, completeness = compute_graph_scores(graph)
    save_file({"adjacency": graph.adjacency_matrix.float().contiguous(),
               "active_features": graph.active_features.contiguous(),
               "activation_values": graph.activation_values.float().contiguous()}, str(exchange / "ct_graph.safetensors"))
    result = {"seconds": times, "replacement_score": replacement, "completeness_score": completeness,
              "circuit_tracer_version": version("circuit-tracer"), "transformer_lens_version": version("transformer-lens")}
    (exchange / "ct_result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
