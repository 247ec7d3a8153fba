"""`saelab eval` as a library call: load an SAE and its model, compute core metrics (and dashboards), store
them."""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from saelab.db import ResultsStore
from saelab.evals.core import CoreEvalConfig, CoreMetrics, core_metric_rows, evaluate_core
from saelab.evals.tokens import document_contexts, held_out_source, token_contexts, training_source
from saelab.workflows.storage import ensure_sae_row, write_dashboards, write_eval_metrics
from saelab.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRequest:
    """What `saelab eval` evaluates."""

    sae_path: str
    """Directory of an SAE saved by saelab (cfg.json + sae.safetensors)."""
    sae_id: str | None = None
    """Id in the store (default: the directory's name)."""
    model: str | None = None
    """Model name or directory (default: the model named in the SAE's config)."""
    n_tokens: int = 65_536
    """Held-out tokens for the core metrics."""
    dashboards: bool = False
    """Also compute feature dashboards."""
    dashboard_tokens: int = 1_000_000
    """Tokens of the bundled training corpus the dashboards describe."""
    context_len: int = 128
    """Tokens per context (BOS included); capped at the model's n_ctx."""
    batch_size: int = 16
    """Contexts per forward pass."""
    seed: int = 0
    """Seed of the token order and of the dashboards' quantile sampling."""

    def __post_init__(self) -> None:
        for name in ("n_tokens", "dashboard_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.context_len < 2:
            raise ValueError(f"context_len must be at least 2, got {self.context_len}")


class EvalOutcome(NamedTuple):
    run_id: str
    sae_id: str
    model: str
    core: CoreMetrics
    n_features: int
    """Latents whose dashboards were stored (0 without --dashboards)."""
    n_examples: int
    seconds: dict[str, float]


def _load(request: EvalRequest, model=None):
    from saelab.models import load_model
    from saelab.sae import load_sae

    path = Path(request.sae_path)
    sae = load_sae(path)
    model_name = request.model or sae.cfg.model_name
    if not model_name:
        raise ValueError(f"the SAE at {path} names no model; pass --model")
    return sae, model if model is not None else load_model(model_name), model_name


def stored_path(workspace: Workspace, path: Path) -> str:
    """Workspace-relative when the path lies below the workspace (a symlinked folder included), else
    absolute."""
    try:
        return workspace.relative(path)
    except ValueError:
        return str(path.resolve())


def _dashboards(model, sae, request: EvalRequest, context_len: int, sae_id: str, store,
                run_id: str, stage: Callable[[str], None], progress: bool) -> tuple[int, int]:
    from saelab.evals.dashboard_rows import example_rows, feature_rows, vocab_strings
    from saelab.evals.features import DashboardConfig, compute_dashboards

    cfg = DashboardConfig(batch_size=request.batch_size, seed=request.seed)
    stage(f"dashboards: tokenizing {request.dashboard_tokens:,} tokens of the training corpus")
    tokens, documents = document_contexts(model.tokenizer, training_source(), request.dashboard_tokens,
                                          context_len, request.seed)
    stage(f"dashboards: {sae.cfg.d_sae:,} latents over {tokens.numel():,} tokens")
    dash = compute_dashboards(model, sae, tokens, cfg, progress=progress, documents=documents)
    stage("dashboards: building and storing rows")
    strings = vocab_strings(model.tokenizer, model.cfg.d_vocab)
    features, examples = feature_rows(dash, sae_id, strings), example_rows(dash, sae_id, strings, cfg)
    write_dashboards(store, sae_id, features, examples)
    if dash.head_attribution is not None:
        from saelab.evals.attention import head_summary, head_summary_rows

        summary = head_summary(sae.W_dec, model.cfg.n_heads, alive=dash.density > 0)
        write_eval_metrics(store, head_summary_rows(summary, sae_id, run_id))
    return len(features), len(examples)


def run_eval(workspace: Workspace, request: EvalRequest, model=None,
             stage: Callable[[str], None] = lambda text: None, progress: bool = False) -> EvalOutcome:
    """Evaluate one SAE and record the run, the SAE (if new), its metrics and dashboards in the store.
    `model`: the model the request names, already loaded (a caller that holds it passes it on instead of
    loading it). `stage(text)` is called as each stage starts; `progress` shows a bar with ETA over each long
    pass."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    stage(f"loading the SAE at {request.sae_path}" + (" and its model" if model is None else ""))
    sae, model, model_name = _load(request, model)
    path = Path(request.sae_path)
    sae_id = request.sae_id or path.resolve().name
    context_len = min(request.context_len, model.cfg.n_ctx)
    store = ResultsStore(workspace.create().db_path).initialize()
    run_id = store.start_run("eval", name=sae_id, config={**asdict(request), "model": model_name})
    try:
        ensure_sae_row(store, sae, sae_id, stored_path(workspace, path), run_id)
        stage(f"core metrics: tokenizing {request.n_tokens:,} held-out tokens")
        tokens = token_contexts(model.tokenizer, held_out_source(), request.n_tokens, context_len,
                                request.seed)
        seconds["load"] = time.perf_counter() - start
        stage(f"core metrics on {tokens.numel():,} tokens "
              "(reconstruction, then CE/KL with the SAE spliced in)")
        core = evaluate_core(model, sae, tokens, CoreEvalConfig(batch_size=request.batch_size),
                             progress=progress)
        write_eval_metrics(store, core_metric_rows(core, sae_id, run_id))
        seconds["core"] = time.perf_counter() - start - seconds["load"]
        n_features = n_examples = 0
        if request.dashboards:
            begin = time.perf_counter()
            n_features, n_examples = _dashboards(model, sae, request, context_len, sae_id, store, run_id,
                                                 stage, progress)
            seconds["dashboards"] = time.perf_counter() - begin
    except Exception as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "done", f"{core.n_tokens} tokens; fvu {core.fvu:.4f}, l0 {core.l0:.2f}")
    return EvalOutcome(run_id, sae_id, model_name, core, n_features, n_examples, seconds)
