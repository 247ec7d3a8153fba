"""A small workspace with synthetic rows in every table of the results store but the feature-graph tables
(graphs come from `saelab.feature_circuits`; the app's tests store a synthetic one themselves), and real
(untrained) SAE directories behind the SAE rows, for the app's tests, screenshots and benchmark.

The numbers are made up but shaped like the real thing (densities spanning decades, peaked contexts, a
frontier per architecture), so every page has something to draw. Deterministic for a seed.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from saelab.db import ResultsStore
from saelab.workspace import Workspace

DEMO_MODEL = "saelab-random"
"""The bundled model whose sites the demo SAEs read (2 layers, d_model 64, 4 heads of 16)."""
N_LAYERS, N_HEADS, D_MODEL = 2, 4, 64

VOCAB = (" def", " return", " self", " the", " if", " for", " in", " x", " =", "(", ")", ":", "\n", "    ",
         " Mary", " John", " gave", " a", " drink", " to", " import", " class", " None", " True", " 0", " 1",
         "\"\"\"", " <", " >", " &", ".", ",", " value", " list", " while", " print", " year", " 17", " 18")


class DemoSae(NamedTuple):
    sae_id: str
    architecture: str
    site: str
    k: int
    quality: float
    """Where on the frontier it sits (larger: worse reconstruction)."""


DEMO_SAES = (
    DemoSae("random-0.attn_z-topk-k8", "topk", "0.attn_z", 8, 0.0),
    DemoSae("random-1.resid_post-topk-k4", "topk", "1.resid_post", 4, 0.0),
    DemoSae("random-1.resid_post-topk-k8", "topk", "1.resid_post", 8, 0.0),
    DemoSae("random-1.resid_post-topk-k16", "topk", "1.resid_post", 16, 0.0),
    DemoSae("random-1.resid_post-batchtopk-k8", "batchtopk", "1.resid_post", 8, 0.03),
    DemoSae("random-1.resid_post-relu_l1-a", "relu_l1", "1.resid_post", 6, 0.08),
    DemoSae("random-1.resid_post-relu_l1-b", "relu_l1", "1.resid_post", 14, 0.06),
    DemoSae("random-1.resid_post-jumprelu-a", "jumprelu", "1.resid_post", 7, 0.02),
    DemoSae("random-1.resid_post-gated-a", "gated", "1.resid_post", 9, 0.04),
    DemoSae("random-1.resid_post-vq-k1", "vq", "1.resid_post", 1, 0.25),
    DemoSae("random-1.resid_post-vq-k2", "vq", "1.resid_post", 2, 0.18),
)


def _context(
    rng: np.random.Generator, length: int, peak: float, center: int
) -> tuple[list[str], list[float]]:
    tokens = [VOCAB[i] for i in rng.integers(0, len(VOCAB), length)]
    distance = np.abs(np.arange(length) - center)
    acts = peak * np.exp(-distance / 1.5) * (rng.random(length) < 0.6)
    acts[center] = peak
    return tokens, [round(float(a), 4) for a in acts]


def _logits(rng: np.random.Generator, n: int, sign: float) -> list[dict[str, Any]]:
    picks = rng.choice(len(VOCAB), size=n, replace=False)
    values = np.sort(rng.gamma(2.0, 0.6, n))[::-1] * sign
    return [{"token": VOCAB[i], "value": round(float(v), 4)} for i, v in zip(picks, values, strict=True)]


def _quantiles(max_act: float, n_firing: int, n_quantiles: int = 4) -> list[dict] | None:
    """Stored quantile groups that hold the contexts `example_rows` writes (group q peaks at
    max_act (q + 0.5) / (n + 1)), the firing tokens split as evenly as integers allow."""
    if max_act <= 0:
        return None
    n_firing = max(n_firing, n_quantiles)
    size, extra = divmod(n_firing, n_quantiles)
    step = max_act / (n_quantiles + 1)
    highs = [step * (q + 0.75) for q in range(n_quantiles - 1)] + [max_act]
    counts = [size + (q < extra) for q in range(n_quantiles)]
    return [{"index": q, "low": round(step * (q + 0.25), 5), "high": round(highs[q], 5), "count": counts[q]}
            for q in range(n_quantiles)]


def feature_rows(sae_id: str, latents: range, n_heads: int | None, rng: np.random.Generator) -> list[dict]:
    """Dashboard statistics of `latents` (one `features` row each)."""
    rows = []
    for latent in latents:
        density = 0.0 if latent % 29 == 28 else float(10 ** rng.uniform(-4, -0.7))
        max_act = float(rng.uniform(1.0, 10.0)) if density > 0 else 0.0
        edges = np.logspace(-2, np.log10(max(max_act, 0.02)), 21)
        counts = np.round(1000 * density * np.exp(-((np.arange(20) - rng.uniform(8, 14)) / 4) ** 2))
        attribution = rng.dirichlet(np.full(n_heads, 0.5)).round(4).tolist() if n_heads else None
        rows.append({"sae_id": sae_id, "latent": latent, "density": density, "mean_act": 0.3 * max_act,
                     "max_act": max_act,
                     "histogram": {"edges": edges.round(5).tolist(), "counts": counts.tolist(),
                                   "scale": "log"},
                     "quantiles": _quantiles(max_act, int(counts.sum())),
                     "top_logits": _logits(rng, 8, 1.0), "bottom_logits": _logits(rng, 8, -1.0),
                     "head_attribution": attribution})
    return rows


def example_rows(
    sae_id: str,
    max_acts: dict[int, float],
    rng: np.random.Generator,
    n_top: int = 8,
    n_quantiles: int = 4,
    per_quantile: int = 3,
    length: int = 24,
) -> list[dict]:
    """Top and quantile contexts (`feature_examples` rows) of each latent in `max_acts` (latent -> its
    maximum activation); latents that never fire get none."""
    rows = []
    for latent, max_act in max_acts.items():
        if max_act <= 0:
            continue
        kinds = [("top", r, max_act * (1 - 0.04 * r)) for r in range(n_top)]
        kinds += [(f"quantile_{q}", r, max_act * (q + 0.5) / (n_quantiles + 1))
                  for q in range(n_quantiles) for r in range(per_quantile)]
        for kind, rank, peak in kinds:
            center = int(rng.integers(length // 3, length - 2))
            tokens, acts = _context(rng, length, peak, center)
            rows.append({"sae_id": sae_id, "latent": latent, "kind": kind, "rank": rank,
                         "activation": acts[center], "tokens": tokens, "activations": acts, "center": center,
                         "document": len(rows)})  # each context from its own document
    return rows


def _save_sae_dirs(workspace: Workspace, d_sae: int) -> None:
    from saelab.sae import SAE, SAEConfig, save_sae

    for i, demo in enumerate(DEMO_SAES):
        cfg = SAEConfig(architecture=demo.architecture, d_in=D_MODEL, d_sae=d_sae, k=demo.k, seed=i,
                        hook_site=demo.site, model_name=DEMO_MODEL, normalize_activations=False)
        save_sae(SAE(cfg), workspace.saes_dir / demo.sae_id)


def _sae_rows(d_sae: int) -> list[dict]:
    """Shaped like `saelab.workflows.storage.sae_row`'s, but written by hand: the rows stand for SAEs wider
    than `d_sae` (a test's small d_sae keeps every k, which an SAEConfig of that width would refuse)."""
    return [{"sae_id": d.sae_id, "run_id": "train-demo", "model": DEMO_MODEL, "site": d.site,
             "architecture": d.architecture, "d_in": D_MODEL, "d_sae": d_sae, "k": d.k,
             "config": {"architecture": d.architecture, "k": d.k, "lr": 4e-4, "n_tokens": 2_000_000},
             "path": f"saes/{d.sae_id}"} for d in DEMO_SAES]


def _curves(rng: np.random.Generator) -> Iterator[dict]:
    for demo in DEMO_SAES:
        for step in range(0, 1001, 50):
            t = step / 1000
            fvu = 0.08 + demo.quality + 0.6 * np.exp(-6 * t) + 0.004 * rng.standard_normal()
            values = {"loss": fvu * 1.2, "fvu": fvu,
                      "l0": demo.k * (1 + 3 * np.exp(-8 * t)) if demo.architecture
                      not in ("topk", "vq") else demo.k, "dead_fraction": 0.02 + 0.3 * t * np.exp(-4 * t)}
            for metric, value in values.items():
                yield {"run_id": "train-demo", "sae_id": demo.sae_id, "step": step, "tokens": step * 2048,
                       "metric": metric, "value": float(value)}


def _eval_rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    for demo in DEMO_SAES:
        fvu = 0.05 + demo.quality + 0.8 / (demo.k + 4) + 0.01 * rng.random()
        core = {"fvu": fvu, "l0": float(demo.k), "mse": fvu * 0.9, "dead_fraction": 0.01 * rng.random(),
                "n_tokens": 65_536.0,
                **{f"l0_p{p}": float(round(demo.k * f))
                   for p, f in ((10, 0.5), (50, 1.0), (90, 1.5), (99, 2.0))},
                "ce_loss_score": 1 - 1.5 * fvu, "kl_div": 0.3 * fvu}
        rows += [{"run_id": "eval-demo", "sae_id": demo.sae_id, "eval_kind": "core", "metric": m, "value": v}
                 for m, v in core.items()]
    return rows + _supervised_rows()


SUPERVISED_LOCATION = "name_movers@END"
"""The one location of the synthetic supervised-dictionary evaluation (named as `evals/supervised_table.py`
names its locations)."""


def _supervised_rows() -> list[dict]:
    """`supervised_ioi` rows as the evaluation writes them (through `score_rows`, so the metric names are the
    evaluation's own): the no-edit row, the supervised dictionary and two SAEs at one location; `gap` is how
    far a dictionary falls short of the supervised one."""
    from saelab.evals.supervised_ioi import DictionaryScores, EditScores, score_rows

    dictionaries = (("no-edit", ("none",), None),
                    (f"supervised:ioi:{SUPERVISED_LOCATION}", ("supervised",), 0.0),
                    (DEMO_SAES[0].sae_id, ("saelab", "makelov"), 0.15),
                    ("random-1.resid_post-topk-k8", ("saelab", "makelov"), 0.25))
    rows = []
    for name, edits, gap in dictionaries:
        off = 0.6 if gap is None else gap  # the no-edit row: its prediction never follows the counterfactual
        approximation = (float("nan"),) * 5 if gap is None else (
            0.02 + gap, 0.4 + 2.8 * (0.92 - gap), 3.2 - 2.8 * (0.88 - gap), 0.92 - gap, 0.88 - gap)
        control = {edit: EditScores(_per_attribute(0.95 - (1.5 + i) * off),
                                    _per_attribute(0.9 - (1.5 + i) * off),
                                    _per_attribute(1.0 + 2 * off)) for i, edit in enumerate(edits)}
        interpretability = _interpretability(gap) if "saelab" in edits else None
        scores = DictionaryScores(SUPERVISED_LOCATION, name, approximation[0], 3.2, 0.4, *approximation[1:],
                                  control, {"IO": 180, "S": 150, "pos": 90}, 200, interpretability)
        rows += [{**row, "run_id": "eval-demo", "value": round(row["value"], 4)}
                 for row in score_rows(scores, None)]
    return rows


def _per_attribute(value: float) -> dict[str, float]:
    return {attribute: value * (1 - 0.03 * i) for i, attribute in enumerate(("IO", "S", "pos"))}


def _interpretability(gap: float):
    from saelab.evals.supervised import Interpretability

    return Interpretability(f1=_per_attribute(0.9 - gap), precision=_per_attribute(0.92 - gap),
                            recall=_per_attribute(0.88 - gap), over_splitting=_per_attribute(gap),
                            occlusion=_per_attribute(gap / 2))


CIRCUIT_METHODS = {"sae_codes": (0.4, 0.8), "patching": (35.0, 0.75), "eap": (2.0, 0.6),
                   "eap_ig": (9.0, 0.7), "acdc": (120.0, 0.55)}
"""Method -> (seconds, how well its scores separate the ground truth)."""
TRUTH = {"ioi": {(0, 1), (1, 0), (1, 2)}, "greater_than": {(0, 3), (1, 1)}}


def _roc(scores: dict[Any, float], truth: set) -> tuple[float, dict]:
    ranked = sorted(scores, key=lambda item: -scores[item])
    positives, negatives = len(truth), len(scores) - len(truth)
    fpr, tpr, tp, fp = [0.0], [0.0], 0, 0
    for item in ranked:
        tp, fp = tp + (item in truth), fp + (item not in truth)
        fpr.append(fp / negatives)
        tpr.append(tp / positives)
    auc = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1))
    return auc, {"fpr": fpr, "tpr": tpr}


def _edge_scores(
    node_scores: dict[tuple[int, int], float], rng: np.random.Generator
) -> dict[tuple[str, str], float]:
    edges = {(f"0.{a}", f"1.{b}.{c}"): float(rng.random()) * node_scores[(0, a)] * node_scores[(1, b)]
             for a in range(N_HEADS) for b in range(N_HEADS) for c in "qkv"}
    edges.update({(f"1.{b}", "logits"): node_scores[(1, b)] * float(rng.uniform(0.5, 1))
                  for b in range(N_HEADS)})
    return edges


def _truth_edges(truth: set[tuple[int, int]]) -> set[tuple[str, str]]:
    late = [h for layer, h in truth if layer == 1]
    return ({(f"0.{a}", f"1.{b}.{c}") for layer, a in truth if layer == 0 for b in late for c in "qk"}
            | {(f"1.{b}", "logits") for b in late})


def _method_rows(task: str, truth: set[tuple[int, int]], method: str, seconds: float, separation: float,
                 rng: np.random.Generator) -> dict[str, list[dict]]:
    """One synthetic circuit run: its row, node and edge scores and (not for the ground truth) evaluations."""
    run_id = f"{task}-{method}"
    heads = [(layer, head) for layer in range(N_LAYERS) for head in range(N_HEADS)]
    run = {"circuit_run_id": run_id, "run_id": "circuits-demo", "task": task, "model": DEMO_MODEL,
           "method": method, "config": {"n_prompts": 20}, "seed": 0, "seconds": seconds,
           "peak_memory_mb": float(rng.uniform(50, 400))}
    node_scores = {h: (float(h in truth) if method == "ground_truth" else
                       separation * (h in truth) + 2.5 * (1 - separation) * float(rng.random()))
                   for h in heads}
    edge_scores = _edge_scores(node_scores, rng)
    scores = [{"circuit_run_id": run_id, "level": "node", "node": f"{h[0]}.{h[1]}", "target": None,
               "score": round(v, 4)} for h, v in node_scores.items()]
    scores += [{"circuit_run_id": run_id, "level": "edge", "node": a, "target": b, "score": round(v, 4)}
               for (a, b), v in edge_scores.items()]
    evals = []
    if method != "ground_truth":
        for metric, (auc, curve) in (("node_auc", _roc(node_scores, truth)),
                                     ("edge_auc", _roc(edge_scores, _truth_edges(truth)))):
            evals.append({"circuit_run_id": run_id, "ground_truth": "patching", "metric": metric,
                          "value": round(auc, 4), "curve": curve})
        faithful = [[n, round(min(1.0, separation * (1 - 0.5 ** n) + 0.05 * float(rng.random())), 4)]
                    for n in (1, 2, 4, 8, 16, 32)]
        evals.append({"circuit_run_id": run_id, "ground_truth": "patching", "metric": "faithfulness",
                      "value": float(np.mean([v for _, v in faithful])), "curve": faithful})
    return {"circuit_runs": [run], "circuit_scores": scores, "circuit_evals": evals}


def _circuit_rows(rng: np.random.Generator) -> dict[str, list[dict]]:
    tables: dict[str, list[dict]] = {"circuit_runs": [], "circuit_scores": [], "circuit_evals": []}
    for task, truth in TRUTH.items():
        for method, (seconds, separation) in {"ground_truth": (60.0, 1.0), **CIRCUIT_METHODS}.items():
            for table, rows in _method_rows(task, truth, method, seconds, separation, rng).items():
                tables[table] += rows
    return tables


def _small_tables() -> dict[str, list[dict]]:
    runs = [{"run_id": r, "kind": r.split("-")[0], "name": f"{r} ({DEMO_MODEL})",
             "config": {"model": DEMO_MODEL,
                        **({"tokens": 2_000_000, "batch_size": 4096} if r == "train-demo" else {})},
             "status": "done", "message": "synthetic demo rows"}
            for r in ("cache-demo", "train-demo", "eval-demo", "circuits-demo")]
    prompts = [{"dataset_id": "ioi-demo", "task": "ioi", "seed": 0, "idx": i, "kind": kind, "prompt": text,
                "answer": answer, "attributes": {"template": "ABBA"}}
               for i, (kind, text, answer) in enumerate([
                   ("positive", "When Mary and John went to the store, John gave a drink to", " Mary"),
                   ("negative", "When Mary and John went to the store, Anna gave a drink to", None),
                   ("positive", "When Tom and Sue went to the park, Sue gave a ball to", " Tom")])]
    labels = [{"sae_id": DEMO_SAES[0].sae_id, "latent": 5, "label": "demo label",
               "note": "a synthetic row shaped like a researcher's label saved from the feature page"}]
    return {"runs": runs, "task_prompts": prompts, "feature_labels": labels}


def _cached_site_rows(workspace: Workspace) -> list[dict]:
    from saelab.activations import HookSite, SiteCacheResult
    from saelab.activations.store import store_paths
    from saelab.workflows.storage import cached_site_rows

    out_dir = workspace.activations_for(DEMO_MODEL)
    shapes = (("0.attn_z", (N_HEADS, D_MODEL // N_HEADS)), ("1.resid_post", (D_MODEL,)))
    sites = [SiteCacheResult(site, HookSite.parse(site).hook_name, store_paths(out_dir, site).manifest,
                             2_000_000, D_MODEL, "float32", shape) for site, shape in shapes]
    return cached_site_rows(workspace, "cache-demo", DEMO_MODEL, sites)


def build_demo_workspace(root: str | Path, d_sae: int = 64, seed: int = 0,
                         sae_files: bool = True) -> Workspace:
    """Create a workspace at `root` holding synthetic rows in every table (and real SAE directories behind
    the `saes` rows unless `sae_files` is False). Returns it. Refuses a root that already has a store."""
    workspace = Workspace(Path(root).resolve()).create()
    if workspace.db_path.exists():
        raise ValueError(f"{workspace.db_path} already exists; build the demo workspace in an empty "
                         "directory")
    store = ResultsStore(workspace.db_path).initialize()
    rng = np.random.default_rng(seed)
    tables = {**_small_tables(), "cached_sites": _cached_site_rows(workspace), "saes": _sae_rows(d_sae),
              "training_metrics": list(_curves(rng)), "eval_metrics": _eval_rows(rng), "features": [],
              "feature_examples": []}
    for demo in DEMO_SAES:
        n_heads = N_HEADS if demo.site.endswith("attn_z") else None
        features = feature_rows(demo.sae_id, range(d_sae), n_heads, rng)
        tables["features"] += features
        tables["feature_examples"] += example_rows(
            demo.sae_id, {f["latent"]: f["max_act"] for f in features}, rng
        )
    tables.update(_circuit_rows(rng))
    for table, rows in tables.items():
        store.insert(table, rows)
    if sae_files:
        _save_sae_dirs(workspace, d_sae)
    return workspace
