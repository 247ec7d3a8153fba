"""How the app orders, describes and compares evaluation metrics (display only; the numbers come from the
store)."""

import pandas as pd

KEY_METRICS: dict[str, str] = {
    "fvu": "fraction of variance unexplained: ‖x − x̂‖² / ‖x − mean‖² over the evaluation tokens "
    "(lower is better)",
    "l0": "active latents per token, mean over the evaluation tokens",
    "ce_loss_score": "CE loss recovered with the SAE spliced in, relative to zero ablation "
    "(1 = the model's own)",
    "ce_recovered_mean": "CE loss recovered relative to mean ablation (1 = the model's own)",
    "kl_div": "KL(model ‖ model with the SAE spliced in) per predicted token (lower is better)",
    "dead_fraction": "share of latents that never fired on the n_tokens evaluation tokens",
    "dense_fraction": "share of latents that fire on more than 10% of the evaluation tokens",
}
"""Core metrics shown first, in this order, with what each measures."""

EVAL_KIND_DESCRIPTIONS: dict[str, str] = {
    "core": "Reconstruction and sparsity of each SAE on held-out tokens, and the model's loss with it "
    "spliced in.",
    "supervised_ioi": "Supervised dictionaries against SAEs on IOI (Makelov, Lange & Nanda 2024): "
    "approximation (sufficiency, necessity), control (edit accuracy, edit magnitude) and interpretability "
    "(F1 of features against attributes), occlusion and over-splitting.",
    "attn_heads": "Attention-SAE head attribution (Kissane et al. 2024): per head, how many latents write "
    "mostly through it and how concentrated their decoder weight is.",
}


def ordered_metrics(columns: list[str]) -> list[str]:
    """Key metrics first (in KEY_METRICS order), then the rest alphabetically."""
    key = [m for m in KEY_METRICS if m in columns]
    return key + sorted(c for c in columns if c not in KEY_METRICS)


def most_varying_metric(table: pd.DataFrame) -> str | None:
    """The first metric in display order whose values differ between the rows (dictionaries); else the first
    metric; None for an empty table."""
    columns = ordered_metrics(list(table.columns))
    varying = [c for c in columns if table[c].dropna().nunique() > 1]
    return (varying or columns or [None])[0]
