"""Bounded memory when the data is larger than the mixing buffer: train an SAE for one epoch over a cached store
several times the size of the trainer's shuffle buffer and measure the training process's peak RSS.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_memory.py           # 1 GiB float16 store, d_in 1024
    PYTHONPATH=. .venv/bin/python benchmarks/bench_memory.py --quick   # 256 MiB store, d_in 512

Each row trains in a fresh child process (`--child`), reading the store with `store_batches` (windows of at most
`buffer_tokens` rows, memory-mapped shards whose pages are released after each read) into `train_saes`, with no
model loaded. Peak RSS is the child's VmHWM (its whole life, imports included), checked against the parent's
`getrusage(RUSAGE_CHILDREN).ru_maxrss`. The bound is buffer (float32 window) + model (0: none loaded) + SAEs
(`saelab.workflows.train.training_bytes`: parameters, gradients, Adam moments and a batch's latents) + 1 GiB.
The last row gives the window the whole store: its peak shows what the same run costs when the buffer is not
smaller than the data, so that a bounded row cannot be an artefact of the measurement.
Writes benchmarks/results/bench_memory.json.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_caching import memory_status  # this process's peak/current RSS from /proc

SITE = "0.resid_post"
RESULTS = Path(__file__).parent / "results" / "bench_memory.json"
MIB = 2**20


def child(store_dir: str, buffer_tokens: int, batch_size: int, width: int, k: int) -> dict:
    """Runs in a fresh process: one epoch of SAE training from the store; what its memory did."""
    import torch

    from saelab.activations.batches import BatchConfig, store_batches
    from saelab.circuits.measure import measured
    from saelab.sae import SAEConfig
    from saelab.training import TrainerConfig, train_saes
    from saelab.workflows.train import training_bytes

    torch.set_num_threads(1)
    batches = store_batches(store_dir, SITE, BatchConfig(batch_size, buffer_tokens, seed=0, epochs=1))
    n_tokens, d = batches.windows.n_rows, batches.windows.stores[0].d
    sae = SAEConfig(architecture="topk", d_in=d, d_sae=width, k=k, hook_site=SITE)
    trainer = TrainerConfig(total_tokens=n_tokens // batch_size * batch_size, batch_size=batch_size, lr=1e-3,
                            log_every_steps=10**9)
    before = memory_status()
    with tempfile.TemporaryDirectory() as out, measured() as during:
        trained = train_saes({"memory": sae}, batches, trainer, output_dir=out, progress=False)
    seconds = during.seconds
    after = memory_status()
    return {"store_tokens": n_tokens, "d": d, "buffer_tokens": buffer_tokens, "batch_size": batch_size,
            "width": width, "k": k, "steps": trained[0].steps, "tokens": trained[0].tokens, "seconds": seconds,
            "tok_s": trained[0].tokens / seconds, "rss_before_mib": before["VmRSS"], "peak_rss_mib": after["VmHWM"],
            "training_growth_mib": during.peak_memory_mb,
            "end_rss_anon_mib": after["RssAnon"], "end_rss_file_mib": after["RssFile"],
            "buffer_mib": buffer_tokens * d * 4 / MIB, "saes_mib": training_bytes([sae], batch_size) / MIB}


def run_child(store_dir: str, buffer_tokens: int, batch_size: int, width: int, k: int) -> dict:
    """`child` in a fresh interpreter; its report, with the bound and the parent's view of its peak."""
    args = json.dumps([store_dir, buffer_tokens, batch_size, width, k])
    done = subprocess.run([sys.executable, __file__, "--child", args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"training child failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["children_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row["bound_mib"] = row["buffer_mib"] + row["saes_mib"] + 1024  # + model: none loaded
    row["within_bound"] = row["peak_rss_mib"] <= row["bound_mib"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 256 MiB store at d_in 512")
    parser.add_argument("--buffers", type=int, nargs="+", default=None,
                        help="buffer sizes in tokens (default: 1/8 and 1/4 of the store, and the whole store)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    from saelab.activations.store import write_random_store

    d, n_tokens, buffer_tokens = (512, 262_144, 32_768) if args.quick else (1024, 524_288, 65_536)
    report = {"rows": []}
    with tempfile.TemporaryDirectory() as store_dir:
        write_random_store(store_dir, SITE, n_tokens, d, shard_tokens=65_536, dtype="float16")
        store_mib = n_tokens * d * 2 / MIB
        print(f"store: {n_tokens:,} tokens x d {d} float16 = {store_mib:,.0f} MiB; one epoch of a TopK SAE "
              f"(width {4 * d}, k 32, batch 4096) per row, each in a fresh process")
        print("  buffer tokens | store/buffer (tokens, bytes) | buffer MiB | SAEs MiB | peak RSS MiB | bound MiB | "
              "within | RSS after imports | tok/s")
        for buffer in args.buffers or (buffer_tokens, 2 * buffer_tokens, n_tokens):
            row = run_child(store_dir, buffer, 4096, 4 * d, 32)
            row["store_mib"] = store_mib
            report["rows"].append(row)
            print(f"  {buffer:>13,} | {n_tokens / buffer:>5.1f}x, {store_mib / row['buffer_mib']:>4.1f}x"
                  f"{'':>17}| {row['buffer_mib']:>10,.0f} | {row['saes_mib']:>8,.0f} | {row['peak_rss_mib']:>12,.0f} | "
                  f"{row['bound_mib']:>9,.0f} | {str(row['within_bound']):>6} | {row['rss_before_mib']:>17,.0f} | "
                  f"{row['tok_s']:,.0f}", flush=True)
    report["children_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS.with_name("bench_memory_quick.json") if args.quick else RESULTS
    if args.buffers:
        out = out.with_name(out.stem + "_buffers_" + "_".join(map(str, args.buffers)) + ".json")
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
