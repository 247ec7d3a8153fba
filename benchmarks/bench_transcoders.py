"""Transcoders of saelab-tiny's MLPs against TopK SAEs of the MLP output and a least-squares linear map.

    .venv/bin/python -m saelab train --config benchmarks/transcoders_tiny.toml --workspace runs/tc-tiny
    .venv/bin/python benchmarks/bench_transcoders.py --workspace runs/tc-tiny [--tokens 16384]

Every dictionary saved in the workspace (transcoders resid_mid -> mlp_out, a skip-transcoder, TopK SAEs of
mlp_out) is evaluated with `saelab eval`'s own code (`run_eval`, core metrics stored in the workspace's store) on the
same held-out tokens of the bundled corpus (standard-library files never trained on):
  FVU (MLP out)   squared error of the reconstruction of L.mlp_out over its variance (BOS positions left out);
  CE recovered    (CE_ablated - CE_spliced) / (CE_ablated - CE_clean) with the reconstruction spliced in place of
                  L.mlp_out (a transcoder reconstructs it from L.resid_mid of the same forward pass), against zero-
                  and mean-ablation of L.mlp_out;
  L0, dead        active latents per token; share of latents that never fire on these tokens.
The baseline that needs no cleverness: per layer, the least-squares affine map resid_mid -> mlp_out fitted on
`--fit-tokens` tokens of the training corpus (a "transcoder" that is all skip term and no latents), evaluated the
same way. Writes benchmarks/results/bench_transcoders.json and prints a markdown table.
"""

import argparse
import json
import math
from pathlib import Path

import torch

from saelab.evals.core import CoreEvalConfig, evaluate_core
from saelab.evals.tokens import held_out_source, token_contexts, training_source
from saelab.models import load_model
from saelab.sae import SAE, InitialState, SAEConfig
from saelab.workflows.eval import EvalRequest, run_eval
from saelab.workspace import Workspace

COLUMNS = ("fvu", "l0", "dead_fraction", "ce_loss_score", "ce_recovered_mean", "kl_div", "ce_spliced", "ce_clean")


@torch.no_grad()
def linear_map(model, layer: int, n_tokens: int, context_len: int) -> SAE:
    """The least-squares affine map from L.resid_mid to L.mlp_out as a skip-only "transcoder" (its latents never
    fire: W_dec is zero and b_enc is -1, so reconstruct(x) = x @ W_skip + b_dec)."""
    tokens = token_contexts(model.tokenizer, training_source(), n_tokens, context_len, seed=1)
    names = (f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_mlp_out")
    xs, ys = [], []
    for part in tokens.split(16):
        _, cache = model.run_with_cache(part, names_filter=lambda name: name in names, stop_at_layer=layer + 1)
        xs.append(cache[names[0]][:, 1:].flatten(0, 1))  # BOS positions left out, as in the evaluation
        ys.append(cache[names[1]][:, 1:].flatten(0, 1))
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    solution = torch.linalg.lstsq(x1, y).solution
    d = model.cfg.d_model
    cfg = SAEConfig("topk", d, 1, k=1, hook_site=f"{layer}.resid_mid", output_site=f"{layer}.mlp_out",
                    skip_connection=True, model_name="saelab-tiny")
    params = {"W_enc": torch.zeros(d, 1), "b_enc": -torch.ones(1), "W_dec": torch.zeros(1, d),
              "b_dec": solution[-1].float(), "W_skip": solution[:-1].float()}
    return SAE(cfg, InitialState(params, {}))


def row(kind: str, layer: int, metrics) -> dict:
    return {"kind": kind, "layer": layer, **{name: float(getattr(metrics, name)) for name in COLUMNS}}


def evaluate_dictionaries(workspace: Workspace, model, n_tokens: int) -> list[dict]:
    """Core metrics of every dictionary saved under the workspace's saes/ (by `saelab train`, or from a run's last
    checkpoint by `saelab.training.save_checkpointed`), recorded in its store as `saelab eval` records them."""
    rows = []
    for directory in sorted(path for path in workspace.saes_dir.iterdir() if (path / "cfg.json").is_file()):
        sae_id = directory.name
        outcome = run_eval(workspace, EvalRequest(sae_path=str(directory), sae_id=sae_id, n_tokens=n_tokens),
                           model=model)
        cfg = json.loads((directory / "cfg.json").read_text())
        kind = ("skip-transcoder" if cfg["skip_connection"] else "transcoder") if cfg["output_site"] else "SAE"
        layer = int(cfg["hook_site"].split(".")[0])  # the benchmark's own label, read from the saved config
        rows.append({**row(kind, layer, outcome.core), "sae_id": sae_id})
    return rows


def evaluate_linear_maps(model, n_tokens: int, fit_tokens: int) -> list[dict]:
    tokens = token_contexts(model.tokenizer, held_out_source(), n_tokens, 128, 0)  # the tokens run_eval uses
    return [{**row("linear map (least squares)", layer,
                   evaluate_core(model, linear_map(model, layer, fit_tokens, 128), tokens, CoreEvalConfig())),
             "sae_id": ""} for layer in range(model.cfg.n_layers)]


def print_table(rows: list[dict]) -> None:
    print("| layer | dictionary | FVU (MLP out) | L0 | dead | CE recovered (zero-abl.) | CE recovered (mean-abl.) "
          "| KL | CE spliced (clean) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["layer"], r["kind"])):
        linear = r["kind"].startswith("linear")
        l0, dead = ("-", "-") if linear else (f"{r['l0']:.1f}", f"{r['dead_fraction']:.1%}")
        print(f"| {r['layer']} | {r['kind']} | {r['fvu']:.3f} | {l0} | {dead} | {r['ce_loss_score']:.3f} | "
              f"{r['ce_recovered_mean']:.3f} | {r['kl_div']:.4f} | {r['ce_spliced']:.3f} ({r['ce_clean']:.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=Path("runs/tc-tiny"))
    parser.add_argument("--tokens", type=int, default=16384, help="held-out tokens per evaluation")
    parser.add_argument("--fit-tokens", type=int, default=65536, help="training tokens for the linear baseline")
    parser.add_argument("--part", choices=["all", "dictionaries", "linear"], default="all",
                        help="evaluate only the stored dictionaries or only the linear baseline (two processes)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_transcoders.json"))
    parser.add_argument("--table", type=Path, nargs="*", help="only print the table of these result files")
    args = parser.parse_args()
    if args.table:
        print_table([r for path in args.table for r in json.loads(path.read_text())["rows"]])
        return
    torch.set_num_threads(1)
    model = load_model("saelab-tiny")
    rows = []
    if args.part in ("all", "dictionaries"):
        rows += evaluate_dictionaries(Workspace.resolve(str(args.workspace)), model, args.tokens)
    if args.part in ("all", "linear"):
        rows += evaluate_linear_maps(model, args.tokens, args.fit_tokens)
    assert all(not math.isnan(r["fvu"]) for r in rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"workspace": str(args.workspace), "tokens": args.tokens, "part": args.part,
                                    "fit_tokens": args.fit_tokens, "rows": rows}, indent=2))
    print_table(rows)


if __name__ == "__main__":
    main()
