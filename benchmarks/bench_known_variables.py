"""SAE feature recovery where the truth is known: the demo's SAE kinds on saelab-ioi-siit, scored per aligned
high-level variable, beside raw-neuron, random-direction and chance baselines and the synthetic-dictionary score.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_known_variables.py            # 2,097,152 tokens, seeds 0 1 2
    PYTHONPATH=. .venv/bin/python benchmarks/bench_known_variables.py --quick    # 262,144 tokens, seed 0

Ground truth: saelab-ioi-siit was trained with SIIT so that head 0.2 at S2 (DUP), head 1.1 at END (S-INH) and
head 2.3 at END (NAME) carry the indirect object's identity (data/circuits/saelab-ioi-siit/ioi.json). SAEs: the
demo's two kinds (`saelab.demo.demo_sweep`: TopK, width 8 x d_model = 512, k 16) at the hook_z of each aligned
layer and at the residual stream after it, trained as `saelab demo` trains them (`train_in_workspace`, lr 1e-3,
batch 4096, activations of the bundled corpus streamed from the model with 64-token contexts, the model's n_ctx).
Scoring: `saelab.evals.known_variables` (unit and threshold chosen on 3,000 dev prompts, F1 on 3,000 other
test prompts; IOI prompts of the SIIT generator). Synthetic dictionary: the setting of tests/test_sae_recovery.py
(64 true unit directions in d_in 32, 4 active on average, TopK d_sae 128 k 4, 600 steps) with its mean-max-cosine
score, and the same F1 protocol on it ("feature active" as the class), for a number on the same scale.
Writes benchmarks/results/bench_known_variables.{json,md}.
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from saelab.activations.sites import HookSite
from saelab.circuits.io import ground_truth_path
from saelab.circuits.siit import AlignedNode
from saelab.evals.known_variables import KnownVariablesConfig, known_variable_scores, threshold_f1
from saelab.models import load_model
from saelab.sae import SAE, SAEConfig, load_sae
from saelab.sae.synthetic import max_cosine_recovery, random_dictionary, sparse_feature_batch
from saelab.workflows.train import SAESpec, TrainSpec, train_in_workspace
from saelab.workspace import Workspace

MODEL = "saelab-ioi-siit"
RESULTS = Path(__file__).parent / "results" / "bench_known_variables"


def alignment() -> list[AlignedNode]:
    circuit = json.loads(ground_truth_path(MODEL, "ioi").read_text())
    return [AlignedNode.from_json(entry) for entry in circuit["alignment"]]


def train_demo_kinds(model, nodes: list[AlignedNode], tokens: int, seed: int, root: Path) -> dict:
    """The demo's TopK SAE (its width and k) at hook_z and resid_post of every aligned layer, one pass."""
    width = 8 * model.cfg.d_model
    layers = sorted({node.layer for node in nodes})
    specs = tuple(SAESpec(site=f"{layer}.{kind}", architecture="topk", width=width, k=16)
                  for layer in layers for kind in ("attn_z", "resid_post"))
    spec = TrainSpec(model=MODEL, saes=specs, tokens=tokens, batch_size=4096, lr=1e-3, seed=seed,
                     context_len=model.cfg.n_ctx, log_every_steps=50, checkpoint_every_tokens=None)
    result = train_in_workspace(Workspace(root), spec, progress=False, model=model)
    saes = {sae_id: load_sae(path) for sae_id, path in result.paths.items()}
    return {sae_id: (HookSite.parse(sae.cfg.hook_site), sae) for sae_id, sae in saes.items()}


def synthetic_scores(seed: int) -> dict:
    """tests/test_sae_recovery.py's TopK setting trained with its bare loop; mean max cosine and macro F1."""
    from saelab.sae import LossCoefficients, latent_fire_counts

    generator = torch.Generator().manual_seed(1234 + seed)
    dictionary = random_dictionary(64, 32, generator)
    sae = SAE(SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4, seed=seed))
    scale = 32**0.5 / sparse_feature_batch(dictionary, 4096, 4.0, generator).x.norm(dim=-1).mean()
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    last_fired = torch.zeros(128, dtype=torch.long)
    for step in range(600):
        x = sparse_feature_batch(dictionary, 256, 4.0, generator).x * scale
        out = sae(x, (step - last_fired) > 50)
        loss = sae.loss(x, out, LossCoefficients(sparsity_scale=min(1.0, step / 60)))
        opt.zero_grad()
        loss.total.backward()
        for group in opt.param_groups:
            group["lr"] = 3e-3 * min(1.0, 2 * (1 - step / 600))
        opt.step()
        sae.post_step_(out)
        last_fired[latent_fire_counts(out, 128) > 0] = step
    f1s = []
    dev, test = (sparse_feature_batch(dictionary, 3000, 4.0, generator) for _ in range(2))
    with torch.no_grad():
        dev_latents, test_latents = sae.encode(dev.x * scale), sae.encode(test.x * scale)
    for feature in range(64):  # each true feature as a two-valued variable: active or not
        result = threshold_f1(dev_latents, (dev.feature_acts[:, feature] > 0).long(), test_latents,
                              (test.feature_acts[:, feature] > 0).long(), 2)
        f1s.append(float(result.f1[1]))
    return {"mean_max_cosine": float(max_cosine_recovery(dictionary, sae.W_dec.detach())),
            "f1_active": sum(f1s) / len(f1s)}


def markdown(report: dict) -> str:
    lines = ["| variable (node@pos) | site | attribute | SAE F1 | neurons F1 | random F1 | chance F1 | SAE P / R |",
             "|---|---|---|---|---|---|---|---|"]
    for key, cell in report["table"].items():
        variable, site, attribute = key.split("|")
        f1 = {kind: _mean_sd([s["f1"] for s in cell[kind]]) for kind in ("sae", "neurons", "random", "chance")}
        sae = cell["sae"]
        lines.append(f"| {variable} | {site} | {attribute} | {f1['sae']} | {f1['neurons']} | {f1['random']} | "
                     f"{f1['chance']} | {_mean([s['precision'] for s in sae]):.3f} / "
                     f"{_mean([s['recall'] for s in sae]):.3f} |")
    syn = report["synthetic"]
    lines += ["", f"Synthetic dictionary (tests/test_sae_recovery.py's TopK setting), seeds {report['seeds']}: "
              f"mean max cosine {_mean_sd([s['mean_max_cosine'] for s in syn])}, "
              f"macro F1 (feature active, same protocol) {_mean_sd([s['f1_active'] for s in syn])}."]
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean = _mean(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="262,144 training tokens, one seed, 1,000 prompts")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    tokens = 262_144 if args.quick else 2_097_152
    n_prompts = 1000 if args.quick else 3000
    model, nodes = load_model(MODEL), alignment()
    report = {"model": MODEL, "tokens": tokens, "seeds": seeds, "n_dev": n_prompts, "n_test": n_prompts,
              "table": {}, "synthetic": [], "seconds": {}}
    for seed in seeds:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as root:
            saes = train_demo_kinds(model, nodes, tokens, seed, Path(root))
        trained = time.perf_counter()
        rows = known_variable_scores(model, nodes, saes, KnownVariablesConfig(n_prompts, n_prompts,
                                                                              random_seed=seed))
        for row in rows:
            key = f"{row.variable} ({row.node}@{row.position})|{row.site}|{row.attribute}"
            cell = report["table"].setdefault(key, {"sae": [], "neurons": [], "random": [], "chance": []})
            cell[row.units].append(row.score._asdict())
        report["synthetic"].append(synthetic_scores(seed))
        report["seconds"][str(seed)] = {"train": trained - start, "score": time.perf_counter() - trained}
        print(f"seed {seed}: trained in {trained - start:.0f} s, scored in {time.perf_counter() - trained:.0f} s",
              flush=True)
    table = markdown(report)
    print(table)
    suffix = "_quick" if args.quick else ""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{RESULTS}{suffix}.json").write_text(json.dumps(report, indent=1))
    Path(f"{RESULTS}{suffix}.md").write_text(table + "\n")
    print(f"wrote {RESULTS}{suffix}.json and .md")


if __name__ == "__main__":
    main()
