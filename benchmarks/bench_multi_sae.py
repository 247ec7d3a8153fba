"""Multi-SAE training: 8 SAEs on 4 sites of saelab-tiny from one pass cost <= 1.3x the SAE compute alone.

    .venv/bin/python benchmarks/bench_multi_sae.py            # 65,536 tokens, width 2048, 3 rounds (~11 CPU-minutes)
    .venv/bin/python benchmarks/bench_multi_sae.py --quick    # 8,192 tokens, width 1024, 1 round (~30 CPU-seconds)

The 8 SAEs are TopK (k 32) and ReLU-L1 (coefficient 5) on 0-3.resid_post of the bundled saelab-tiny (d_model 256).
Each round times, one after another:
  (a) saelab one pass: `train_saes` on `stream_batches` (tokenising, the model forward truncated after the deepest
      site, the shuffling buffer and 8 SAE steps per batch);
  (b) saelab SAE compute alone: the same 8 SAEs trained on the same batches, collected in memory beforehand (untimed);
  (c) the model forward alone over the same tokens (pre-tokenised, truncated after the deepest site);
  (s) `stream_batches` alone: tokenising, the same forward and the shuffling buffer, without training;
  (d) SAELens' MultiSAETrainingRunner training the same 8 SAEs from one forward per batch, on the same model object
      and the same pre-tokenised contexts (skipped with --skip-saelens or when sae-lens is not installed).
The process runs with the malloc setting `saelab train` applies to its own process (freed large blocks kept for
reuse, saelab.training.reuse_freed_memory; every row gets it, SAELens' too); --default-allocator turns it off.
Medians over the rounds are reported. Wall-clock time and process CPU time (one torch thread by default) are both
recorded; on a machine shared with other jobs the CPU time is the robust number, so the target is checked on it.
Writes benchmarks/results/bench_multi_sae.json.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

os.environ.setdefault("TQDM_DISABLE", "1")  # the runners' progress bars would flood the log

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from saelab.activations import BatchConfig, HookSite, forward_sites, parse_sites, stream_batches
from saelab.corpus import CorpusMix, bundled_corpus
from saelab.data import TextsSource, iter_contexts
from saelab.models import load_model
from saelab.sae import SAEConfig
from saelab.training import TrainerConfig, reuse_freed_memory, train_saes

RESULTS = Path(__file__).parent / "results" / "bench_multi_sae.json"
MODEL = "saelab-tiny"
SITES = "0.resid_post,1.resid_post,2.resid_post,3.resid_post"
CONTEXT_LEN = 128
MODEL_BATCH = 32
K = 32
L1 = 5.0
NORM_BATCHES = 2
"""Batches both tools estimate the input scale from (SAELens draws them on top of the training batches)."""
TARGET = 1.3


class Sizes(NamedTuple):
    tokens: int
    batch: int
    width: int
    buffer: int
    rounds: int


FULL = Sizes(tokens=65536, batch=4096, width=2048, buffer=32768, rounds=3)
QUICK = Sizes(tokens=8192, batch=2048, width=1024, buffer=8192, rounds=1)


class Timing(NamedTuple):
    wall: float
    """Seconds of wall-clock time."""
    cpu: float
    """Seconds of this process's CPU time (all threads)."""


def timed(run: Callable[[], Any]) -> tuple[Timing, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def corpus_source() -> TextsSource:
    """A sample of the bundled corpus held in memory, so generating documents is not timed."""
    texts = tuple(bundled_corpus(0, mix=CorpusMix(task_texts=4000, narratives=2000)))
    return TextsSource(texts, name="bundled-sample", shuffle=False)


def context_tokens(model, source: TextsSource, n_contexts: int) -> Tensor:
    """The first contexts of the stream `stream_batches` reads (same source, seed 0, same context length)."""
    contexts = list(islice(iter_contexts(source, model.tokenizer, CONTEXT_LEN, 0), n_contexts))
    return torch.from_numpy(np.stack([c.tokens for c in contexts])).long()


def saelab_configs(sites: list[HookSite], d_in: int, width: int) -> dict[str, SAEConfig]:
    configs = {}
    for site in sites:
        common = dict(d_in=d_in, d_sae=width, hook_site=str(site), hook_name=site.hook_name, model_name=MODEL)
        configs[f"{site}.topk"] = SAEConfig(architecture="topk", k=K, **common)
        configs[f"{site}.relu_l1"] = SAEConfig(architecture="relu_l1", l1_coefficient=L1, **common)
    return configs


def trainer_config(sizes: Sizes) -> TrainerConfig:
    return TrainerConfig(total_tokens=sizes.tokens, batch_size=sizes.batch, normalization_batches=NORM_BATCHES)


def saelab_stream(model, source: TextsSource, sizes: Sizes):
    return stream_batches(model, SITES, source, BatchConfig(sizes.batch, buffer_tokens=sizes.buffer),
                          context_len=CONTEXT_LEN, model_batch_size=MODEL_BATCH, n_tokens=sizes.tokens)


def one_pass(model, source, configs, sizes: Sizes, out: Path) -> None:
    train_saes(configs, saelab_stream(model, source, sizes), trainer_config(sizes), out, progress=False)


def sae_only(batches: list[dict[str, Tensor]], configs, sizes: Sizes, out: Path) -> None:
    train_saes(configs, iter(batches), trainer_config(sizes), out, progress=False)


def forward_only(model, tokens: Tensor, sites: list[HookSite]) -> None:
    with torch.inference_mode():
        for batch in tokens.split(MODEL_BATCH):
            forward_sites(model, batch, sites)


def saelens_runner(model, dataset, sites: list[HookSite], sizes: Sizes, out: Path) -> int:
    """Train the same 8 SAEs with SAELens' MultiSAETrainingRunner; returns the tokens its model forward processed."""
    from sae_lens import LoggingConfig, MultiSAETrainingRunner, MultiSAETrainingRunnerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    d_in, norm = model.cfg.d_model, "expected_average_only_in"  # the input scaling saelab uses
    saes, hooks = {}, {}
    for site in sites:
        saes[f"{site}.topk"] = TopKTrainingSAEConfig(d_in=d_in, d_sae=sizes.width, k=K, normalize_activations=norm)
        saes[f"{site}.relu_l1"] = StandardTrainingSAEConfig(d_in=d_in, d_sae=sizes.width, l1_coefficient=L1,
                                                            normalize_activations=norm)
        hooks[f"{site}.topk"] = hooks[f"{site}.relu_l1"] = site.hook_name
    cfg = MultiSAETrainingRunnerConfig(
        saes=saes, hook_names=hooks, model_name=MODEL, dataset_path="in-memory", streaming=False,
        context_size=CONTEXT_LEN, n_batches_in_buffer=sizes.buffer // CONTEXT_LEN,  # its buffer: this x context
        training_tokens=sizes.tokens, store_batch_size_prompts=MODEL_BATCH, train_batch_size_tokens=sizes.batch,
        device="cpu", logger=LoggingConfig(log_to_wandb=False), checkpoint_path=None, output_path=str(out),
        n_batches_for_norm_estimate=NORM_BATCHES,
    )
    runner = MultiSAETrainingRunner(cfg, override_dataset=dataset, override_model=model)
    runner.run()
    return runner.activations_store.n_dataset_processed * CONTEXT_LEN


def same_weights(first: Path, second: Path, sae_id: str) -> float:
    """Largest absolute difference between the parameters of one SAE saved by two runs."""
    a, b = (load_file(str(root / sae_id / "sae.safetensors")) for root in (first, second))
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def medians(runs: list[Timing]) -> Timing:
    return Timing(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs))


def saelens_dataset(tokens: Tensor):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": tokens.tolist()})


def run_rounds(model, source, sizes: Sizes, with_saelens: bool) -> dict[str, Any]:
    sites = parse_sites(SITES)
    configs = saelab_configs(sites, model.cfg.d_model, sizes.width)
    batches = list(saelab_stream(model, source, sizes))
    # SAELens also draws its normalisation batches and keeps half its buffer back for mixing
    extra = NORM_BATCHES * sizes.batch + sizes.buffer
    tokens = context_tokens(model, source, (sizes.tokens + extra) // CONTEXT_LEN)
    dataset = saelens_dataset(tokens) if with_saelens else None
    runs: dict[str, list[Timing]] = {"a": [], "b": [], "c": [], "s": [], "d": []}
    report: dict[str, Any] = {"saelens": {}}
    for _ in range(sizes.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            runs["a"].append(timed(partial(one_pass, model, source, configs, sizes, out / "a"))[0])
            runs["b"].append(timed(partial(sae_only, batches, configs, sizes, out / "b"))[0])
            runs["c"].append(timed(partial(forward_only, model, tokens[: sizes.tokens // CONTEXT_LEN], sites))[0])
            runs["s"].append(timed(lambda: sum(1 for _ in saelab_stream(model, source, sizes)))[0])
            report["a_vs_b_max_weight_diff"] = max(same_weights(out / "a", out / "b", i) for i in configs)
            if with_saelens and "error" not in report["saelens"]:
                run_saelens(model, dataset, sites, sizes, out / "d", runs, report)
        print(f"  round {len(runs['a'])}/{sizes.rounds} done (CPU s: " + ", ".join(
            f"{name} {values[-1].cpu:.1f}" for name, values in runs.items() if values) + ")", flush=True)
    report["runs"] = {name: [r._asdict() for r in values] for name, values in runs.items() if values}
    report["median"] = {name: medians(values)._asdict() for name, values in runs.items() if values}
    return report


def run_saelens(model, dataset, sites, sizes, out, runs, report) -> None:
    try:
        import sae_lens
    except ImportError:
        report["saelens"] = {"error": "sae-lens is not installed"}
        return
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timing, processed = timed(partial(saelens_runner, model, dataset, sites, sizes, out))
    except Exception as exc:  # noqa: BLE001 - an optional comparison must not sink the benchmark
        report["saelens"] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    runs["d"].append(timing)
    report["saelens"] = {"version": sae_lens.__version__, "tokens_forwarded": processed}


def print_table(report: dict[str, Any], sizes: Sizes) -> None:
    m = {name: Timing(**values) for name, values in report["median"].items()}
    rows = [("a", "(a) saelab one pass: stream + 8 SAEs", sizes.tokens),
            ("b", "(b) saelab 8 SAEs on batches in memory", sizes.tokens),
            ("c", "(c) model forward alone (4 sites)", sizes.tokens),
            ("s", "(s) stream_batches alone (no training)", sizes.tokens),
            ("d", "(d) SAELens MultiSAETrainingRunner", sizes.tokens)]
    print(f"{'':42s} {'CPU s':>8s} {'wall s':>8s} {'tok/CPU-s':>10s} {'CPU / (b)':>10s} {'wall / (b)':>10s}")
    for key, label, n in rows:
        if key not in m:
            continue
        t = m[key]
        print(f"{label:42s} {t.cpu:8.1f} {t.wall:8.1f} {n / t.cpu:10,.0f} {t.cpu / m['b'].cpu:10.3f} "
              f"{t.wall / m['b'].wall:10.3f}")
    if "error" in report["saelens"]:
        print(f"(d) SAELens MultiSAETrainingRunner: not run: {report['saelens']['error']}")
    r = report["ratios"]
    verdict = "meets" if r["one_pass_cpu"] <= TARGET else "MISSES"
    print(f"one pass / SAE compute alone: {r['one_pass_cpu']:.3f} in CPU time ({verdict} the <= {TARGET} target), "
          f"{r['one_pass_wall']:.3f} in wall time; round by round in CPU time: "
          + ", ".join(f"{x:.3f}" for x in r["one_pass_cpu_rounds"]))
    print(f"forward alone / SAE compute alone: {r['forward_cpu']:.3f}; stream alone / SAE compute alone: "
          f"{r['stream_cpu']:.3f}; (a) - (b) - (s): {r['interference_cpu_s']:+.1f} CPU s (what interleaving the "
          "stream with training adds: page faults of fresh windows, caches)")
    print(f"(a) and (b) trained identical SAEs: largest weight difference {report['a_vs_b_max_weight_diff']:.2e}")
    if "d" in m:
        print(f"SAELens {report['saelens']['version']} / saelab one pass: {r['saelens_cpu']:.3f} in CPU time, "
              f"{r['saelens_wall']:.3f} in wall time (SAELens forwarded {report['saelens']['tokens_forwarded']:,} "
              f"tokens for {sizes.tokens:,} trained: normalisation batches and its mixing buffer)")


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    m = {name: Timing(**values) for name, values in report["median"].items()}
    rounds = [a["cpu"] / b["cpu"] for a, b in zip(report["runs"]["a"], report["runs"]["b"], strict=True)]
    out = {"one_pass_cpu": m["a"].cpu / m["b"].cpu, "one_pass_wall": m["a"].wall / m["b"].wall,
           "one_pass_cpu_rounds": rounds,
           "forward_cpu": m["c"].cpu / m["b"].cpu, "stream_cpu": m["s"].cpu / m["b"].cpu,
           "interference_cpu_s": m["a"].cpu - m["b"].cpu - m["s"].cpu}
    if "d" in m:
        out |= {"saelens_cpu": m["d"].cpu / m["a"].cpu, "saelens_wall": m["d"].wall / m["a"].wall}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8,192 tokens, batch 2048, width 1024, 1 round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, or 1 with --quick)")
    parser.add_argument("--tokens", type=int, help="training tokens per run (a multiple of the batch size)")
    parser.add_argument("--width", type=int, help="latents per SAE")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps shared-machine noise low)")
    parser.add_argument("--skip-saelens", action="store_true")
    parser.add_argument("--default-allocator", action="store_true",
                        help="leave glibc's malloc as it is (by default the process keeps freed large blocks, as "
                             "`saelab train` does)")
    args = parser.parse_args()
    allocator = "default malloc" if args.default_allocator or not reuse_freed_memory() else "freed blocks reused"
    sizes = QUICK if args.quick else FULL
    sizes = sizes._replace(**{k: v for k, v in (("rounds", args.rounds), ("tokens", args.tokens),
                                                 ("width", args.width)) if v is not None})
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.basicConfig(level=logging.WARNING)
    model, source = load_model(MODEL), corpus_source()
    print(f"{MODEL}: 8 SAEs (TopK k={K} and ReLU-L1 {L1} on {SITES}), width {sizes.width}, {sizes.tokens:,} tokens, "
          f"batch {sizes.batch}, torch {torch.__version__}, {args.threads} thread(s), {sizes.rounds} round(s), "
          f"{allocator}, load average {os.getloadavg()[0]:.1f}", flush=True)
    report = run_rounds(model, source, sizes, with_saelens=not args.skip_saelens)
    report["ratios"] = ratios(report)
    report["sizes"] = sizes._asdict()
    report["machine"] = {"allocator": allocator, "torch_threads": args.threads, "cpus": os.cpu_count(), "python": platform.python_version(),
                         "torch": torch.__version__, "platform": platform.platform(), "load_average": os.getloadavg()}
    print_table(report, sizes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
