"""A scaling map (issue 18, item 4): how saelab's costs grow with the sizes a user picks.

    PYTHONPATH=$PWD python benchmarks/bench_scaling.py            # the full map (~25 min on a shared 2-core box)
    PYTHONPATH=$PWD python benchmarks/bench_scaling.py --quick    # a tiny grid in seconds (the smoke test)
    PYTHONPATH=$PWD python benchmarks/bench_scaling.py --parts step crossover   # some parts only

Four parts, written to benchmarks/results/bench_scaling.json and, as tables, bench_scaling.md:

1. step: the TopK training step (bench_sae_step's saelab and sparsify steps and its encoder-matmul floor) over
   d_in x width x k. Each cell runs in a fresh process that times the implementations in interleaved rounds
   (bench_sae_step.time_rounds; in CPU seconds when torch has one thread, as by default here, since a shared
   machine's wall clock counts other jobs' turns) and measures each one's peak memory as the rise of the process's peak RSS
   (VmHWM, reset through /proc/self/clear_refs) over its RSS before it was built, across building it and one
   step: weights, gradients, Adam state, workspace and the step's temporaries. A cell whose implementations do
   not fit in memory together runs as two processes, (saelab, floor) and (sparsify, floor), and then saelab vs
   sparsify is the ratio of their shares of their own floors.
2. crossover: saelab's sparse TopK step against bench_sae_step's dense PyTorch step (dense latents, dense decoder
   matmul) as k grows at a fixed width, to find the k where the dense decoder wins.
3. dashboards: compute_dashboards' streaming time against the number of latents and of tokens.
4. circuits: each registered circuit method's time against the number of edges of the graph, on random-weight
   models of saelab-tiny's and GPT-2 small's width with a growing number of layers.

Every part fits a power law, time ~ size^slope, by least squares on logarithms and reports the slopes.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_sae_step import build_steps, time_rounds

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MIB = 2**20

BYTES_PER_WEIGHT = {"saelab": 11, "sparsify": 9, "dense torch": 9, "floor": 1}
"""Estimated peak bytes of each implementation per float32 weight of W_enc, in units of its 4 bytes: weights (2),
gradients (2), Adam's two moments (4), saelab's workspace gradients (2) and the fused Adam's contiguous copy of
W_enc (1); the floor holds one matrix. Used only to decide which implementations can share a process."""


# ---------------------------------------------------------------- memory of one process


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Set VmHWM back to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


# ---------------------------------------------------------------- part 1 and 2: one cell in its own process


def run_cells(spec: dict) -> list[dict]:
    """For each k of `spec`: build each implementation in turn, measuring its peak memory over building it and
    one step, then time them all in interleaved rounds. Runs inside the cells' own process (one per d_in and
    width: starting a process that imports sparsify takes longer than a small cell)."""
    torch.set_num_threads(spec["threads"])
    clock = time.process_time if spec["threads"] == 1 else time.perf_counter
    for step in build_steps(16, 4, 4, 8, names=tuple(spec["names"])).values():
        step()  # one-time costs (kernels, thread pools, lazy imports) out of the first measured implementation
    cells = []
    for k in spec["ks"]:
        steps, peak_mib = {}, {}
        for name in spec["names"]:
            before = proc_status_kib("VmRSS")
            reset_peak_rss()
            built = build_steps(spec["d_in"], 0, k, spec["batch"], names=(name,), d_sae=spec["d_sae"])
            if name not in built:
                continue
            built[name]()
            peak_mib[name] = round((proc_status_kib("VmHWM") - before) / 1024, 1)
            steps[name] = built[name]
        seconds = time_rounds(steps, spec["rounds"], spec["warmup"], clock=clock)
        cells.append({"k": k, "seconds": seconds, "peak_mib": peak_mib, "load": os.getloadavg()[0]})
        del steps, built  # free this k's weights before the next k's are measured
        gc.collect()
    return cells


def cell_in_subprocess(spec: dict, timeout_s: int = 1800) -> dict:
    done = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        return {**spec, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def process_groups(names: list[str], d_in: int, d_sae: int, budget_mib: float) -> list[list[str]]:
    """All of `names` in one process if their estimated memory fits in `budget_mib`, else each non-floor
    implementation with its own floor (empty when even that does not fit)."""
    weight_mib = d_in * d_sae * 4 / MIB
    need = {name: BYTES_PER_WEIGHT[name] * weight_mib for name in names}
    if sum(need.values()) <= budget_mib:
        return [names]
    return [[name, "floor"] for name in names if name != "floor" and need[name] + need["floor"] <= budget_mib]


def measure_cells(d_in: int, d_sae: int, ks: list[int], names: list[str], args) -> list[dict]:
    """Cells (d_in, d_sae, k) for each k: the implementations' seconds per step, their shares of the floor, and
    their peak memory."""
    spec = {"d_in": d_in, "d_sae": d_sae, "batch": args.batch, "rounds": args.rounds, "warmup": args.warmup,
            "threads": args.threads}
    groups = process_groups(names, d_in, d_sae, available_mib() - args.headroom_mib)
    cells = [{**spec, "k": k, "processes": len(groups), "share": {}, "seconds": {}, "peak_mib": {}, "load": []}
             for k in ks]
    for group in groups:
        out = cell_in_subprocess({**spec, "ks": ks, "names": group})
        if "error" in out:
            for cell in cells:
                cell.setdefault("errors", []).append(f"{group}: {out['error']}")
            continue
        for cell, measured in zip(cells, out["cells"], strict=True):
            floor = measured["seconds"]["floor"]
            for name, seconds in measured["seconds"].items():
                if name != "floor":
                    cell["seconds"][name], cell["share"][name] = seconds, floor / seconds
            cell["seconds"].setdefault("floor", floor)
            cell["peak_mib"].update(measured["peak_mib"])
            cell["load"].append(round(measured["load"], 2))
    for cell in cells if not groups else []:
        cell["errors"] = [f"skipped: too large for the {available_mib():.0f} MiB available"]
    return cells


# ---------------------------------------------------------------- power laws


def power_law(sizes: dict[str, list[float]], seconds: list[float]) -> dict[str, float]:
    """Exponents of seconds ~ prod size^exponent, least squares on logarithms (one exponent per size)."""
    if len(seconds) <= len(sizes):
        return {}
    X = np.column_stack([np.ones(len(seconds))] + [np.log(v) for v in sizes.values()])
    coef, *_ = np.linalg.lstsq(X, np.log(seconds), rcond=None)
    return {name: round(float(c), 2) for name, c in zip(sizes, coef[1:], strict=True)}


# ---------------------------------------------------------------- part 1: the step grid


def step_grid(args) -> dict:
    cells = []
    for d_in in args.d_in:
        for width in args.width:
            for cell in measure_cells(d_in, width * d_in, args.k, ["saelab", "sparsify", "floor"], args):
                cells.append({**cell, "width": width})
                print(step_row(cells[-1]), flush=True)
    laws = {}
    for name in ("saelab", "sparsify", "floor"):
        done = [c for c in cells if name in c["seconds"]]
        laws[name] = power_law({"d_in": [c["d_in"] for c in done], "width": [c["width"] for c in done],
                                "k": [c["k"] for c in done]}, [c["seconds"][name] for c in done])
        peak = [c for c in done if name in c["peak_mib"] and c["peak_mib"][name] > 0]
        laws[f"{name} peak memory"] = power_law(
            {"d_in": [c["d_in"] for c in peak], "width": [c["width"] for c in peak], "k": [c["k"] for c in peak]},
            [c["peak_mib"][name] for c in peak])
    return {"cells": cells, "power_laws": laws}


def step_row(c: dict) -> str:
    s, share, peak = c["seconds"], c["share"], c["peak_mib"]
    tok = {name: f"{c['batch'] / s[name]:,.0f}" if name in s else "-" for name in ("saelab", "sparsify")}
    vs = f"x{share['saelab'] / share['sparsify']:.2f}" if {"saelab", "sparsify"} <= share.keys() else "-"
    mem = " / ".join(f"{peak[n]:,.0f}" if n in peak else "-" for n in ("saelab", "sparsify"))
    return (f"| {c['d_in']} | {c['width']}x ({c['d_sae']:,}) | {c['k']} | {tok['saelab']} | "
            f"{share.get('saelab', float('nan')):.0%} | {tok['sparsify']} | {share.get('sparsify', float('nan')):.0%} "
            f"| {vs} | {mem} | {c['processes']} | {', '.join(map(str, c['load']))} |"
            + (f" {'; '.join(c['errors'])}" if c.get("errors") else ""))


STEP_HEADER = ("| d_in | width (d_sae) | k | saelab tok/s | saelab / floor | sparsify tok/s | sparsify / floor | "
               "saelab vs sparsify | peak MiB saelab / sparsify | processes | load |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|")


# ---------------------------------------------------------------- part 2: dense/sparse crossover in k


def crossover(args) -> dict:
    cells = measure_cells(args.crossover_d_in, args.crossover_width * args.crossover_d_in, args.crossover_k,
                          ["saelab", "dense torch", "floor"], args)
    for c in cells:
        print(crossover_row(c), flush=True)
    wins = [c["k"] for c in cells if c["seconds"].get("dense torch", np.inf) < c["seconds"].get("saelab", np.inf)]
    return {"cells": cells, "dense_wins_from_k": min(wins) if wins else None,
            "power_laws": {name: power_law({"k": [c["k"] for c in cells]}, [c["seconds"][name] for c in cells])
                           for name in ("saelab", "dense torch") if all(name in c["seconds"] for c in cells)}}


def crossover_row(c: dict) -> str:
    s = c["seconds"]
    if not {"saelab", "dense torch", "floor"} <= s.keys():
        return f"| {c['k']} | - | - | - | - | {'; '.join(c.get('errors', []))} |"
    return (f"| {c['k']} | {s['saelab'] * 1000:.0f} | {s['dense torch'] * 1000:.0f} | {s['floor'] * 1000:.0f} | "
            f"x{s['dense torch'] / s['saelab']:.2f} | {', '.join(map(str, c['load']))} |")


CROSSOVER_HEADER = ("| k | saelab (sparse) ms/step | dense torch ms/step | floor ms | dense / saelab | load |\n"
                    "|---|---|---|---|---|---|")


# ---------------------------------------------------------------- part 3: dashboards


def dashboards(args) -> dict:
    # here, not at the top: bench_dashboards imports TransformerLens, slow to import in every cell's process
    from bench_dashboards import Clock, load, token_set

    from saelab.evals.features import DashboardConfig, compute_dashboards
    from saelab.sae import SAE, SAEConfig

    torch.set_num_threads(args.threads)
    model, described = load(None)
    points = [(d, args.dash_tokens[0]) for d in args.dash_d_sae] + [(args.dash_d_sae[0], t) for t in args.dash_tokens[1:]]
    rows = []
    for d_sae, n_tokens in points:
        tokens = token_set(model, n_tokens, 128)
        sae = SAE(SAEConfig("topk", model.cfg.d_model, d_sae, k=32, hook_site="2.resid_post"))
        with Clock() as clock:
            compute_dashboards(model, sae, tokens, DashboardConfig())
        rows.append({"d_sae": d_sae, "tokens": tokens.numel(), "cpu_s": round(clock.cpu, 2),
                     "wall_s": round(clock.wall, 2), "load": round(os.getloadavg()[0], 2)})
        print(f"| {d_sae:,} | {tokens.numel():,} | {clock.cpu:.1f} | {clock.wall:.1f} | {rows[-1]['load']} |",
              flush=True)
    by_latents = [r for r in rows if r["tokens"] == rows[0]["tokens"]]
    by_tokens = [r for r in rows if r["d_sae"] == rows[0]["d_sae"]]
    return {"model": described, "rows": rows, "power_laws": {
        "latents (tokens fixed)": power_law({"d_sae": [r["d_sae"] for r in by_latents]}, [r["cpu_s"] for r in by_latents]),
        "tokens (latents fixed)": power_law({"tokens": [r["tokens"] for r in by_tokens]}, [r["cpu_s"] for r in by_tokens]),
    }}


DASH_HEADER = "| latents | tokens | CPU s | wall s | load |\n|---|---|---|---|---|"


# ---------------------------------------------------------------- part 4: circuit methods


SHAPES = {
    "saelab-tiny": dict(d_model=256, n_heads=8, d_head=32, d_mlp=1024),
    "gpt2-small": dict(d_model=768, n_heads=12, d_head=64, d_mlp=3072),
}
"""Widths of the random-weight models whose depth grows (weights do not change a method's cost)."""


def shaped_model(shape: str, n_layers: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=n_layers, n_ctx=32, d_vocab=512, act_fn="gelu_new",
                                  normalization_type="LN", seed=0, **SHAPES[shape])
    return HookedTransformer(cfg, move_to_device=False).eval()


def random_problem(n_prompts: int, length: int):
    """Random prompts whose corruption changes one token; the metric is a fixed logit difference."""
    from saelab.circuits.problem import PromptBatch, make_problem

    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 512, (n_prompts, length), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1) % 512
    end = torch.full((n_prompts,), length - 1)
    return make_problem("random", [PromptBatch(clean, corrupted, end, lambda logits: logits[:, 7] - logits[:, 8])])


CIRCUIT_SKIP = {"feature_circuit_components": "needs trained SAEs at every layer"}


def circuits(args) -> dict:
    from saelab.circuits import run_method
    from saelab.circuits.graph import Graph
    from saelab.circuits.registry import list_methods

    torch.set_num_threads(args.threads)
    problem = random_problem(args.circuit_prompts, 12)
    methods = [m for m in list_methods() if m not in CIRCUIT_SKIP]
    rows = []
    for shape, depths in (("saelab-tiny", args.tiny_layers), ("gpt2-small", args.gpt2_layers)):
        for n_layers in depths:
            model = shaped_model(shape, n_layers)
            n_edges = Graph.from_config(model.cfg).n_edges
            for method in methods:
                if method == "acdc" and n_edges > args.acdc_max_edges:
                    continue
                start = time.process_time()
                run_method(method, model, problem)
                rows.append({"shape": shape, "n_layers": n_layers, "edges": n_edges, "method": method,
                             "cpu_s": round(time.process_time() - start, 3), "load": round(os.getloadavg()[0], 2)})
            print(f"  {shape} x{n_layers} layers ({n_edges:,} edges): "
                  + ", ".join(f"{r['method']} {r['cpu_s']:.2f}" for r in rows if r["edges"] == n_edges
                              and r["shape"] == shape), flush=True)
    laws = {}
    for shape in SHAPES:
        for method in methods:
            mine = [r for r in rows if r["shape"] == shape and r["method"] == method]
            laws[f"{method} @ {shape} width"] = power_law({"edges": [r["edges"] for r in mine]},
                                                          [max(r["cpu_s"], 1e-3) for r in mine])
    return {"rows": rows, "methods": methods, "skipped": CIRCUIT_SKIP, "power_laws": laws}


def circuit_table(result: dict) -> str:
    keys = sorted({(r["shape"], r["n_layers"], r["edges"]) for r in result["rows"]}, key=lambda t: (t[0], t[2]))
    cpu = {(r["shape"], r["n_layers"], r["method"]): r["cpu_s"] for r in result["rows"]}
    lines = ["| width | layers | edges | " + " | ".join(result["methods"]) + " |",
             "|---|---|---|" + "---|" * len(result["methods"])]
    for shape, n_layers, edges in keys:
        cells = [f"{cpu[(shape, n_layers, m)]:.2f}" if (shape, n_layers, m) in cpu else "-" for m in result["methods"]]
        lines.append(f"| {shape} | {n_layers} | {edges:,} | " + " | ".join(cells) + " |")
    slopes = [f"{name}: {law.get('edges', float('nan')):.2f}" for name, law in result["power_laws"].items() if law]
    return "\n".join(lines) + "\n\nlog-log slope of CPU seconds against edges: " + "; ".join(slopes)


# ---------------------------------------------------------------- the report


def markdown(report: dict) -> str:
    clock = "CPU seconds (time.process_time)" if report["threads"] == 1 else "wall seconds"
    out = [f"Load average at the start: {report['load_start']}, at the end: {report.get('load_end')}; torch "
           f"threads {report['threads']}; times in {clock}."]
    if {"step", "crossover"} & report.keys():
        out[0] += (f" Steps: batch {report['batch']} rows, {report['rounds']} timed rounds after "
                   f"{report['warmup']} warm-up and each cell's memory step.")
    out[0] += "\n"
    if "step" in report:
        out += ["### TopK step grid\n", STEP_HEADER, *map(step_row, report["step"]["cells"]),
                "\nPower laws (seconds per step ~ d_in^a width^b k^c; peak memory likewise): "
                + json.dumps(report["step"]["power_laws"]) + "\n"]
    if "crossover" in report:
        c = report["crossover"]
        out += [f"### Dense/sparse crossover in k (d_in {report['crossover_d_in']}, width "
                f"{report['crossover_width']}x)\n", CROSSOVER_HEADER, *map(crossover_row, c["cells"]),
                f"\nDense wins from k = {c['dense_wins_from_k']}; slopes in k: {json.dumps(c['power_laws'])}\n"]
    if "dashboards" in report:
        d = report["dashboards"]
        rows = [f"| {r['d_sae']:,} | {r['tokens']:,} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['load']} |"
                for r in d["rows"]]
        out += [f"### Dashboards ({d['model']}, TopK k 32 at 2.resid_post)\n", DASH_HEADER, *rows,
                f"\nSlopes of CPU seconds: {json.dumps(d['power_laws'])}\n"]
    if "circuits" in report:
        out += ["### Circuit methods (CPU seconds per run)\n", circuit_table(report["circuits"]) + "\n"]
    return "\n".join(out)


PARTS = {"step": step_grid, "crossover": crossover, "dashboards": dashboards, "circuits": circuits}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    p.add_argument("--quick", action="store_true", help="a tiny grid of every part (seconds)")
    p.add_argument("--d-in", type=int, nargs="+", default=[256, 768, 2048])
    p.add_argument("--width", type=int, nargs="+", default=[8, 32, 64])
    p.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=0, help="untimed steps (each cell's memory step comes first)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every measurement")
    p.add_argument("--headroom-mib", type=float, default=4096, help="memory left free for other jobs")
    p.add_argument("--crossover-d-in", type=int, default=256)
    p.add_argument("--crossover-width", type=int, default=32)
    p.add_argument("--crossover-k", type=int, nargs="+", default=[16, 64, 256, 512, 1024, 2048])
    p.add_argument("--dash-d-sae", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    p.add_argument("--dash-tokens", type=int, nargs="+", default=[16384, 8192, 32768],
                   help="the first is the token count of the latents series")
    p.add_argument("--tiny-layers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--gpt2-layers", type=int, nargs="+", default=[1, 3, 6, 12])
    p.add_argument("--circuit-prompts", type=int, default=16, help="prompt pairs (sae_codes needs >= 10)")
    p.add_argument("--acdc-max-edges", type=int, default=3000, help="ACDC only on graphs this small")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON, the .md beside it (default results/bench_scaling.json, _quick with --quick)")
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.d_in, args.width, args.k, args.batch, args.rounds, args.warmup = [32], [4], [4, 8], 64, 2, 0
        args.crossover_d_in, args.crossover_width, args.crossover_k = 32, 8, [4, 64]
        args.dash_d_sae, args.dash_tokens = [256, 512], [512, 1024]
        args.tiny_layers, args.gpt2_layers, args.circuit_prompts, args.acdc_max_edges = [1, 2], [], 10, 200
    args.out = args.out or RESULTS / f"bench_scaling{'_quick' if args.quick else ''}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.cell:
        print(json.dumps({"cells": run_cells(json.loads(args.cell))}))
        return 0
    report = {"load_start": [round(x, 2) for x in os.getloadavg()], "threads": args.threads, "batch": args.batch,
              "rounds": args.rounds, "warmup": args.warmup, "crossover_d_in": args.crossover_d_in,
              "crossover_width": args.crossover_width, "command": " ".join(sys.argv)}
    for part in args.parts:
        started = time.perf_counter()
        report[part] = PARTS[part](args)
        report[part]["wall_s"] = round(time.perf_counter() - started, 1)
        report["load_end"] = [round(x, 2) for x in os.getloadavg()]
        args.out.write_text(json.dumps(report, indent=1))  # after every part, so a long run keeps what it has
        args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
