"""Evaluations of SAEs. Names are imported lazily (the modules pull in TransformerLens):

- core: `evaluate_core(model, sae, tokens) -> CoreMetrics` (MSE, FVU, cosine, L0, dead/dense latents, CE and
  KL with the SAE spliced in, CE recovered vs zero- and mean-ablation), `core_metric_rows`.
- features: `compute_dashboards(model, sae, tokens) -> FeatureDashboards`; dashboard_rows: `feature_rows`,
  `example_rows`, `vocab_strings`.
- attention: `head_attribution`, `latent_dfa`, `dfa`, `head_summary`, `head_summary_rows`.
- supervised (torch only): `fit_supervised`, `supervised_reconstruction`, `supervised_edit`, `decode_attributes`,
  `f1_table`, `assign_latents`, `sae_edit`, `sae_dictionary`; supervised_ioi: `location_context`,
  `evaluate_dictionary`, `score_rows`; ioi: `Location`, `ioi_locations`, `split_fit_eval`.

Running an evaluation against a workspace and its store is `saelab.workflows.eval`.
"""

import importlib

_EXPORTS = {
    "core": ("CoreEvalConfig", "CoreMetrics", "evaluate_core", "core_metric_rows"),
    "features": ("DashboardConfig", "FeatureDashboards", "compute_dashboards"),
    "dashboard_rows": ("feature_rows", "example_rows", "vocab_strings"),
    "attention": ("head_attribution", "latent_dfa", "dfa", "head_summary", "head_summary_rows"),
    "supervised": ("SupervisedDictionary", "SupervisedEvalConfig", "fit_supervised", "supervised_reconstruction",
                   "supervised_edit", "decode_attributes", "f1_table", "sae_dictionary"),
    "supervised_ioi": ("location_context", "evaluate_dictionary", "score_rows", "DictionaryScores"),
    "ioi": ("Location", "ioi_locations", "split_fit_eval", "prompts_from_dataset"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'saelab.evals' has no attribute {name!r}")
    return getattr(importlib.import_module(f"saelab.evals.{_MODULE_OF[name]}"), name)
