"""Caching and reading throughput of saelab.activations.

1. Caching (tokens/s, disk writes included) for 1, 3 and 6 sites against a bare forward of the same model
   truncated at the same layer, on a randomly initialised GPT-2-small-shaped model and on saelab-random.
   Each caching run is paired with a bare run just before it, so the ratio is robust to machine load.
2. Optionally SAELens (if installed): its ActivationsStore streaming batches and CacheActivationsRunner.
3. Reading: shuffled batches from a synthetic store much larger than the mixing buffer, with peak RSS
   (measured in a child process).

    .venv/bin/python benchmarks/bench_caching.py            # ~5-10 minutes on 2 shared cores
    .venv/bin/python benchmarks/bench_caching.py --quick    # smaller token counts

Prints a table and writes benchmarks/results/bench_caching.json.
"""

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.activations import cache_activations, parse_sites, stop_layer
from saelab.activations.batches import BatchConfig, store_batches
from saelab.activations.store import write_random_store
from saelab.data import TextsSource, batch_contexts, iter_contexts
from saelab.models import load_model

RESULTS = Path(__file__).parent / "results" / "bench_caching.json"
SITE_SETS = {
    "gpt2-small-random": ["5.resid_post", "5.resid_post,5.attn_z,5.mlp_out",
                          "5.resid_post,5.attn_z,5.mlp_out,5.resid_mid,5.attn_out,5.mlp_post"],
    "saelab-random": ["1.resid_post", "1.resid_post,1.attn_z,1.mlp_out",
                      "1.resid_post,1.attn_z,1.mlp_out,1.resid_mid,1.attn_out,1.mlp_post"],
}


def gpt2_small_random() -> HookedTransformer:
    """GPT-2 small's shape (12 layers, d_model 768, 12 heads, d_mlp 3072) with random weights."""
    from saelab.tasks.gpt2 import gpt2_tokenizer

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, n_ctx=1024,
                                  d_vocab=50257, act_fn="gelu_new", normalization_type="LN", seed=0)
    return HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()


def corpus() -> TextsSource:
    """Standard-library source held in memory (so the numbers measure steady state, not file opening)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for folder in ("json", "email", "asyncio", "logging", "unittest") for p in (root / folder).glob("*.py"))
    return TextsSource(tuple(p.read_text(encoding="utf-8") for p in files), name="stdlib-sample")


class Speed(NamedTuple):
    wall: float
    """Tokens per second of wall-clock time."""
    cpu: float
    """Tokens per second of this process's CPU time (all threads): robust to other jobs on the machine."""


def bare_forward(model, source, n_tokens, context_len, batch_size, stop) -> Speed:
    """Speed of the truncated forward alone, on pre-tokenised batches of the same stream."""
    n_contexts = -(-n_tokens // context_len)
    contexts = list(islice(iter_contexts(source, model.tokenizer, context_len, 0), n_contexts))
    batches = [b.tokens.long() for b in batch_contexts(contexts, batch_size)]
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for tokens in batches:
            model(tokens, stop_at_layer=stop)
    n = sum(b.numel() for b in batches)
    return Speed(n / (time.perf_counter() - wall), n / (time.process_time() - cpu))


def caching(model, name, sites, source, n_tokens, context_len, batch_size, dtype, shard_tokens) -> Speed:
    """Speed of a whole caching call: tokenising, forward, checks, conversion, shard files, manifests."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "results") as out:
        wall, cpu = time.perf_counter(), time.process_time()
        result = cache_activations(name, sites, n_tokens, dtype, out, source, context_len=context_len,
                                   batch_size=batch_size, shard_tokens=shard_tokens, model=model, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Speed(result.tokens_written / wall, result.tokens_written / cpu)


def bench_model(name, model, source, n_tokens, context_len, batch_size, shard_tokens, dtypes, site_sets,
                repeats) -> list[dict]:
    """Bare and caching runs alternate `repeats` times per configuration; the best of each is reported
    (the usual estimator on a machine shared with other jobs), in wall-clock and in CPU time."""
    rows = []
    caching(model, name, site_sets[0], source, context_len * batch_size, context_len, batch_size,
            "float32", shard_tokens)  # warm-up
    for sites in site_sets:
        for dtype in dtypes:
            stop = stop_layer(parse_sites(sites))
            bare, cached = [], []
            for _ in range(repeats):
                bare.append(bare_forward(model, source, n_tokens, context_len, batch_size, stop))
                cached.append(caching(model, name, sites, source, n_tokens, context_len, batch_size, dtype,
                                      shard_tokens))
            best = {key: (max(getattr(b, key) for b in bare), max(getattr(c, key) for c in cached))
                    for key in Speed._fields}
            rows.append({"model": name, "n_sites": len(sites.split(",")), "sites": sites, "dtype": dtype,
                         "tokens": n_tokens, "context_len": context_len, "batch_size": batch_size,
                         "shard_tokens": shard_tokens, "stop_at_layer": stop,
                         "bare_tok_s": best["wall"][0], "cache_tok_s": best["wall"][1],
                         "ratio_wall": best["wall"][1] / best["wall"][0],
                         "bare_tok_per_cpu_s": best["cpu"][0], "cache_tok_per_cpu_s": best["cpu"][1],
                         "ratio_cpu": best["cpu"][1] / best["cpu"][0],
                         "runs": {"bare": [b._asdict() for b in bare], "cache": [c._asdict() for c in cached]}})
            r = rows[-1]
            print(f"  {name:18s} {r['n_sites']} sites {dtype:8s} wall: bare {r['bare_tok_s']:9,.0f} cache "
                  f"{r['cache_tok_s']:9,.0f} tok/s ratio {r['ratio_wall']:.3f} | CPU time: bare "
                  f"{r['bare_tok_per_cpu_s']:9,.0f} cache {r['cache_tok_per_cpu_s']:9,.0f} tok/s ratio "
                  f"{r['ratio_cpu']:.3f}", flush=True)
    return rows


def saelens_streaming(model, hook_name, d_in, source, n_tokens, context_len, batch_size) -> float | None:
    """Tokens/s of SAELens' ActivationsStore producing training batches (streaming, no disk)."""
    try:
        from datasets import Dataset
        from sae_lens.training.activations_store import ActivationsStore
    except ImportError:
        return None
    dataset = Dataset.from_dict({"text": list(source.texts)})
    store = ActivationsStore(
        model=model, dataset=dataset, streaming=False, hook_name=hook_name, hook_head_index=None,
        context_size=context_len, d_in=d_in, n_batches_in_buffer=32, total_training_tokens=n_tokens * 10,
        store_batch_size_prompts=batch_size, train_batch_size_tokens=1024, prepend_bos=True,
        normalize_activations="none", device=torch.device("cpu"), dtype="float32",
    )
    start, produced = time.perf_counter(), 0
    while produced < n_tokens:
        produced += store.next_batch().shape[0]
    return produced / (time.perf_counter() - start)


def saelab_streaming(model, sites, source, n_tokens, context_len, batch_size) -> float:
    from saelab.activations.batches import stream_batches

    buffer = 4 * batch_size * context_len
    start, produced = time.perf_counter(), 0
    batches = stream_batches(model, sites, source, BatchConfig(1024, buffer_tokens=buffer), context_len,
                             model_batch_size=batch_size)
    while produced < n_tokens:
        produced += next(batches)[sites.split(",")[0]].shape[0]
    return produced / (time.perf_counter() - start)


def saelens_cache_runner(model, hook_name, d_in, source, n_tokens, context_len, batch_size) -> float | None:
    """Tokens/s of SAELens' CacheActivationsRunner (it loads models by name, so we hand it ours)."""
    try:
        import sae_lens.cache_activations_runner as runner_module
        from datasets import Dataset
        from sae_lens.config import CacheActivationsRunnerConfig
    except ImportError:
        return None
    runner_module.load_model = lambda **kwargs: model
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "results") as out:
        cfg = CacheActivationsRunnerConfig(
            dataset_path="in-memory", model_name="gpt2", model_batch_size=batch_size, hook_name=hook_name,
            d_in=d_in, training_tokens=n_tokens, context_size=context_len, device="cpu", shuffle=False,
            new_cached_activations_path=str(Path(out) / "cache"), streaming=False,
            buffer_size_gb=n_tokens * d_in * 4 / 1e9,  # one buffer of exactly n_tokens
        )
        runner = runner_module.CacheActivationsRunner(cfg, override_dataset=Dataset.from_dict({"text": list(source.texts)}))
        start = time.perf_counter()
        runner.run()
        return n_tokens / (time.perf_counter() - start)


def memory_status() -> dict[str, float]:
    """Peak and current resident memory of this process in MiB (VmHWM restarts at exec, unlike ru_maxrss)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def read_child(store_dir: str, site: str, batch_size: int, buffer_tokens: int, n_tokens: int) -> dict:
    """Runs in a fresh process: reads one epoch of shuffled batches and reports throughput and peak RSS."""
    before = memory_status()
    batches = store_batches(store_dir, site, BatchConfig(batch_size, buffer_tokens, seed=0, epochs=1))
    start, rows = time.perf_counter(), 0
    for batch in batches:
        rows += batch[site].shape[0]
    seconds = time.perf_counter() - start
    after = memory_status()
    return {"rows": rows, "tok_s": rows / seconds, "seconds": seconds, "store_tokens": n_tokens,
            "rss_before_mib": before["VmRSS"], "peak_rss_mib": after["VmHWM"], "end_rss_anon_mib": after["RssAnon"],
            "end_rss_file_mib": after["RssFile"]}


def bench_reading(n_tokens, d, buffer_tokens, batch_size) -> dict:
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "results") as out:
        start = time.perf_counter()
        write_random_store(Path(out), "0.resid_post", n_tokens, d, shard_tokens=131072)
        written = time.perf_counter() - start
        child = subprocess.run([sys.executable, __file__, "--read-child", out, str(batch_size), str(buffer_tokens),
                                str(n_tokens)], capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(d=d, dtype="float16", store_mib=n_tokens * d * 2 / 2**20, buffer_tokens=buffer_tokens,
                  buffer_mib_float32=buffer_tokens * d * 4 / 2**20, batch_size=batch_size, write_seconds=written)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the tokens")
    parser.add_argument("--skip-saelens", action="store_true")
    parser.add_argument("--only-reading", action="store_true", help="rerun the reading part into the same JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps shared-machine noise low)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare/caching runs per configuration")
    parser.add_argument("--read-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_child:
        store_dir, batch, buffer, n = args.read_child
        print(json.dumps(read_child(store_dir, "0.resid_post", int(batch), int(buffer), int(n))))
        return
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    scale = 4 if args.quick else 1
    report = json.loads(RESULTS.read_text()) if args.only_reading and RESULTS.exists() else {}
    report["machine"] = {"torch_threads": args.threads, "cpus": os.cpu_count(), "python": platform.python_version(),
                         "torch": torch.__version__, "platform": platform.platform(), "load_average": os.getloadavg()}
    if not args.only_reading:
        run_caching(report, args, scale)
    print("reading shuffled batches from a synthetic float16 store")
    report["reading"] = r = bench_reading(1_048_576 // scale, 768, 65536, 4096)
    print(f"  store {r['store_mib']:,.0f} MiB, buffer {r['buffer_tokens']} tokens ({r['buffer_mib_float32']:.0f} MiB "
          f"as float32): {r['tok_s']:,.0f} tok/s, peak RSS {r['peak_rss_mib']:,.0f} MiB "
          f"(after imports {r['rss_before_mib']:,.0f} MiB; at the end anonymous {r['end_rss_anon_mib']:,.0f} MiB, "
          f"file-backed {r['end_rss_file_mib']:,.0f} MiB)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    print(f"wrote {RESULTS}")


def run_caching(report: dict, args: argparse.Namespace, scale: int) -> None:
    source = corpus()
    print(f"caching throughput (paired with a bare truncated forward; torch threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.1f})")
    gpt2 = gpt2_small_random()
    sets = SITE_SETS["gpt2-small-random"]
    report["caching"] = bench_model("gpt2-small-random", gpt2, source, 2048 // scale, 128, 8, 1024, ["float16"],
                                    sets, args.repeats)
    report["caching"] += bench_model("gpt2-small-random", gpt2, source, 2048 // scale, 128, 8, 1024, ["float32"],
                                     sets[2:], args.repeats)
    small = load_model("saelab-random")
    report["caching"] += bench_model("saelab-random", small, source, 65536 // scale, 128, 64, 8192,
                                     ["float16", "float32"], SITE_SETS["saelab-random"], args.repeats)
    stream = saelab_streaming(gpt2, "5.resid_post", source, 4096 // scale, 128, 8)
    report["streaming"] = {"saelab_stream_tok_s": stream}
    print(f"  saelab stream_batches gpt2 5.resid_post: {stream:,.0f} tok/s")
    if not args.skip_saelens:
        bench_saelens(report, gpt2, source, 4096 // scale)


def bench_saelens(report, gpt2, source, n_tokens) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    try:
        streaming = saelens_streaming(gpt2, "blocks.5.hook_resid_post", 768, source, n_tokens, 128, 8)
        runner = saelens_cache_runner(gpt2, "blocks.5.hook_resid_post", 768, source, n_tokens, 128, 8)
    except Exception as exc:  # noqa: BLE001 - an optional comparison must not sink the benchmark
        report["saelens"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  SAELens comparison failed: {type(exc).__name__}: {exc}")
        return
    import sae_lens

    report["saelens"] = {"version": sae_lens.__version__, "activations_store_stream_tok_s": streaming,
                         "cache_activations_runner_tok_s": runner}
    ours = next(r for r in report["caching"] if r["model"] == "gpt2-small-random" and r["n_sites"] == 1)
    print(f"  SAELens {sae_lens.__version__} ActivationsStore stream: {streaming:,.0f} tok/s "
          f"(saelab stream {report['streaming']['saelab_stream_tok_s']:,.0f}); CacheActivationsRunner "
          f"{runner:,.0f} tok/s (saelab cache 1 site {ours['dtype']} {ours['cache_tok_s']:,.0f})")


if __name__ == "__main__":
    main()
