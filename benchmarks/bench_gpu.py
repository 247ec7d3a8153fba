"""The GPU check's benchmarks: the TopK training step at GPU sizes and caching on the GPT-2-small-shaped model.

    python benchmarks/bench_gpu.py --device cuda --out benchmarks/results/gpu_check.md
    python benchmarks/bench_gpu.py --device cpu --small --out /tmp/gpu_check.md   # known to run without a GPU

1. The TopK step (forward, loss, backward, fused Adam, decoder renorm; no AuxK) of saelab, EleutherAI sparsify
   (if installed) and a plain dense PyTorch step, with the encoder matmul alone as the floor, timed in
   interleaved rounds (median), at d_in 768 and 2304 with 32k and 128k latents, batch 4096, k 32, in float32
   and bfloat16 (`bench_sae_step`'s implementations). On CUDA every step is waited for before its clock stops.
2. Caching activations of 1, 3 and 6 sites of a randomly initialised GPT-2-small-shaped model against the bare
   truncated forward, wall-clock (`bench_caching`'s runs; the model on the device, shards written to disk).

Writes a Markdown section (one table per part) to --out for BENCHMARKS.md. --small: d_in 64/128, 1k/4k latents,
batch 256, a few caching contexts, so that the whole check runs in a minute on a CPU.
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # the sibling benchmark modules
from bench_caching import SITE_SETS, bench_model, corpus, gpt2_small_random  # noqa: E402
from bench_sae_step import build_steps, time_rounds  # noqa: E402

STEP_IMPLEMENTATIONS = ("saelab", "sparsify", "dense torch", "floor")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def step_rows(device: str, small: bool, rounds: int, skipped: set[str]) -> list[str]:
    d_ins, widths, batch = ((64, 128), (1024, 4096), 256) if small else ((768, 2304), (32768, 131072), 4096)
    rows = []
    for d_in in d_ins:
        for d_sae in widths:
            for dtype_name, dtype in DTYPES.items():
                steps = build_steps(d_in, 0, 32, batch, device, dtype, STEP_IMPLEMENTATIONS, d_sae=d_sae)
                skipped.update(set(STEP_IMPLEMENTATIONS) - set(steps))
                medians = time_rounds(steps, rounds, warmup=2, device=device)
                floor = medians.pop("floor")
                for name, seconds in medians.items():
                    rows.append(f"| {d_in} | {d_sae:,} | {dtype_name} | {name} | {seconds * 1000:.2f} | "
                                f"{batch / seconds:,.0f} | {floor / seconds:.0%} |")
                rows.append(f"| {d_in} | {d_sae:,} | {dtype_name} | encoder matmul alone (floor) | "
                            f"{floor * 1000:.2f} | {batch / floor:,.0f} | 100% |")
                print(rows[-1], flush=True)
                del steps
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return rows


def caching_rows(device: str, small: bool) -> list[str]:
    model = gpt2_small_random().to(device, print_details=False)
    n_tokens, batch_size = (1024, 4) if small else (65536, 64)
    runs = bench_model("gpt2-small-random", model, corpus(), n_tokens, 128, batch_size, 8192, ["float16"],
                       SITE_SETS["gpt2-small-random"], repeats=2)
    return [f"| {r['n_sites']} | {r['dtype']} | {r['tokens']:,} | {r['bare_tok_s']:,.0f} | {r['cache_tok_s']:,.0f} | "
            f"{r['ratio_wall']:.2f} |" for r in runs]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="reduced sizes (a CPU run that shows the check works)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write the section to")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"bench_gpu: --device {args.device} but torch sees no CUDA device; pass --device cpu --small")
    torch.manual_seed(0)
    start = time.perf_counter()
    skipped: set[str] = set()
    steps, caching = step_rows(args.device, args.small, args.rounds, skipped), caching_rows(args.device, args.small)
    sizes = "reduced sizes (--small)" if args.small else "full sizes"
    section = [
        f"## GPU check: {device_name(args.device)}, {sizes}",
        "",
        f"`benchmarks/gpu_check.sh` on {platform.node()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.perf_counter() - start:.0f} s for both parts.",
        "",
        "TopK training step (k 32, no AuxK; median of interleaved rounds; share of the encoder-matmul floor "
        "measured in the same rounds)" + (f"; not installed here: {', '.join(sorted(skipped))}" if skipped else "")
        + ":",
        "",
        "| d_in | latents | dtype | implementation | ms/step | tokens/s | floor / step |",
        "|---|---|---|---|---|---|---|",
        *steps,
        "",
        "Caching a randomly initialised GPT-2-small-shaped model (layer 5; float16 shards; best of 2 wall-clock "
        "runs each, paired with the bare truncated forward):",
        "",
        "| sites | dtype | tokens | bare forward tok/s | caching tok/s | caching / bare |",
        "|---|---|---|---|---|---|",
        *caching,
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(section))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
