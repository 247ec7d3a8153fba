"""The one builder of each row the workflows write into the results store, and thin writers of them (all SQL
stays in saelab.db)."""

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from saelab.db import ResultsStore
from saelab.sae import SAE, SAEConfig, get_architecture

if TYPE_CHECKING:
    from saelab.activations import SiteCacheResult
    from saelab.workspace import Workspace


def sae_row(cfg: SAEConfig, sae_id: str, path: str, run_id: str | None) -> dict:
    """The `saes` row of an SAE with config `cfg` stored at `path` (the one builder of that row:
    `saelab train` and `saelab eval` both write it); k only for architectures that use it; output_site and
    d_out only for a transcoder (`site` is the site it reads)."""
    return {"sae_id": sae_id, "run_id": run_id, "model": cfg.model_name, "site": cfg.hook_site,
            "architecture": cfg.architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae,
            "k": cfg.k if get_architecture(cfg.architecture).uses_k else None,
            "output_site": cfg.output_site if cfg.is_transcoder else None,
            "d_out": cfg.d_target if cfg.is_transcoder else None,
            "config": dataclasses.asdict(cfg), "path": path}


def cached_site_rows(workspace: "Workspace", run_id: str, model: str, sites: "Iterable[SiteCacheResult]"
                     ) -> list[dict]:
    """The `cached_sites` rows of `sites`, cached for `model` by the run `run_id` (the one builder of that
    row: `saelab cache` and the demo both write it); manifest paths relative to the workspace."""
    return [{"run_id": run_id, "model": model, "site": s.site, "dtype": s.dtype, "d": s.d,
             "n_tokens": s.n_tokens, "manifest_path": workspace.relative(s.manifest_path)} for s in sites]


def ensure_sae_row(store: ResultsStore, sae: SAE, sae_id: str, path: str | Path, run_id: str | None) -> bool:
    """Insert the SAE into `saes` unless a row with its id exists; returns whether it inserted."""
    if not store.select("saes", where={"sae_id": sae_id}, limit=1).empty:
        return False
    store.insert("saes", [sae_row(sae.cfg, sae_id, str(path), run_id)])
    return True


def write_eval_metrics(store: ResultsStore, rows: list[dict]) -> int:
    """Append `eval_metrics` rows (readers take the latest value of each metric)."""
    return store.insert("eval_metrics", rows)


def write_dashboards(store: ResultsStore, sae_id: str, features: list[dict], examples: list[dict]) -> int:
    """Replace one SAE's dashboards (its `features` and `feature_examples` rows) in one transaction, so that a
    kill or an error in between leaves the earlier dashboards whole."""
    with store.transaction() as tx:
        tx.replace_rows("features", {"sae_id": sae_id}, features)
        tx.replace_rows("feature_examples", {"sae_id": sae_id}, examples)
    return len(features)


def missing_eval_outputs(store: ResultsStore, sae_id: str, dashboards: bool) -> list[str]:
    """What an evaluation of `sae_id` would store that the store lacks: "core metrics", and "dashboards" when
    they are asked for. Empty: the evaluation is done (a killed one is not)."""
    missing = []
    if store.select("eval_metrics", where={"sae_id": sae_id, "eval_kind": "core"}, limit=1).empty:
        missing.append("core metrics")
    if dashboards and store.select("features", where={"sae_id": sae_id}, limit=1).empty:
        missing.append("dashboards")
    return missing
