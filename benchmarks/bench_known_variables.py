"""SAE feature recovery where the truth is known: the demo's SAE kinds on saelab-ioi-siit, scored per aligned
high-level variable, beside raw-neuron, random-direction and chance baselines and the synthetic-dictionary score.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_known_variables.py            # 2,097,152 tokens, seeds 0 1 2
    PYTHONPATH=. .venv/bin/python benchmarks/bench_known_variables.py --quick    # 262,144 tokens, seed 0, 1,000 prompts
    PYTHONPATH=. .venv/bin/python benchmarks/bench_known_variables.py --task ioi-copies   # saelab-ioi-siit-copies

Ground truth: saelab-ioi-siit was trained with SIIT so that head 0.2 at S2 (DUP), head 1.1 at END (S-INH) and
head 2.3 at END (NAME) carry the indirect object's identity (data/circuits/saelab-ioi-siit/ioi.json); with
--task ioi-copies, saelab-ioi-siit-copies, where head 0.0 at the two name slots (SLOT1, SLOT2) carries each slot's
name, head 0.2 at S2 (DUP) and head 1.1 at END (S-INH) the subject, head 2.3 at END (NAME) the indirect object
(each variable's values: `SIITTask.variable_values`). SAEs: the
demo's two kinds (`saelab.demo.demo_sweep`: TopK, width 8 x d_model = 512, k 16) at the hook_z of each aligned
layer and at the residual stream after it, trained as `saelab demo` trains them (`train_in_workspace`, lr 1e-3,
batch 4096, activations of the bundled corpus streamed from the model with 64-token contexts, the model's n_ctx).
The SIIT model never trained on that corpus, so a second set (ours, named as such) has the same configs and
schedule but trains on the model's own training distribution: SIIT-generator prompts, half IOI, half ABC, every
position after BOS up to END. Scoring: `saelab.evals.known_variables` (unit and threshold chosen on 2,000 dev
prompts, F1 on 2,000 other test prompts; IOI prompts of the SIIT generator, different seeds from training). Synthetic dictionary: the setting of tests/test_sae_recovery.py
(64 true unit directions in d_in 32, 4 active on average, TopK d_sae 128 k 4, 600 steps) with its mean-max-cosine
score, and the same F1 protocol on it ("feature active" as the class), for a number on the same scale.
Writes benchmarks/results/bench_known_variables.{json,md} (bench_known_variables_ioi-copies.* with --task).
"""

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from saelab.activations.sites import HookSite
from saelab.circuits.siit import AlignedNode, siit_task
from saelab.evals.known_variables import KnownVariablesConfig, known_variable_scores, threshold_f1
from saelab.models import load_model
from saelab.sae import SAE, SAEConfig, load_sae
from saelab.sae.synthetic import max_cosine_recovery, random_dictionary, sparse_feature_batch
from saelab.workflows.train import (
    SAESpec,
    TrainSpec,
    train_in_workspace,
    train_on_siit,
)
from saelab.workspace import Workspace

RESULTS = Path(__file__).parent / "results" / "bench_known_variables"


def demo_kinds_spec(model, nodes: tuple[AlignedNode, ...], tokens: int, seed: int) -> TrainSpec:
    """The demo's TopK SAE (its width and k, lr, batch) at hook_z and resid_post of every aligned layer."""
    width = 8 * model.cfg.d_model
    layers = sorted({node.layer for node in nodes})
    specs = tuple(SAESpec(site=f"{layer}.{kind}", architecture="topk", width=width, k=16)
                  for layer in layers for kind in ("attn_z", "resid_post"))
    return TrainSpec(model=model.cfg.model_name, saes=specs, tokens=tokens, batch_size=4096, lr=1e-3, seed=seed,
                     context_len=model.cfg.n_ctx, log_every_steps=50, checkpoint_every_tokens=None)


def loaded(paths: dict) -> dict:
    saes = {sae_id: load_sae(path) for sae_id, path in paths.items()}
    return {sae_id: (HookSite.parse(sae.cfg.hook_site), sae) for sae_id, sae in saes.items()}


def train_on_corpus(model, spec: TrainSpec, root: Path) -> dict:
    """As `saelab demo` trains: `train_in_workspace`, activations of the bundled corpus streamed from the model."""
    return loaded(train_in_workspace(Workspace(root), spec, progress=False, model=model).paths)


def train_on_ioi(model, spec: TrainSpec, root: Path) -> dict:
    """Ours: the same SAE configs and schedule, trained on the SIIT generator's prompts instead of the corpus."""
    return loaded(train_on_siit(model, spec, root))


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


COLUMNS = (("sae:corpus", "SAE F1, demo (corpus)"), ("sae:ioi", "SAE F1, ours (IOI prompts)"),
           ("neurons", "neurons F1"), ("random", "random F1"), ("chance", "chance F1"))


def markdown(report: dict) -> str:
    lines = ["| variable (node@pos) | site | attribute | " + " | ".join(title for _, title in COLUMNS) +
             " | demo SAE P / R |", "|---" * (4 + len(COLUMNS)) + "|"]
    for key, cell in report["table"].items():
        variable, site, attribute = key.split("|")
        f1 = [_mean_sd([s["f1"] for s in cell.get(column, [])]) for column, _ in COLUMNS]
        demo = cell.get("sae:corpus", [])
        pr = f"{_mean([s['precision'] for s in demo]):.3f} / {_mean([s['recall'] for s in demo]):.3f}" if demo else "-"
        lines.append(f"| {variable} | {site} | {attribute} | " + " | ".join(f1) + f" | {pr} |")
    syn = report["synthetic"]
    lines += ["", f"Synthetic dictionary (tests/test_sae_recovery.py's TopK setting), seeds {report['seeds_done']}: "
              f"mean max cosine {_mean_sd([s['mean_max_cosine'] for s in syn])}, "
              f"macro F1 (feature active, same protocol) {_mean_sd([s['f1_active'] for s in syn])}."]
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    mean = _mean(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="262,144 training tokens, one seed, 1,000 prompts")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--tokens", type=int, default=None, help="training tokens per SAE (default: the demo's)")
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. one per seed run in parallel)")
    parser.add_argument("--merge", nargs="+", help="merge these result JSONs (one seed each) into the main files")
    parser.add_argument("--task", default="ioi", choices=("ioi", "ioi-copies"),
                        help="the IOI SIIT design (its bundled model): ioi = saelab-ioi-siit (default), ioi-copies")
    args = parser.parse_args()
    if args.merge:
        report = merge([json.loads(Path(name).read_text()) for name in args.merge])
        task = report.get("task", "ioi")
        write(report, "" if task == "ioi" else f"_{task}")
        print(markdown(report))
        return
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    tokens = args.tokens or (262_144 if args.quick else 2_097_152)
    n_prompts = 1000 if args.quick else 2000
    entry = siit_task(args.task)
    model, nodes = load_model(entry.model), entry.alignment
    report = {"model": entry.model, "task": args.task, "tokens": tokens, "seeds": seeds, "n_dev": n_prompts, "n_test": n_prompts,
              "table": {}, "synthetic": [], "seconds": {}}
    report["seeds_done"] = []
    suffix = ("" if args.task == "ioi" else f"_{args.task}") + ("_quick" if args.quick else "") + args.tag
    for seed in seeds:
        spec = demo_kinds_spec(model, nodes, tokens, seed)
        scoring = KnownVariablesConfig(n_prompts, n_prompts, random_seed=seed)
        for data, train in (("corpus", train_on_corpus), ("ioi", train_on_ioi)):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as root:
                saes = train(model, spec, Path(root))
            trained = time.perf_counter()
            config = scoring if data == "corpus" else replace(scoring, baselines=False)
            for row in known_variable_scores(model, entry, saes, config):
                key = f"{row.variable} ({row.node}@{row.position})|{row.site}|{row.attribute}"
                column = f"sae:{data}" if row.units == "sae" else row.units
                report["table"].setdefault(key, {}).setdefault(column, []).append(row.score._asdict())
            report["seconds"][f"{seed}:{data}"] = {"train": trained - start, "score": time.perf_counter() - trained}
            print(f"seed {seed}, SAEs trained on {data}: trained in {trained - start:.0f} s, scored in "
                  f"{time.perf_counter() - trained:.0f} s", flush=True)
        report["synthetic"].append(synthetic_scores(seed))
        report["seeds_done"].append(seed)
        write(report, suffix)  # after every seed, so a long run keeps what it has
    print(markdown(report))


def merge(reports: list[dict]) -> dict:
    """One report from several runs of the same settings on different seeds."""
    out = {**reports[0], "table": {}, "synthetic": [], "seconds": {}, "seeds_done": [], "seeds": []}
    for report in reports:
        for key, cell in report["table"].items():
            for column, scores in cell.items():
                out["table"].setdefault(key, {}).setdefault(column, []).extend(scores)
        for field in ("synthetic", "seeds_done", "seeds"):
            out[field] += report[field]
        out["seconds"].update(report["seconds"])
    return out


def write(report: dict, suffix: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{RESULTS}{suffix}.json").write_text(json.dumps(report, indent=1))
    Path(f"{RESULTS}{suffix}.md").write_text(markdown(report) + "\n")


if __name__ == "__main__":
    main()
