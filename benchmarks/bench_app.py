"""Web-app latency with a 16k-latent SAE's dashboard rows in the results store.

1. Feature page: server-side render of the Features page for one latent (Streamlit's AppTest runs the real page
   script: queries, JSON decoding, HTML and plotly figures), target ≤ 0.5 s.
2. Feature search: `saelab.db.queries.search_features` for the browser's sort/filter combinations, target
   ≤ 0.3 s.
3. Prompt explorer on a 64-token prompt: per-token top latents (`prompt_top_latents`) and the whole page (top
   latents, table, links and, for this attn_z SAE, DFA), model and SAE already cached, target ≤ 1 s.

    .venv/bin/python benchmarks/bench_app.py            # 16,384 latents, ~360k example rows (a few minutes to build)
    .venv/bin/python benchmarks/bench_app.py --quick    # 2,048 latents

Prints a table and writes benchmarks/results/bench_app.json. Medians over repeats; the machine is shared.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

RESULTS = Path(__file__).parent / "results" / "bench_app.json"
MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"
SAE_ID = "bench-0.attn_z-topk-16k"
SITE, MODEL, N_HEADS, D_IN = "0.attn_z", "saelab-random", 4, 64
CHUNK = 1024


def build_store(root: Path, n_latents: int) -> "object":
    """A workspace whose store holds one attn_z SAE with n_latents dashboard rows and its saved weights."""
    from saelab.db import ResultsStore
    from saelab.sae import SAE, SAEConfig, save_sae
    from saelab.testing.demo_workspace import example_rows, feature_rows
    from saelab.workflows.storage import sae_row
    from saelab.workspace import Workspace

    workspace = Workspace(root).create()
    store = ResultsStore(workspace.db_path).initialize()
    cfg = SAEConfig(architecture="topk", d_in=D_IN, d_sae=n_latents, k=32, hook_site=SITE, model_name=MODEL)
    save_sae(SAE(cfg), workspace.saes_dir / SAE_ID)
    store.insert("saes", [sae_row(cfg, SAE_ID, f"saes/{SAE_ID}", None)])
    rng = np.random.default_rng(0)
    for start in range(0, n_latents, CHUNK):
        features = feature_rows(SAE_ID, range(start, min(start + CHUNK, n_latents)), N_HEADS, rng)
        examples = example_rows(SAE_ID, {f["latent"]: f["max_act"] for f in features}, rng, n_top=10,
                                n_quantiles=4, per_quantile=3, length=32)
        store.insert("features", features)
        store.insert("feature_examples", examples)
    return workspace


class Times(NamedTuple):
    wall: list[float]
    """Seconds on the clock."""
    cpu: list[float]
    """CPU seconds of this process (all threads): what the work costs when the machine is not shared."""


def timed(fn: Callable[[], object], repeats: int) -> Times:
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return Times(wall, cpu)


def bench_feature_page(n_latents: int, repeats: int) -> Times:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(MAIN), default_timeout=300)
    at.switch_page("views/features.py")
    at.query_params["sae"], at.query_params["latent"] = SAE_ID, "0"
    at.run()  # warm: imports, first connection
    latents = iter(np.random.default_rng(1).integers(0, n_latents, repeats).tolist())

    def render() -> None:
        at.query_params["latent"] = str(next(latents))
        at.run()
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        assert at.header and at.header[0].value.startswith("Latent ")

    return timed(render, repeats)


def bench_search(store, repeats: int) -> dict[str, Times]:
    from saelab.db import queries as q

    queries = {
        "search: max activation, first page": q.FeatureQuery(SAE_ID),
        "search: density ascending, page 50": q.FeatureQuery(SAE_ID, "density", False, offset=4900),
        "search: top logit token contains 'def'": q.FeatureQuery(SAE_ID, logit_token="def"),
        "search: density band + head 2 attribution": q.FeatureQuery(SAE_ID, "head_attribution", head=2,
                                                                     min_density=1e-3, max_density=0.1),
    }
    q.search_features(store, queries["search: max activation, first page"])  # warm
    return {name: timed(lambda query=query: q.search_features(store, query), repeats)
            for name, query in queries.items()}


def _prompt_of(model, n_tokens: int) -> str:
    """The shortest prefix of a fixed text that the model reads as n_tokens tokens (BOS included)."""
    source = ("When Mary and John went to the store, John gave a drink to Mary. def add(x, y):\n    return x + y\n"
              * 8)
    for end in range(1, len(source)):
        if model.to_tokens(source[:end]).shape[1] == n_tokens:
            return source[:end]
    raise ValueError(f"no prefix of the benchmark text is {n_tokens} tokens long")


def bench_prompt(workspace, repeats: int) -> dict[str, Times]:
    from streamlit.testing.v1 import AppTest

    from saelab.activations.sites import HookSite
    from saelab.app_support.prompts import prompt_top_latents
    from saelab.models import load_model
    from saelab.sae import load_sae

    model, sae = load_model(MODEL), load_sae(workspace.saes_dir / SAE_ID)
    text = _prompt_of(model, 64)
    site = HookSite.parse(SITE)
    prompt_top_latents(model, sae, site, text)  # warm
    library = timed(lambda: prompt_top_latents(model, sae, site, text), repeats)

    at = AppTest.from_file(str(MAIN), default_timeout=300)
    at.switch_page("views/prompts.py")
    at.query_params["sae"] = SAE_ID
    at.session_state["prompt_text"] = text
    at.run()  # warm: model and SAE into st.cache_resource

    def page() -> None:
        at.run()
        assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
        assert "Direct feature attribution" in [h.value for h in at.subheader], "the page skipped the DFA"

    return {"prompt explorer: top latents, 64 tokens": library,
            "prompt explorer: whole page incl. DFA, 64 tokens": timed(page, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,048 latents instead of 16,384")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--workspace", help="build the store here (kept) or reuse the one already there")
    args = parser.parse_args()
    from saelab.db import ResultsStore
    from saelab.db import queries as q
    from saelab.workspace import Workspace

    logging.basicConfig(level=logging.WARNING)
    n_latents = 2048 if args.quick else 16384
    targets = {"feature": 0.5, "search": 0.3, "prompt": 1.0}
    with tempfile.TemporaryDirectory(prefix="saelab-bench-app-") as tmp:
        root = Path(args.workspace or tmp)
        start = time.perf_counter()
        reuse = (root / "saelab.duckdb").exists()
        workspace = Workspace(root) if reuse else build_store(root, n_latents)
        build_s = time.perf_counter() - start
        os.environ["SAELAB_WORKSPACE"] = str(workspace.root)
        store = ResultsStore(workspace.db_path)
        counts = q.table_counts(store)
        timings = {"feature page: server-side render": bench_feature_page(counts["features"], args.repeats)}
        timings.update(bench_search(store, args.repeats))
        timings.update(bench_prompt(workspace, args.repeats))
    rows = []
    for name, times in timings.items():
        target = next(value for prefix, value in targets.items() if name.startswith(prefix))
        median = statistics.median(times.wall)
        rows.append({"name": name, "median_s": median, "max_s": max(times.wall),
                     "median_cpu_s": statistics.median(times.cpu), "target_s": target,
                     "meets_target": median <= target, "repeats": len(times.wall)})
    built = "reused" if reuse else f"built in {build_s:.0f} s"
    print(f"\n{counts['features']:,} latents, {counts['feature_examples']:,} example rows ({built}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"{'measurement':50s} {'median':>8s} {'max':>8s} {'CPU':>8s} {'target':>7s}")
    for row in rows:
        mark = "ok" if row["meets_target"] else "SLOW"
        print(f"{row['name']:50s} {row['median_s']:7.3f}s {row['max_s']:7.3f}s {row['median_cpu_s']:7.3f}s "
              f"{row['target_s']:6.1f}s  {mark}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "bench_app", "n_latents": counts["features"], "n_example_rows": counts["feature_examples"],
        "build_seconds": None if reuse else build_s, "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": rows,
    }, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
