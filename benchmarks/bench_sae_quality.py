"""SAE quality at the same token budget: saelab TopK vs EleutherAI sparsify vs SAELens TopK on identical activations.

    .venv/bin/python benchmarks/bench_sae_quality.py           # 1,048,576 training tokens, batch 4096 (256 steps)
    .venv/bin/python benchmarks/bench_sae_quality.py --quick   # 61,440 training tokens, batch 1024 (60 steps)

Claim checked: saelab's held-out FVU is within 2% (relative) of the better peer's.

Activations of the bundled saelab-tiny at 2.resid_post, over a sample of the bundled corpus, are collected once into
one tensor. The BOS position of each context is dropped (it is the same vector in every context and would inflate
the variance every tool explains). Every tool trains on the same rows in the same batch order, for the same number
of steps, with TopK k=32, 4096 latents (16 x d_model), Adam, and its own training loop with its own
default/recommended learning rate and schedule:
  saelab    `train_saes` with the settings `saelab train` uses: lr 3e-3 (the topk default), b_dec starting at the
            mean of the first batches, warm-up min(100, steps/10), linear decay
            over the last 20% of steps, AuxK on latents idle for min(1M, tokens/16) tokens, inputs normalised to mean
            norm sqrt(d_in) (folded into the weights on save); the result is read back with `load_sae`.
  sparsify  its own `Trainer.fit`, fed through a stand-in model whose hooked module returns the cached rows (the
            "token ids" are row indices): optimizer "adam", lr 2e-4 / sqrt(latents / 2^14) (its default), linear
            warm-up of 1000 steps (its default, capped at a tenth of the run here) then linear decay to 0, FVU loss,
            auxk_alpha 0 (its default: no AuxK), b_dec set to the first batch's mean; read back with load_from_disk.
  SAELens   its own `SAETrainer.fit` on TopKTrainingSAE: lr 3e-4 constant (the runner default), Adam (0.9, 0.999),
            gradient clipping 1.0, aux loss coefficient 1.0, no input normalisation (the default).
Two more rows show each peer's other usual setting, so that a gap is not an artefact of one choice:
  sparsify-signum  sparsify's default optimizer (SignSGD, schedule-free, lr 5e-3 / sqrt(latents / 2^14));
  sae-lens-norm    SAELens with normalize_activations="expected_average_only_in" (scale from the first 8 batches).
The claim is checked against the better of the Adam rows, and also reported against the best row of all.
FVU = sum of squared errors / sum of squared deviations from the mean, over held-out rows from later contexts of the
same stream (never trained on); L0 = mean number of non-zero latents per row; dead = latents that never fire on them.
Writes benchmarks/results/bench_sae_quality.json.
"""

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TQDM_DISABLE", "1")  # the trainers' progress bars would flood the log

import numpy as np
import torch
from torch import Tensor, nn

from saelab.activations import forward_sites, parse_sites
from saelab.corpus import CorpusMix, bundled_corpus
from saelab.data import TextsSource, iter_contexts
from saelab.models import load_model
from saelab.sae import SAEConfig, get_architecture, load_sae
from saelab.training import train_saes
from saelab.workflows.train import scheduled_trainer_config

RESULTS = Path(__file__).parent / "results" / "bench_sae_quality.json"
MODEL, SITE = "saelab-tiny", "2.resid_post"
CONTEXT_LEN, MODEL_BATCH = 128, 32
K, EXPANSION = 32, 16
ROWS_PER_SEQUENCE = 128
"""Rows per stand-in "sequence" for sparsify, whose batch size counts sequences."""
TOLERANCE = 0.02
SAELAB_LR = get_architecture("topk").default_lr
"""The peak lr `saelab train` uses for a TopK SAE by default."""
NORM_BATCHES = 8
"""Batches an input-scale estimate reads (saelab's default; SAELens' variant row gets the same)."""


class Sizes(NamedTuple):
    train_tokens: int
    eval_tokens: int
    batch: int


FULL = Sizes(train_tokens=1_048_576, eval_tokens=131_072, batch=4096)
QUICK = Sizes(train_tokens=61_440, eval_tokens=16_384, batch=1024)


class Data(NamedTuple):
    train: Tensor
    """Training rows [n_train, d_in], float32."""
    order: Tensor
    """The batch order every tool follows: a permutation of the training rows."""
    held_out: Tensor
    """Held-out rows [n_eval, d_in] from contexts after the training ones."""


class Trained(NamedTuple):
    """A trained SAE as two functions on raw activations, and what training it took."""

    encode: Callable[[Tensor], Tensor]
    """rows [n, d_in] -> dense latents [n, d_sae]."""
    decode: Callable[[Tensor], Tensor]
    """dense latents -> reconstructions [n, d_in]."""
    lr: float
    schedule: str
    wall_s: float
    cpu_s: float


# ---------------------------------------------------------------- data


def collect_rows(n_rows: int, threads_note: str) -> tuple[Tensor, int]:
    """Activations of SITE for the first contexts of the bundled sample, BOS positions dropped; also d_model."""
    model = load_model(MODEL)
    texts = tuple(bundled_corpus(0, mix=CorpusMix(task_texts=4000, narratives=2000)))
    source = TextsSource(texts, name="bundled-sample", shuffle=False)
    n_contexts = math.ceil(n_rows / (CONTEXT_LEN - 1))
    contexts = list(islice(iter_contexts(source, model.tokenizer, CONTEXT_LEN, 0), n_contexts))
    if len(contexts) < n_contexts:
        raise ValueError(f"the corpus sample holds {len(contexts)} contexts; {n_contexts} are needed")
    tokens = torch.from_numpy(np.stack([c.tokens for c in contexts])).long()
    sites, chunks = parse_sites(SITE), []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tokens.split(MODEL_BATCH):
            act = forward_sites(model, batch, sites)[sites[0]]
            chunks.append(act[:, 1:].reshape(-1, act.shape[-1]).float())
    print(f"collected {n_contexts * (CONTEXT_LEN - 1):,} rows of {MODEL} {SITE} from {n_contexts:,} contexts in "
          f"{time.perf_counter() - start:.0f} s ({threads_note})", flush=True)
    return torch.cat(chunks), model.cfg.d_model


def make_data(sizes: Sizes, threads_note: str) -> tuple[Data, int]:
    """Training rows, then held-out rows starting at the next whole context."""
    first_eval = math.ceil(sizes.train_tokens / (CONTEXT_LEN - 1)) * (CONTEXT_LEN - 1)
    rows, d_model = collect_rows(first_eval + sizes.eval_tokens, threads_note)
    order = torch.randperm(sizes.train_tokens, generator=torch.Generator().manual_seed(0))
    data = Data(rows[: sizes.train_tokens].clone(), order, rows[first_eval:first_eval + sizes.eval_tokens].clone())
    return data, d_model


def batch_rows(data: Data, batch: int) -> Iterator[Tensor]:
    for step in range(len(data.order) // batch):
        yield data.train[data.order[step * batch:(step + 1) * batch]]


def timed(train: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = train()
    return time.perf_counter() - wall, time.process_time() - cpu, result


# ---------------------------------------------------------------- saelab


def train_saelab(data: Data, d_in: int, batch: int, out: Path, lr: float = SAELAB_LR,
                 b_dec_at_mean: bool = True) -> Trained:
    steps = len(data.order) // batch
    tokens = steps * batch
    config = scheduled_trainer_config(tokens, batch, lr=lr, init_b_dec_to_mean=b_dec_at_mean)  # as `saelab train`
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=EXPANSION * d_in, k=K, hook_site=SITE, model_name=MODEL)
    batches = ({SITE: rows} for rows in batch_rows(data, batch))
    wall, cpu, trained = timed(lambda: train_saes({"saelab-topk": cfg}, batches, config, out, progress=False))
    sae = load_sae(trained[0].paths.directory)
    schedule = (f"warm-up {config.lr_warmup_steps}, decay last {config.lr_decay_steps}, AuxK, "
                f"input normalisation, b_dec from {'the mean' if b_dec_at_mean else 'zero'}")
    return Trained(sae.encode, sae.decode, config.lr, schedule, wall, cpu)


# ---------------------------------------------------------------- sparsify


class RowLookup(nn.Module):
    """Stands in for a language model in sparsify's Trainer: its "token ids" are row indices into the cached
    activations and its one hookable module returns those rows, so the Trainer's own loop trains on our batches."""

    def __init__(self, rows: Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        self.site = nn.Identity()
        self.dummy_inputs = {"input_ids": torch.zeros(1, 2, dtype=torch.long)}

    @property
    def base_model(self) -> nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return self.rows.device

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.site(self.rows[input_ids])


def train_sparsify(data: Data, d_in: int, batch: int, out: Path, optimizer: str = "adam") -> Trained:
    with contextlib.redirect_stdout(io.StringIO()):  # it announces its eager sparse-decoder fallback on import
        from sparsify import SparseCoder, SparseCoderConfig, Trainer
        from sparsify.config import TrainConfig

    if batch % ROWS_PER_SEQUENCE:
        raise ValueError(f"batch {batch} must be a multiple of {ROWS_PER_SEQUENCE} for sparsify's sequence batches")
    steps = len(data.order) // batch
    sequences = [{"input_ids": data.order[i:i + ROWS_PER_SEQUENCE]}
                 for i in range(0, steps * batch, ROWS_PER_SEQUENCE)]
    cfg = TrainConfig(
        SparseCoderConfig(num_latents=EXPANSION * d_in, k=K), batch_size=batch // ROWS_PER_SEQUENCE,
        optimizer=optimizer, lr_warmup_steps=min(1000, steps // 10), hookpoints=["site"], log_to_wandb=False,
        save_dir=str(out), run_name="sparsify",
    )
    precision = torch.get_float32_matmul_precision()
    torch.manual_seed(0)
    quiet = io.StringIO()  # it prints its settings and checkpoints, and its progress bar ignores TQDM_DISABLE
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        trainer = Trainer(cfg, sequences, RowLookup(data.train))
        wall, cpu, _ = timed(trainer.fit)
    torch.set_float32_matmul_precision(precision)  # fit() sets "high"; the other tools keep the default
    sae = SparseCoder.load_from_disk(out / "sparsify" / "site")
    group = trainer.optimizers[0].param_groups[0]
    lr = group.get("initial_lr", group["lr"])

    def encode(x: Tensor) -> Tensor:
        top = sae.encode(x)
        return torch.zeros(x.shape[0], sae.num_latents).scatter_(1, top.top_indices, top.top_acts)

    def decode(latents: Tensor) -> Tensor:
        return latents @ sae.W_dec + sae.b_dec

    schedule = (f"warm-up {cfg.lr_warmup_steps}, linear decay to 0, no AuxK" if optimizer == "adam"
                else f"{optimizer} (schedule-free), no AuxK")
    return Trained(encode, decode, lr, schedule, wall, cpu)


# ---------------------------------------------------------------- SAELens


def train_saelens(data: Data, d_in: int, batch: int, out: Path, normalize: str = "none") -> Trained:
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    steps = len(data.order) // batch
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=EXPANSION * d_in, k=K, normalize_activations=normalize))
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=3e-4,
                           lr_end=3e-5,  # what its runner configs derive (lr / 10); unused by the constant schedule
                           n_batches_for_norm_estimate=NORM_BATCHES)
    # a scale estimate consumes batches; it gets the first training batches again, as saelab's estimate reads them
    scale_batches = islice(batch_rows(data, batch), NORM_BATCHES if normalize != "none" else 0)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=chain(scale_batches, batch_rows(data, batch)))
    wall, cpu, trained = timed(trainer.fit)
    trained.eval()
    schedule = "constant, aux loss" + (", input normalisation" if normalize != "none" else "")
    return Trained(trained.encode, trained.decode, cfg.lr, schedule, wall, cpu)


# ---------------------------------------------------------------- evaluation and report

TOOLS: dict[str, Callable[[Data, int, int, Path], Trained]] = {
    "saelab": train_saelab,
    "sparsify": train_sparsify,
    "sae-lens": train_saelens,
    # not the protocol above, but each peer's other usual setting, so a gap is not an artefact of one choice
    "sparsify-signum": partial(train_sparsify, optimizer="signum"),  # sparsify's default optimizer
    "sae-lens-norm": partial(train_saelens, normalize="expected_average_only_in"),
}
PROTOCOL = ("saelab", "sparsify", "sae-lens")
"""The rows that follow the protocol (Adam, default lr and normalisation); the claim is checked against these."""


@torch.no_grad()
def evaluate(trained: Trained, held_out: Tensor, chunk: int = 4096) -> dict[str, float]:
    """FVU over all held-out rows, mean L0 and the fraction of latents that never fire on them."""
    error, fired, l0 = 0.0, None, 0.0
    for rows in held_out.split(chunk):
        latents = trained.encode(rows)
        error += float((trained.decode(latents) - rows).double().pow(2).sum())
        active = latents != 0
        l0 += float(active.sum())
        fired = active.any(0) if fired is None else fired | active.any(0)
    variance = float((held_out.double() - held_out.double().mean(0)).pow(2).sum())
    return {"fvu": error / variance, "l0": l0 / len(held_out), "dead_fraction": 1 - float(fired.float().mean())}


def run_tools(tools: dict[str, Callable[[Data, int, int, Path], Trained]], data: Data, d_in: int,
              batch: int) -> list[dict[str, Any]]:
    rows = []
    for name, train in tools.items():
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                trained = train(data, d_in, batch, Path(tmp))
                row = {"tool": name, "lr": trained.lr, "schedule": trained.schedule,
                       "wall_s": trained.wall_s, "cpu_s": trained.cpu_s} | evaluate(trained, data.held_out)
            except ImportError as exc:
                row = {"tool": name, "error": f"{exc.name} is not installed"}
            except Exception as exc:  # noqa: BLE001 - one failing peer must not sink the others
                row = {"tool": name, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row | {"steps": len(data.order) // batch, "tokens": len(data.order) // batch * batch})
        print(f"  {name}: " + (row.get("error") or f"FVU {row['fvu']:.4f}, L0 {row['l0']:.1f}, "
                               f"{row['cpu_s']:.0f} CPU s"), flush=True)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    done = [r for r in rows if "fvu" in r]
    best = min(r["fvu"] for r in done) if done else float("nan")
    print(f"{'tool':16s} {'lr':>8s} {'steps':>6s} {'tokens':>10s} {'FVU':>8s} {'L0':>6s} {'dead':>6s} "
          f"{'wall s':>7s} {'CPU s':>7s} {'FVU / best':>10s}  schedule")
    for r in rows:
        if "fvu" not in r:
            print(f"{r['tool']:16s} not run: {r['error']}")
            continue
        r["fvu_relative_to_best"] = r["fvu"] / best
        print(f"{r['tool']:16s} {r['lr']:8.1e} {r['steps']:6d} {r['tokens']:10,d} {r['fvu']:8.4f} {r['l0']:6.1f} "
              f"{r['dead_fraction']:6.1%} {r['wall_s']:7.0f} {r['cpu_s']:7.0f} {r['fvu'] / best:10.3f}  {r['schedule']}")
    ours = next((r for r in done if r["tool"] == "saelab"), None)
    for label, names in (("the better peer (Adam, default settings)", PROTOCOL), ("the best peer row", None)):
        peers = [r for r in done if not r["tool"].startswith("saelab") and (names is None or r["tool"] in names)]
        if ours and peers:
            best_peer = min(peers, key=lambda r: r["fvu"])
            gap = ours["fvu"] / best_peer["fvu"] - 1
            verdict = "within" if gap <= TOLERANCE else "NOT within"
            print(f"saelab FVU vs {label} ({best_peer['tool']}): {gap:+.1%} ({verdict} {TOLERANCE:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="61,440 training tokens, batch 1024")
    parser.add_argument("--train-tokens", type=int, help="training rows (default 1,048,576, or 61,440 with --quick)")
    parser.add_argument("--only", nargs="*", choices=list(TOOLS), help="tools to run (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps shared-machine noise low)")
    parser.add_argument("--saelab-lr", type=float, nargs="+", default=[SAELAB_LR],
                        help=f"saelab's peak lr (default {SAELAB_LR:g}, what `saelab train` uses); more values add diagnostic "
                             "rows 'saelab-lrX', which the claim is not checked on")
    parser.add_argument("--saelab-b-dec", choices=("mean", "zero"), nargs="+", default=["mean"],
                        help="where saelab's b_dec starts (default: the data mean, as `saelab train` does); 'zero' "
                             "adds diagnostic rows named '-b0'")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default benchmarks/results/...)")
    args = parser.parse_args()
    args.saelab_b_dec = [choice == "mean" for choice in args.saelab_b_dec]
    sizes = QUICK if args.quick else FULL
    if args.train_tokens:
        sizes = sizes._replace(train_tokens=args.train_tokens)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    data, d_model = make_data(sizes, f"{args.threads} torch thread(s)")
    print(f"{MODEL} {SITE}: TopK k={K}, {EXPANSION * d_model} latents, batch {sizes.batch}, "
          f"{len(data.order) // sizes.batch} steps, {len(data.held_out):,} held-out rows, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    saelab_rows = {
        ("saelab" if lr == SAELAB_LR and at_mean else f"saelab-lr{lr:g}" + ("" if at_mean else "-b0")):
            partial(train_saelab, lr=lr, b_dec_at_mean=at_mean)
        for lr in args.saelab_lr for at_mean in args.saelab_b_dec
    } if not args.only or "saelab" in args.only else {}
    peers = {name: train for name, train in TOOLS.items() if name != "saelab" and (not args.only or name in args.only)}
    rows = run_tools(saelab_rows | peers, data, d_model, sizes.batch)
    print_table(rows)
    report = {"sizes": sizes._asdict(), "saelab_lr": args.saelab_lr, "model": MODEL, "site": SITE, "k": K, "d_sae": EXPANSION * d_model,
              "rows": rows, "machine": {"torch_threads": args.threads, "cpus": os.cpu_count(),
                                        "python": platform.python_version(), "torch": torch.__version__,
                                        "platform": platform.platform(), "load_average": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
