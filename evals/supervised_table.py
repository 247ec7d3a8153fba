"""Supervised dictionaries against SAEs on IOI (Makelov, Lange & Nanda 2024) on saelab-tiny: print and store
the comparison table.

    .venv/bin/python evals/supervised_table.py                      # saelab-tiny, its ground-truth circuit
    .venv/bin/python evals/supervised_table.py --synthetic --quick  # plumbing check on saelab-random

Locations come from the model's ground-truth IOI circuit (data/circuits/MODEL/ioi.json): head classes and
positions when the file has them, else the circuit's heads classified by attention pattern (name movers and
S-inhibition heads read at END, induction and duplicate-token heads at S2), one location per class. Or give
them: --locations "nm=3.1+3.4@end;ind=1.2@S2".

At each location: the supervised dictionary is fitted on --fit prompts; SAEs of each architecture (TopK,
BatchTopK, ReLU/L1, JumpReLU, Gated, and the discrete ones: a VQ codebook and the argmax code of the TopK SAE)
are trained on the location's activations over --train-prompts further prompts; all are scored on --eval
prompts whose (IO, S) name pairs the fit set never had. Rows go to the workspace's store (eval_kind
"supervised_ioi"; trained SAEs into saes/ and the saes table).

Locations are named by their heads, position and measured attention; each location's header line gives what
mean-ablating it does to the logit difference. A location whose mean-ablation gap is below --min-gap-fraction
of the clean logit difference is refused with a one-line reason (no SAEs are trained for it). Edit accuracy is
shown over the prompts whose prediction the true counterfactual changes (with their count) and over all
prompts, for every named edit, beside the no-edit row.
"""

import argparse
import logging
import math
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import torch

from saelab.evals.ioi import (
    Location,
    Prompts,
    ioi_locations,
    name_ids,
    prompts_from_dataset,
    split_fit_eval,
    synthetic_prompts,
)
from saelab.evals.supervised import SupervisedEvalConfig, no_edit_dictionary, sae_dictionary
from saelab.evals.supervised_ioi import (
    DictionaryScores,
    LocationContext,
    acts_at,
    evaluate_dictionary,
    location_context,
    refusal,
    score_metrics,
    score_rows,
    subset_prompts,
    supervised_for,
)
from saelab.sae import SAEConfig

log = logging.getLogger("supervised_table")

ARCHITECTURES = ("topk", "batchtopk", "relu_l1", "jumprelu", "gated", "vq")
SYNTHETIC_NAMES = tuple(chr(c) for c in range(ord("A"), ord("A") + 16))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saelab-tiny")
    parser.add_argument("--workspace", default=None, help="workspace for the store and SAEs (default: saelab's)")
    parser.add_argument("--circuit", type=Path, default=None, help="circuit JSON (default data/circuits/MODEL/ioi.json)")
    parser.add_argument("--locations", default=None, help='e.g. "nm=3.1+3.4@end;ind=1.2@S2" (overrides --circuit)')
    parser.add_argument("--fit", type=int, default=2000, help="prompts the supervised dictionary is fitted on")
    parser.add_argument("--eval", type=int, default=500, help="evaluation prompts (unseen name pairs)")
    parser.add_argument("--train-prompts", type=int, default=8000, help="prompts whose activations train the SAEs")
    parser.add_argument("--train-rows", type=int, default=400_000, help="activation rows each SAE trains on")
    parser.add_argument("--expansion", type=int, default=8, help="d_sae = expansion x location width")
    parser.add_argument("--k", type=int, default=4, help="k of TopK / BatchTopK")
    parser.add_argument("--l1", type=float, default=3.0, help="L1 coefficient of ReLU/L1 and Gated SAEs")
    parser.add_argument("--l0", type=float, default=0.05, help="L0 coefficient of JumpReLU SAEs")
    parser.add_argument("--vq-codes", type=int, default=1, help="codes per input of the VQ codebook SAE")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-gap-fraction", type=float, default=SupervisedEvalConfig.min_gap_fraction,
                        help="refuse a location whose mean-ablation gap is below this fraction of the clean "
                        "logit difference")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--synthetic", action="store_true",
                        help="plumbing check: saelab-random and IOI-shaped synthetic prompts (numbers mean nothing)")
    parser.add_argument("--quick", action="store_true", help="small prompt counts and short training")
    parser.add_argument("--no-store", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.fit, args.eval, args.train_prompts, args.train_rows = 300, 100, 600, 20_000
    if args.synthetic:
        args.model = "saelab-random"
    return args


def parse_locations(text: str) -> list[Location]:
    """ "name=L.H+L.H@pos;..." -> locations."""
    locations = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = re.fullmatch(r"([^=]+)=([\d.+]+)@(\w+)", part)
        if match is None:
            raise ValueError(f"bad location {part!r}; write NAME=L.H+L.H@POSITION, e.g. nm=3.1+3.4@end")
        heads = tuple(tuple(int(x) for x in h.split(".")) for h in match.group(2).split("+"))
        locations.append(Location(f"{match.group(1)}@{match.group(3)}", heads, match.group(3)))
    return locations


def prompt_sets(model, args) -> tuple[Prompts, Prompts, Prompts, dict[str, int]]:
    """Fit, evaluation and SAE-training prompts, and the names' token ids."""
    if args.synthetic:
        ids = {n: i + 65 for i, n in enumerate(SYNTHETIC_NAMES)}
        make = lambda n, seed: synthetic_prompts(n, seed, SYNTHETIC_NAMES, ids, 256, model.tokenizer.bos_token_id)  # noqa: E731
        return make(args.fit, args.seed), make(args.eval, args.seed + 1), make(args.train_prompts, args.seed + 2), ids
    from saelab.tasks import get_task

    task, tokenizer = get_task("ioi"), model.tokenizer
    fit, evaluation = split_fit_eval(task.generate(tokenizer, args.fit, args.seed, "tiny"),
                                     task.generate(tokenizer, 3 * args.eval, args.seed + 1, "tiny"))
    train = prompts_from_dataset(task.generate(tokenizer, args.train_prompts, args.seed + 2, "tiny"))
    names = sorted(set(fit.attributes["IO"]) | set(fit.attributes["S"]))
    return fit, subset_prompts(evaluation, args.eval), train, name_ids(tokenizer, names)


def locations_for(model, args, fit: Prompts) -> list[Location]:
    if args.locations:
        return parse_locations(args.locations)
    if args.synthetic:
        return [Location("layer1 heads 0+2@end", ((1, 0), (1, 2)), "end"), Location("head 0.1@S2", ((0, 1),), "S2")]
    import json

    from saelab.paths import data_dir

    path = args.circuit or data_dir() / "circuits" / args.model / "ioi.json"
    if not path.is_file():
        raise SystemExit(f"no IOI circuit at {path}: run `python evals/ground_truth.py --model {args.model} "
                         "--task ioi` or pass --locations")
    return ioi_locations(json.loads(path.read_text(encoding="utf-8")), model, fit)


def sae_configs(args, d_in: int, slug: str) -> dict[str, SAEConfig]:
    d_sae = args.expansion * d_in
    site = f"ioi:{slug}"
    common = {"d_in": d_in, "d_sae": d_sae, "hook_site": site, "model_name": args.model, "seed": args.seed}
    return {
        "topk": SAEConfig("topk", k=args.k, **common),
        "batchtopk": SAEConfig("batchtopk", k=args.k, **common),
        "relu_l1": SAEConfig("relu_l1", l1_coefficient=args.l1, **common),
        "jumprelu": SAEConfig("jumprelu", l0_coefficient=args.l0, **common),
        "gated": SAEConfig("gated", l1_coefficient=args.l1, **common),
        "vq": SAEConfig("vq", k=args.vq_codes, **common),
    }


def batches(acts: torch.Tensor, key: str, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches of exactly `batch_size` rows."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield {key: acts[order[start:start + batch_size]]}


def train_location_saes(acts: torch.Tensor, configs: dict[str, SAEConfig], out_dir: Path, args) -> dict:
    """Train every architecture on the location's activations; returns {architecture: (sae, directory)}."""
    from saelab.sae import load_sae
    from saelab.training import TrainerConfig, train_saes

    batch_size = min(args.batch_size, acts.shape[0])
    steps = args.train_rows // batch_size
    trainer = TrainerConfig(total_tokens=args.train_rows, batch_size=batch_size, lr=1e-3, seed=args.seed,
                            lr_warmup_steps=min(100, steps // 10), lr_decay_steps=steps // 5,
                            sparsity_warmup_steps=steps // 10, dead_window_tokens=max(args.train_rows // 8, batch_size),
                            log_every_steps=max(steps // 10, 1))
    site = next(iter(configs.values())).hook_site
    ids = {f"{out_dir.name}-{arch}": cfg for arch, cfg in configs.items()}
    trained = train_saes(ids, batches(acts, site, batch_size, args.seed), trainer, out_dir, progress=False)
    return {t.sae_id.rsplit("-", 1)[-1]: (load_sae(t.paths.directory), t.paths.directory) for t in trained}


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def describe(ctx: LocationContext) -> str:
    """The location's header line: heads, position, what mean-ablating it does, and the changed-only counts."""
    gap = ctx.ld_clean - ctx.ld_mean_ablation
    changed = ", ".join(f"{a} {n}" for a, n in ctx.n_changed.items())
    heads = "+".join(f"{layer}.{head}" for layer, head in ctx.location.heads)
    return (f"{ctx.location.name}: heads {heads} hook_z at {ctx.location.position}; mean-ablating it moves the "
            f"logit difference {ctx.ld_clean:.3f} -> {ctx.ld_mean_ablation:.3f} (gap {gap:.3f} = "
            f"{_ratio(gap, ctx.ld_clean):.1%} of clean); prompts whose prediction the true counterfactual "
            f"changes: {changed} of {ctx.prompts.size}")


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


class LocationResult(NamedTuple):
    header: str
    """`describe` of the location, or its refusal."""
    scores: list[DictionaryScores]
    """Empty when refused."""
    saes: dict


def score_location(model, location, fit, evaluation, train, ids, out_root: Path, args) -> LocationResult:
    cfg = SupervisedEvalConfig(batch_size=64, seed=args.seed, min_gap_fraction=args.min_gap_fraction)
    start = time.perf_counter()
    ctx = location_context(model, fit, evaluation, location, ids, cfg)
    if (reason := refusal(ctx, cfg)) is not None:
        log.info(reason)
        return LocationResult(reason, [], {})
    slug = f"ioi-{slugify(args.model)}-{slugify(location.name)}"
    acts = acts_at(model, train, location, 64)
    saes = train_location_saes(acts, sae_configs(args, acts.shape[1], slug), out_root / slug, args)
    log.info("%s: context and %d SAEs in %.0f s", location.name, len(saes), time.perf_counter() - start)
    dictionaries = [no_edit_dictionary(), supervised_for(ctx)]
    for arch, (sae, _) in saes.items():
        dictionaries.append(sae_dictionary(sae, f"{slug}-{arch}", ctx.fit_acts, ctx.fit_codes, ctx.n_values, cfg))
    topk_sae = saes["topk"][0]
    dictionaries.append(sae_dictionary(topk_sae, f"{slug}-topk-argmax", ctx.fit_acts, ctx.fit_codes, ctx.n_values,
                                       cfg, argmax_code=True))
    return LocationResult(describe(ctx), [evaluate_dictionary(model, ctx, d, cfg) for d in dictionaries], saes)


APPROXIMATION = (("FVU", "fvu"), ("suff", "sufficiency"), ("nec", "necessity"), ("F1 IO", "f1_IO"),
                 ("F1 S", "f1_S"), ("F1 pos", "f1_pos"), ("split", "over_splitting"), ("occl", "occlusion"))
CONTROL = (("chg IO", "edit_accuracy_changed_IO"), ("chg S", "edit_accuracy_changed_S"),
           ("chg pos", "edit_accuracy_changed_pos"), ("all IO", "edit_accuracy_IO"), ("all S", "edit_accuracy_S"),
           ("all pos", "edit_accuracy_pos"), ("mag", "edit_magnitude"))


def label(scores: DictionaryScores) -> str:
    if scores.dictionary.startswith(("supervised", "no-edit")):
        return scores.dictionary.split(":")[0]
    return "topk→argmax" if scores.dictionary.endswith("topk-argmax") else scores.dictionary.rsplit("-", 1)[-1]


def _cells(metrics: dict, columns, prefix: str = "") -> str:
    return "".join(f"{metrics.get(prefix + m, math.nan):>9.3f}" for _, m in columns).replace("nan", "  -")


def print_location(result: LocationResult) -> None:
    print(result.header)
    if not result.scores:
        return
    header = f"  {'dictionary':<14}" + "".join(f"{c:>9}" for c, _ in APPROXIMATION)
    print(header)
    for s in result.scores:
        if s.dictionary != "no-edit":
            print(f"  {label(s):<14}{_cells(score_metrics(s), APPROXIMATION)}")
    header = f"  {'dictionary':<14} {'edit':<11}" + "".join(f"{c:>9}" for c, _ in CONTROL)
    print(header)
    for s in result.scores:
        metrics = score_metrics(s)
        for edit in s.edits:
            print(f"  {label(s):<14} {edit:<11}{_cells(metrics, CONTROL, f'{edit}_')}")


LEGEND = ("suff/nec: logit difference recovered relative to mean ablation (Makelov et al. sufficiency/necessity); "
          "F1: best latent per attribute value, averaged; split/occl: fraction of values over-split / occluded "
          "(rules in saelab/evals/supervised.py). Edit accuracy = agreement of the top token at END with the true "
          "counterfactual patch: chg = over the prompts whose prediction that patch changes (counts in the "
          "location line), all = over all prompts (an edit that does nothing scores the unchanged fraction: see "
          "the no-edit row). Edits: supervised = a - u[v] + u[v'] (the paper's); makelov = the paper's SAE edit "
          "(swap the top-F1 active latents for those active in the counterfactual's encoding, at its strengths); "
          "saelab = ours (remove latents assigned to v, add the best latent for v' at its mean activation); "
          "mag = mean |edit| / mean |true counterfactual change|.")


def store_results(scores: list[DictionaryScores], trained: dict, args) -> str:
    from saelab.db import ResultsStore
    from saelab.workflows.storage import ensure_sae_row, write_eval_metrics
    from saelab.workspace import Workspace

    workspace = Workspace.resolve(args.workspace).create()
    store = ResultsStore(workspace.db_path).initialize()
    run_id = store.start_run("eval", name=f"supervised_ioi {args.model}", config=vars(args) | {"circuit": str(args.circuit)})
    for sae_id, (sae, directory) in trained.items():
        ensure_sae_row(store, sae, sae_id, directory, run_id)
    write_eval_metrics(store, [row for s in scores for row in score_rows(s, run_id)])
    store.finish_run(run_id, "done", f"{len(scores)} dictionary scores")
    return f"run {run_id} in {workspace.db_path}"


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from saelab.models import load_model

    model = load_model(args.model)
    fit, evaluation, train, ids = prompt_sets(model, args)
    log.info("%d fit prompts, %d evaluation prompts (unseen name pairs), %d SAE-training prompts",
             fit.size, evaluation.size, train.size)
    locations = locations_for(model, args, fit)
    log.info("locations: %s", "; ".join(f"{loc.name} {loc.heads}" for loc in locations))
    out_root = Path(tempfile.mkdtemp(prefix="supervised_saes_")) if args.no_store else None
    if out_root is None:
        from saelab.workspace import Workspace

        out_root = Workspace.resolve(args.workspace).create().saes_dir
    results = [score_location(model, loc, fit, evaluation, train, ids, out_root, args) for loc in locations]
    for result in results:
        print_location(result)
    print(LEGEND)
    if not args.no_store:
        trained = {d.name: (sae, d) for r in results for sae, d in r.saes.values()}
        print(store_results([s for r in results for s in r.scores], trained, args))


if __name__ == "__main__":
    main(sys.argv[1:])
