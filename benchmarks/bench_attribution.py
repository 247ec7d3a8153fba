"""Attribution graph of one 20-token prompt on saelab-tiny with one transcoder per MLP: saelab's time, and
circuit-tracer 0.5's time and adjacency on the same model, transcoders, prompt and logit targets.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_attribution.py                      # random transcoders
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_attribution.py --transcoders D0 D1 D2 D3   # saved ones

circuit-tracer runs in its own interpreter (`--ct-python`, default $SAELAB_CT_PYTHON or /work/ct-venv/bin/python;
it needs transformer-lens 2.x, saelab 3.9) through benchmarks/ct_attribution_side.py; when that interpreter
cannot import circuit_tracer its columns are skipped. Both sides use `--threads` threads and are timed over
`--repeats` runs (median). saelab's time is `attribute` (the dense graph, what circuit-tracer's `attribute`
returns) and, separately, `attribution_graph` (dense graph + pruning + FeatureGraph). Writes
benchmarks/results/bench_attribution.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from saelab.feature_circuits.attribution import AttributionConfig, attribute, attribution_graph, encoder_affine, \
    graph_scores
from saelab.models import load_model
from saelab.models.registry import get_bundled
from saelab.sae import SAE, SAEConfig
from saelab.sae.io import load_sae

PROMPT = "Then, Mary and Kevin had a lot of fun at the garden. Kevin gave a ring to"
RESULTS = Path(__file__).parent / "results" / "bench_attribution.json"
CT_SIDE = Path(__file__).parent / "ct_attribution_side.py"


def random_transcoders(n_layers: int, d_model: int, d_sae: int, k: int) -> list[SAE]:
    """Untrained TopK transcoders resid_mid -> mlp_out (saelab's initialisation): the maths is the same."""
    return [SAE(SAEConfig(architecture="topk", d_in=d_model, d_sae=d_sae, k=k, hook_site=f"{layer}.resid_mid",
                          output_site=f"{layer}.mlp_out", seed=layer)) for layer in range(n_layers)]


def time_runs(fn, repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def ct_exchange(directory: Path, model_dir: Path, tokens, logit_tokens, transcoders, args) -> None:
    """Write the request and the transcoders in circuit-tracer's layout (W_enc (d_sae, d_model); saelab's TopK
    subtracts b_dec from its input, folded into b_enc)."""
    tensors = {}
    for layer, sae in enumerate(transcoders):
        if sae.cfg.architecture != "topk":
            raise SystemExit(f"the circuit-tracer comparison maps topk transcoders only, got {sae.cfg.architecture!r}")
        W, b = encoder_affine(sae)
        tensors |= {f"{layer}.W_enc": W.T, f"{layer}.b_enc": b, f"{layer}.W_dec": sae.W_dec.detach(),
                    f"{layer}.b_dec": sae.b_dec.detach(), f"{layer}.k": torch.tensor(sae.cfg.k)}
        if getattr(sae, "W_skip", None) is not None:
            tensors[f"{layer}.W_skip"] = sae.W_skip.detach().T  # circuit-tracer computes x @ W_skip.T
    save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in tensors.items()},
              str(directory / "transcoders.safetensors"))
    request = {"model_dir": str(model_dir), "tokens": tokens.tolist(), "logit_tokens": logit_tokens.tolist(),
               "threads": args.threads, "repeats": args.repeats, "ct_batch_size": args.ct_batch_size}
    (directory / "request.json").write_text(json.dumps(request))


def run_circuit_tracer(model_dir: Path, tokens, logit_tokens, transcoders, args) -> dict | None:
    python = args.ct_python
    if not Path(python).exists() or subprocess.run([python, "-c", "import circuit_tracer"],
                                                   capture_output=True).returncode != 0:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        exchange = Path(tmp)
        ct_exchange(exchange, model_dir, tokens, logit_tokens, transcoders, args)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": ""}
        done = subprocess.run([python, str(CT_SIDE), str(exchange)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"circuit-tracer side failed:\n{done.stderr[-3000:]}")
        result = json.loads((exchange / "ct_result.json").read_text())
        result["graph"] = load_file(str(exchange / "ct_graph.safetensors"))
    return result


def agreement(ours, theirs: dict) -> dict:
    """Max abs difference and correlation of the two adjacency matrices (same node order when the same latents
    are active)."""
    same_features = torch.equal(ours.features, theirs["active_features"].long())
    if not same_features:
        return {"same_active_latents": False, "n_active_ours": len(ours.features),
                "n_active_ct": len(theirs["active_features"])}
    a, b = ours.adjacency.double().flatten(), theirs["adjacency"].double().flatten()
    nonzero = (a != 0) | (b != 0)
    corr = torch.corrcoef(torch.stack([a[nonzero], b[nonzero]]))[0, 1]
    return {"same_active_latents": True, "max_abs_difference": float((a - b).abs().max()),
            "max_abs_weight": float(a.abs().max()), "correlation_nonzero": float(corr),
            "n_nonzero_ours": int((a != 0).sum()), "n_nonzero_ct": int((b != 0).sum()),
            "activation_max_abs_difference": float((ours.activations - theirs["activation_values"]).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="saelab-tiny")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--transcoders", nargs="*", default=[], help="saved transcoder dirs, one per layer, in order")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=AttributionConfig.batch_size)
    parser.add_argument("--ct-batch-size", type=int, default=512, help="circuit-tracer's default")
    parser.add_argument("--ct-python", default=os.environ.get("SAELAB_CT_PYTHON", "/work/ct-venv/bin/python"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.model)
    tokens = model.to_tokens(args.prompt)[0]
    if args.transcoders:
        transcoders = [load_sae(d) for d in args.transcoders]
    else:
        transcoders = random_transcoders(model.cfg.n_layers, model.cfg.d_model, args.d_sae, args.k)
    config = AttributionConfig(batch_size=args.batch_size)
    ours_times, dense = time_runs(lambda: attribute(model, tokens, transcoders, config), args.repeats)
    graph_times, graph = time_runs(lambda: attribution_graph(model, tokens, transcoders, config), args.repeats)
    scores = graph_scores(dense)
    row = {
        "model": args.model, "prompt": args.prompt, "n_pos": len(tokens), "threads": args.threads,
        "transcoders": args.transcoders or f"random topk d_sae={args.d_sae} k={args.k}",
        "n_active_latents": len(dense.features), "n_logits": len(dense.logit_tokens),
        "saelab_attribute_s": statistics.median(ours_times), "saelab_graph_s": statistics.median(graph_times),
        "saelab_scores": scores._asdict(), "pruned_nodes": len(graph.nodes), "pruned_edges": len(graph.edges),
    }
    bundled = get_bundled(args.model)
    model_dir = Path(bundled.directory) if bundled is not None else Path(args.model)
    ct = run_circuit_tracer(model_dir, tokens, dense.logit_tokens, transcoders, args)
    if ct is None:
        row["circuit_tracer"] = f"skipped: {args.ct_python} cannot import circuit_tracer"
    else:
        ct_dense = {**ct["graph"]}
        row["circuit_tracer"] = {
            "version": ct["circuit_tracer_version"], "attribute_s": statistics.median(ct["seconds"]),
            "scores": {"replacement_score": ct["replacement_score"], "completeness_score": ct["completeness_score"]},
            "ratio_ct_over_saelab": statistics.median(ct["seconds"]) / row["saelab_attribute_s"],
            **agreement(dense, ct_dense),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
