"""Page faults and CPU time per TopK training step, for the library called from a plain script.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_step_faults.py              # d_in 256 and 768, 3 repeats
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_step_faults.py --mallopt    # with reuse_freed_memory() first
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_step_faults.py --quick      # small sizes, a smoke test

Each repeat is a fresh process that calls `saelab.training.train_saes` on one TopK SAE (width 16 x d_in, k 32,
batch 4096, no checkpoints, no progress bar) the way a user's script would, on the default glibc allocator
unless --mallopt. The batch iterator it is handed reads `resource.getrusage` every time the trainer asks for a
batch, so the difference between two requests is one training step (forward, loss, backward, Adam, dead-latent
bookkeeping); the first `--warmup` steps are left out. Reported per step: minor page faults (a count, which does
not depend on what else the machine runs) and user + system CPU milliseconds (which does, a little, on a shared
machine: caches and memory bandwidth are shared).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import torch

from saelab.sae import SAEConfig
from saelab.training import TrainerConfig, reuse_freed_memory, train_saes

SITE = "blocks.0.hook_resid_post"


def _usage() -> tuple[int, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_utime, usage.ru_stime


def measure(d_in: int, expansion: int, k: int, batch: int, steps: int, warmup: int) -> list[dict[str, float]]:
    """Per-step minor faults and CPU ms of `steps` training steps after `warmup` ones, in this process."""
    pool = [torch.randn(batch, d_in, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    marks: list[tuple[int, float, float]] = []

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for i in range(warmup + steps):
            marks.append(_usage())
            yield {SITE: pool[i % len(pool)]}
        marks.append(_usage())

    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=expansion * d_in, k=k, hook_site=SITE)
    config = TrainerConfig(
        total_tokens=(warmup + steps) * batch, batch_size=batch, lr=3e-3, normalization_batches=1,
        log_every_steps=10**9,
    )
    with tempfile.TemporaryDirectory() as out:
        train_saes({"sae": cfg}, batches(), config, out, progress=False)
    # marks[i + 1] - marks[i] spans step i (the first batch is requested before any step, for normalisation)
    return [
        {"minflt": b[0] - a[0], "user_ms": 1000 * (b[1] - a[1]), "sys_ms": 1000 * (b[2] - a[2])}
        for a, b in zip(marks[warmup + 1 : -1], marks[warmup + 2 :], strict=True)
    ]


def _child(args: argparse.Namespace, d_in: int) -> dict[str, float]:
    command = [
        sys.executable, __file__, "--child", "--d-in", str(d_in), "--expansion", str(args.expansion), "--k",
        str(args.k), "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads),
    ] + (["--mallopt"] if args.mallopt else [])
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-in", type=int, nargs="+", default=[256, 768])
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=8, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per d_in")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mallopt", action="store_true", help="call reuse_freed_memory() first")
    parser.add_argument("--quick", action="store_true", help="d_in 64, batch 512, 3 steps, 1 repeat")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        applied = reuse_freed_memory() if args.mallopt else False
        rows = measure(args.d_in[0], args.expansion, args.k, args.batch, args.steps, args.warmup)
        median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        print(json.dumps(median | {"mallopt": applied}))
        return
    if args.quick:
        args.d_in, args.batch, args.steps, args.warmup, args.repeats = [64], 512, 3, 1, 1
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, k {args.k}, "
          f"width {args.expansion} x d_in, mallopt {'on' if args.mallopt else 'off'}; "
          f"median over {args.steps} steps per process, {args.repeats} processes")
    for d_in in args.d_in:
        repeats = [_child(args, d_in) for _ in range(args.repeats)]
        cells = "  ".join(
            f"{r['minflt']:8.0f} faults {r['user_ms'] + r['sys_ms']:7.0f} ms ({r['sys_ms']:4.0f} sys)" for r in repeats
        )
        print(f"d_in {d_in:5d} d_sae {args.expansion * d_in:6d}: {cells}", flush=True)


if __name__ == "__main__":
    main()
