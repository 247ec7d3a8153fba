"""Run every benchmark in one go on this machine and write BENCHMARKS.md with their tables side by side.

    python benchmarks/run_all.py            # full sizes
    python benchmarks/run_all.py --quick    # small sizes (minutes)

Each benchmark script prints its own table (peers side by side, as ratios) and writes JSON to
benchmarks/results/; this script runs them one after another, captures what they print, and records the
machine, the date and the exact commands.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (title, script, extra arguments for --quick[, extra arguments for the full run])
BENCHMARKS = [
    ("Activation caching vs a bare forward (and SAELens)", "bench_caching.py", ["--quick"]),
    ("SAE training step: TopK vs sparsify and SAELens", "bench_sae_step.py", ["--quick"]),
    ("Multi-SAE: 8 SAEs on 4 sites from one pass vs the SAE compute alone (and SAELens)", "bench_multi_sae.py",
     ["--quick"]),
    ("SAE quality at the same token budget: saelab vs sparsify and SAELens", "bench_sae_quality.py", ["--quick"]),
    ("saelab's learning-rate sweep behind the topk default (same data as the quality table)", "bench_sae_quality.py",
     ["--quick", "--only", "saelab", "--saelab-lr", "1e-3", "3e-3", "--out", "/dev/null"],
     ["--only", "saelab", "--saelab-lr", "1e-3", "2e-3", "3e-3", "4e-3", "6e-3", "--saelab-b-dec", "mean", "zero",
      "--out", "benchmarks/results/bench_sae_quality_lr_sweep.json"]),
    ("Feature dashboards", "bench_dashboards.py", ["--quick"]),
    ("Circuit methods: time and AUC", "bench_circuits.py", ["--quick"]),
    ("Scaling map (issue 18, item 4)", "bench_scaling.py", ["--quick"]),
    ("Web app latency", "bench_app.py", ["--quick"]),
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (these tables are CPU only)"


def run(script: str, args: list[str], timeout_s: int) -> tuple[str, float, int]:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout_s)
        output, code = done.stdout.strip(), done.returncode
        if code != 0:
            output += "\n" + "\n".join(done.stderr.strip().splitlines()[-5:])
    except subprocess.TimeoutExpired:
        output, code = f"(timed out after {timeout_s} s)", 124
    return output, time.perf_counter() - start, code


def merge_sections(previous: str, fresh: list[str], fresh_header: str) -> tuple[str, list[str]]:
    """The previous file's header and sections, with the sections of this (partial) run put in place of
    theirs, each marked with today's date and load, so a reader sees which numbers come from which run."""
    head, *old = previous.split("\n## ")
    stamp = f"Re-run alone on {datetime.date.today().isoformat()} (`run_all.py --only`, load average " \
            f"{os.getloadavg()[0]:.2f} after it); the other sections are from the run the header describes.\n\n"
    replaced = {section.split("\n", 1)[0]: section for section in fresh}
    merged = []
    for section in ["## " + body for body in old]:
        title = section.split("\n", 1)[0]
        if title in replaced:
            body = replaced.pop(title)
            first, rest = body.split("\n\n", 1)
            section = f"{first}\n\n{stamp}{rest}"
        merged.append(section if section.endswith("\n") else section + "\n")
    merged.extend(replaced.values())
    note = "Sections that begin \"Re-run alone on\" come from a later partial run (`run_all.py --only`)."
    head = head.rstrip("\n") + ("" if note in head else f"\n\n{note}") + "\n"
    return (head if head.strip() else fresh_header), merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for every benchmark")
    parser.add_argument("--only", nargs="*",
                        help="script names, or words of section titles, to run (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per benchmark")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    sections = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    for title, script, quick_args, *full_args in BENCHMARKS:
        if args.only and not any(name == script or name in title for name in args.only):
            continue
        if not (ROOT / "benchmarks" / script).exists():
            sections.append(f"## {title}\n\n`benchmarks/{script}` does not exist yet.\n")
            continue
        extra = quick_args if args.quick else [arg for group in full_args for arg in group]
        print(f"running {script} {' '.join(extra)}", flush=True)
        output, seconds, code = run(script, extra, args.timeout)
        status = "" if code == 0 else f" — exited with status {code}"
        sections.append(f"## {title}\n\nCommand: `python benchmarks/{script} {' '.join(extra)}`".rstrip()
                        + f" ({seconds:.0f} s{status})\n\n```\n{output}\n```\n")
        print(output, flush=True)
    header = (
        "# saelab benchmarks\n\n"
        f"Measured {datetime.date.today().isoformat()} on {machine()}.\n\n"
        f"Produced by `python benchmarks/run_all.py{' --quick' if args.quick else ''}` in one run; every table "
        "compares against its peers side by side in the same run, because absolute numbers on a shared "
        "machine are noisy. JSON for each benchmark is in `benchmarks/results/`.\n\n"
        f"Load average (1, 5, 15 min) before the run: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; the whole run took "
        f"{(time.perf_counter() - started) / 60:.0f} min. GPU: {gpu()}.\n"
    )
    if args.only and args.out.exists():  # a partial run replaces its own sections and keeps the others
        header, sections = merge_sections(args.out.read_text(), sections, header)
    args.out.write_text(header + "\n" + "\n".join(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
