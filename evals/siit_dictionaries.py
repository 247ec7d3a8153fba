"""TopK SAEs of a SIIT model (saelab-ioi-siit, or with --task docstring-self-fallback saelab-docstring-siit)
trained on its own training distribution, for the feature-circuit and component-score rows of BENCHMARKS.md.

    PYTHONPATH=. python evals/siit_dictionaries.py --out WS/siit_saes [--task ioi] [--sites 0.attn_z,...]
        [--width 256 --k 8 --tokens 200000 --seed 0]

`saelab train` streams the bundled corpus, which the SIIT model never saw; these SAEs see the prompts it was
trained on (`saelab.workflows.train.siit_batches`; IOI: half IOI, half ABC; docstring: its training split's
task prompts; every position after BOS up to END)
with `saelab train`'s schedule and learning rate. Prints each SAE's directory and its fraction of variance
unexplained on fresh batches of the same distribution; writes OUT/dictionaries.json (the command, settings and
FVUs).
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from saelab.activations.sites import HookSite, parse_sites
from saelab.circuits.siit import siit_task
from saelab.models import load_model
from saelab.sae import load_sae
from saelab.sae.functional import fraction_of_variance_unexplained
from saelab.workflows.train import SAESpec, TrainSpec, siit_batches, train_on_siit


@torch.no_grad()
def fraction_unexplained(model, saes: dict[str, Path], seed: int, batches: int = 4,
                         task: str = "ioi") -> dict[str, float]:
    """Each SAE's FVU on `batches` fresh batches of 2,048 rows (a seed training never used)."""
    loaded = {sae_id: load_sae(path) for sae_id, path in saes.items()}
    sites = sorted({HookSite.parse(sae.cfg.hook_site) for sae in loaded.values()}, key=str)
    stream = siit_batches(model, sites, 2048, seed, task)
    data = [next(stream) for _ in range(batches)]
    out = {}
    for sae_id, sae in loaded.items():
        x = torch.cat([batch[sae.cfg.hook_site] for batch in data])
        out[sae_id] = float(fraction_of_variance_unexplained(sae(x).x_hat, x))
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory the SAEs are written under")
    parser.add_argument("--task", default="ioi", help="the SIIT entry whose prompts the SAEs see and whose model they read by default "
                             "(ioi; docstring-self-fallback: saelab-docstring-siit)")
    parser.add_argument("--model", default=None,
                        help="the entry's model (default), or a directory of other weights of it")
    parser.add_argument("--sites", default="0.attn_z,1.attn_z,2.attn_z,0.mlp_out,1.mlp_out,2.mlp_out")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200_000, help="activation rows per SAE")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.model = args.model or siit_task(args.task).model
    model = load_model(args.model)
    sites = [str(site) for site in parse_sites(args.sites)]
    spec = TrainSpec(model=args.model, saes=tuple(SAESpec(site=s, architecture="topk", width=args.width, k=args.k)
                                           for s in sites),
                     tokens=args.tokens, batch_size=args.batch_size, seed=args.seed, checkpoint_every_tokens=None)
    saes = train_on_siit(model, spec, args.out, args.task)
    fvu = fraction_unexplained(model, saes, seed=args.seed + 10_000, task=args.task)
    record = {"command": shlex.join(["python", "evals/siit_dictionaries.py", *argv]), "model": args.model,
              "settings": vars(args) | {"out": str(args.out)}, "saes": {k: str(v) for k, v in saes.items()},
              "fvu": fvu}
    (args.out / "dictionaries.json").write_text(json.dumps(record, indent=2))
    for sae_id, path in saes.items():
        print(f"{path}  FVU {fvu[sae_id]:.3f}")


if __name__ == "__main__":
    main()
