"""Thin writers of evaluation rows into the results store (all SQL stays in saelab.db)."""

import dataclasses
from pathlib import Path

from saelab.db import ResultsStore
from saelab.errors import SaelabError
from saelab.sae import SAE


def sae_row(sae: SAE, sae_id: str, path: str, run_id: str | None) -> dict:
    """A `saes` row for an SAE (the same fields `saelab train` writes)."""
    cfg = sae.cfg
    return {"sae_id": sae_id, "run_id": run_id, "model": cfg.model_name, "site": cfg.hook_site,
            "architecture": cfg.architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae,
            "k": cfg.k if cfg.architecture in ("topk", "batchtopk", "vq") else None,
            "config": dataclasses.asdict(cfg), "path": path}


def ensure_sae_row(store: ResultsStore, sae: SAE, sae_id: str, path: str | Path, run_id: str | None) -> bool:
    """Insert the SAE into `saes` unless a row with its id exists; returns whether it inserted."""
    if not store.select("saes", where={"sae_id": sae_id}, limit=1).empty:
        return False
    store.insert("saes", [sae_row(sae, sae_id, str(path), run_id)])
    return True


def write_eval_metrics(store: ResultsStore, rows: list[dict]) -> int:
    """Append `eval_metrics` rows (readers take the latest value of each metric)."""
    return store.insert("eval_metrics", rows)


def write_dashboards(store: ResultsStore, sae_id: str, features: list[dict], examples: list[dict]) -> int:
    """Store one SAE's dashboards, replacing earlier ones when the store can (`replace_rows`)."""
    replace = getattr(store, "replace_rows", None)
    if replace is not None:
        replace("features", {"sae_id": sae_id}, features)
        replace("feature_examples", {"sae_id": sae_id}, examples)
        return len(features)
    if not store.select("features", where={"sae_id": sae_id}, limit=1).empty:
        raise SaelabError(f"dashboards of SAE {sae_id!r} are already in {store.path}; evaluate it under another "
                          "--sae-id or use a fresh workspace")
    store.insert("features", features)
    store.insert("feature_examples", examples)
    return len(features)
