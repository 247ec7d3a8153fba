"""The whole loop on the bundled model, as `saelab demo` runs it: cache activations, train a sweep of SAEs in
one pass, evaluate them (core metrics, dashboards), identify circuits, and record everything in the workspace.
Re-running reuses what the workspace already holds. Returns what it did; printing is the CLI's."""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.models import load_model
from saelab.workflows.circuits import CircuitSummary, demo_circuits
from saelab.workflows.eval import EvalRequest, run_eval
from saelab.workflows.storage import cached_site_rows, missing_eval_outputs
from saelab.workflows.train import SAESpec, TrainSpec, train_in_workspace
from saelab.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """What `saelab demo` runs."""

    model: str
    """Model name or directory (default: the bundled model)."""
    quick: bool = False
    """The smallest version of every step (a couple of minutes on 2 cores)."""
    seed: int = 0
    """Seed for everything random in the demo."""
    circuits: bool = True
    """Run the circuit methods on the three tasks (skipped for models whose tokenizer cannot express them)."""

    @property
    def cache_tokens(self) -> int:
        return 32_768 if self.quick else 262_144

    @property
    def train_tokens(self) -> int:
        return 65_536 if self.quick else 2_097_152

    @property
    def batch_size(self) -> int:
        return 512 if self.quick else 4096

    @property
    def eval_tokens(self) -> int:
        return 4096 if self.quick else 32_768

    @property
    def dashboard_tokens(self) -> int:
        return 8192 if self.quick else 65_536


class DemoStep(NamedTuple):
    name: str
    seconds: float
    detail: str


class SAESummary(NamedTuple):
    sae_id: str
    architecture: str
    site: str
    fvu: float
    l0: float
    ce_recovered: float


class DemoResult(NamedTuple):
    run_id: str
    db_path: Path
    steps: list[DemoStep]
    saes: list[SAESummary]
    circuits: list[CircuitSummary]


def demo_sites(n_layers: int) -> list[str]:
    """A residual site in the middle of the model and the attention output (hook_z) of the layer before."""
    middle = max(n_layers // 2, 1)
    return [f"{middle}.resid_post", f"{middle - 1}.attn_z"]


def demo_sweep(sites: list[str], d_model: int) -> tuple[SAESpec, ...]:
    """TopK, ReLU-L1, JumpReLU and a discrete VQ SAE on the residual site; TopK on hook_z (Kissane et al.)."""
    resid, attn = sites
    width = 8 * d_model
    return (
        SAESpec(site=resid, architecture="topk", width=width, k=16),
        SAESpec(site=resid, architecture="relu_l1", width=width, l1_coefficient=1.0),
        SAESpec(site=resid, architecture="jumprelu", width=width, l0_coefficient=0.5),
        SAESpec(site=resid, architecture="vq", width=256, k=1),
        SAESpec(site=attn, architecture="topk", width=width, k=16),
    )


def run_demo(workspace: Workspace, cfg: DemoConfig,
             on_step: Callable[[str, DemoStep | None], None] | None = None) -> DemoResult:
    """Run every step; each reuses what the workspace already holds. `on_step(name, None)` is called as a
    step starts and `on_step(name, step)` when it has finished (the CLI shows progress with it)."""
    steps: list[DemoStep] = []
    report = on_step or (lambda name, step: None)
    start = time.perf_counter()
    model = load_model(cfg.model)  # before the workspace is touched: a bad name changes nothing
    steps.append(DemoStep("load model", time.perf_counter() - start,
                          f"{cfg.model}: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}"))
    report(steps[-1].name, steps[-1])
    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run("demo", name=cfg.model, config={**asdict(cfg), "quick": cfg.quick})
    try:
        sites = demo_sites(model.cfg.n_layers)
        steps.append(_timed("cache activations", lambda: _cache(workspace, cfg, model, sites, run_id),
                            report))
        trained: dict = {}
        steps.append(_timed("train SAEs (one pass)", lambda: _train(workspace, cfg, sites, model, trained),
                            report))
        saes: list[SAESummary] = []
        steps.append(_timed("evaluate SAEs", lambda: _evaluate(workspace, cfg, model, trained, saes), report))
        circuits: list[CircuitSummary] = []
        if cfg.circuits:
            steps.append(_timed("circuits", lambda: demo_circuits(workspace, cfg.model, model, cfg.seed,
                                                                  cfg.quick, circuits), report))
    except Exception as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done", "; ".join(f"{s.name}: {s.detail}" for s in steps))
    return DemoResult(run_id, workspace.db_path, steps, saes, circuits)


def _timed(name: str, step, report: Callable[[str, DemoStep | None], None]) -> DemoStep:
    report(name, None)
    start = time.perf_counter()
    detail = step()
    done = DemoStep(name, time.perf_counter() - start, detail)
    log.info("%s: %.1f s, %s", name, done.seconds, detail)
    report(name, done)
    return done


def _cache(workspace: Workspace, cfg: DemoConfig, model, sites: list[str], run_id: str) -> str:
    from saelab.activations import cache_activations
    from saelab.data.sources import bundled_source

    result = cache_activations(cfg.model, sites, cfg.cache_tokens,
                               out_dir=workspace.activations_for(cfg.model),
                               source=bundled_source(), seed=cfg.seed, context_len=min(128, model.cfg.n_ctx),
                               model=model, progress=False)
    if result.tokens_written:
        ResultsStore(workspace.db_path).insert("cached_sites",
                                               cached_site_rows(workspace, run_id, cfg.model,
                                                                result.sites.values()))
    reused = "" if result.tokens_written else " (reused)"
    return f"{', '.join(result.sites)}: {result.n_tokens:,} tokens{reused}"


def _train(workspace: Workspace, cfg: DemoConfig, sites: list[str], model, trained: dict) -> str:
    spec = TrainSpec(model=cfg.model, saes=demo_sweep(sites, model.cfg.d_model), tokens=cfg.train_tokens,
                     batch_size=cfg.batch_size, lr=1e-3, seed=cfg.seed, log_every_steps=5,
                     checkpoint_every_tokens=cfg.train_tokens // 4)
    result = train_in_workspace(workspace, spec, progress=False, model=model)
    trained.update(result.paths)
    return f"{len(result.sae_ids)} SAEs on {len(sites)} sites, {cfg.train_tokens:,} tokens" + (
        " (reused)" if result.reused else "")


def _evaluate(workspace: Workspace, cfg: DemoConfig, model, trained: dict, saes: list) -> str:
    store = ResultsStore(workspace.db_path)
    # every SAE gets core metrics and dashboards (attn_z: head attribution)
    for sae_id, path in trained.items():
        dashboards = True
        if missing_eval_outputs(store, sae_id, dashboards):  # done only when every output is stored
            run_eval(workspace, EvalRequest(sae_path=str(path), sae_id=sae_id, model=cfg.model,
                                            n_tokens=cfg.eval_tokens, dashboards=dashboards,
                                            dashboard_tokens=cfg.dashboard_tokens, seed=cfg.seed), model)
        rows = store.select("eval_metrics", where={"sae_id": sae_id, "eval_kind": "core"})
        values = dict(zip(rows["metric"], rows["value"], strict=True))
        sae_row = store.select("saes", where={"sae_id": sae_id}).iloc[0]
        saes.append(SAESummary(sae_id, sae_row["architecture"], sae_row["site"],
                               values.get("fvu", float("nan")),
                               values.get("l0", float("nan")), values.get("ce_loss_score", float("nan"))))
    return f"{len(saes)} SAEs: core metrics and dashboards"


