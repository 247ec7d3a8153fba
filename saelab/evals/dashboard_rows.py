"""Store rows of feature dashboards: `features` (one per latent) and `feature_examples` (top and quantile)."""

import math

import torch

from saelab.evals.features import DashboardConfig, ExampleBuffer, FeatureDashboards


def vocab_strings(tokenizer, d_vocab: int) -> list[str]:
    """The text of every token id (each decoded on its own), for showing contexts and logit effects."""
    size = min(d_vocab, len(tokenizer)) if tokenizer is not None else 0
    strings = [tokenizer.decode([i]) for i in range(size)] if size else []
    return strings + [f"<{i}>" for i in range(len(strings), d_vocab)]


def _histogram(edges: list[float], counts: list[int]) -> dict | None:
    nonzero = [i for i, c in enumerate(counts) if c]
    if not nonzero:
        return None
    first, last = nonzero[0], nonzero[-1]
    return {"edges": edges[first:last + 2], "counts": counts[first:last + 1], "scale": "log"}


def _logits(values: list[float], ids: list[int], strings: list[str]) -> list[dict]:
    return [{"token": strings[i], "value": round(v, 5)} for v, i in zip(values, ids, strict=True)]


def feature_rows(dash: FeatureDashboards, sae_id: str, strings: list[str]) -> list[dict]:
    """One `features` row per latent."""
    edges = [float(e) for e in dash.histogram_edges]
    histogram = dash.histogram.tolist()
    logits = None if dash.logits is None else [t.tolist() for t in dash.logits]
    attribution = None if dash.head_attribution is None else dash.head_attribution.tolist()
    rows = []
    for latent in range(len(dash.density)):
        mean = float(dash.mean_act[latent])
        rows.append({
            "sae_id": sae_id, "latent": latent, "density": float(dash.density[latent]),
            "mean_act": None if math.isnan(mean) else mean, "max_act": float(dash.max_act[latent]),
            "histogram": _histogram(edges, histogram[latent]),
            "top_logits": None if logits is None else _logits(logits[0][latent], logits[1][latent], strings),
            "bottom_logits": None if logits is None else _logits(logits[2][latent], logits[3][latent], strings),
            "head_attribution": None if attribution is None else [round(a, 5) for a in attribution[latent]],
        })
    return rows


def _example(dash: FeatureDashboards, window: list[float], token_index: int, half: int, strings: list[str]) -> dict:
    """Tokens, activations and centre of one example, its window cut to the context."""
    context_len = dash.tokens.shape[1]
    context, position = divmod(token_index, context_len)
    low, high = max(0, position - half), min(context_len, position + half + 1)
    ids = dash.tokens[context, low:high].tolist()
    cut = window[low - (position - half): high - (position - half)]
    return {"tokens": [strings[i] for i in ids], "activations": [round(a, 5) for a in cut], "center": position - low}


def _top_rows(dash: FeatureDashboards, sae_id: str, latent: int, buffer: list, strings: list[str], half: int):
    activation, token_index, window = buffer
    for rank, (a, t, w) in enumerate(zip(activation, token_index, window, strict=True)):
        if a > 0:
            yield {"sae_id": sae_id, "latent": latent, "kind": "top", "rank": rank, "activation": a,
                   **_example(dash, w, t, half, strings)}


def quantile_picks(activations: torch.Tensor, n_quantiles: int, per_quantile: int) -> list[list[int]]:
    """Indices into `activations` (a uniform sample of firing activations): per quantile group, lowest group
    first, up to `per_quantile` evenly spaced members, strongest first."""
    order = activations.argsort()
    picks = []
    for group in order.tensor_split(n_quantiles):
        if group.numel() == 0:
            picks.append([])
            continue
        spots = torch.linspace(0, group.numel() - 1, min(per_quantile, group.numel())).round().long().unique()
        picks.append(group[spots].flip(0).tolist())
    return picks


def _quantile_rows(dash, sae_id, latent, sample: ExampleBuffer, cfg: DashboardConfig, strings):
    firing = sample.score[latent] >= 0
    activation = sample.activation[latent][firing]
    token_index, window = sample.token_index[latent][firing], sample.window[latent][firing]
    for q, members in enumerate(quantile_picks(activation, cfg.n_quantiles, cfg.per_quantile)):
        for rank, i in enumerate(members):
            yield {"sae_id": sae_id, "latent": latent, "kind": f"quantile_{q}", "rank": rank,
                   "activation": float(activation[i]),
                   **_example(dash, window[i].tolist(), int(token_index[i]), cfg.window, strings)}


def example_rows(dash: FeatureDashboards, sae_id: str, strings: list[str], cfg: DashboardConfig) -> list[dict]:
    """`feature_examples` rows: kind "top" (rank 0 = strongest) and "quantile_q" (q = 0 is the weakest group)."""
    top = [t.tolist() for t in (dash.top.activation, dash.top.token_index, dash.top.window)]
    rows = []
    for latent in range(len(dash.density)):
        rows.extend(_top_rows(dash, sae_id, latent, [c[latent] for c in top], strings, cfg.window))
        rows.extend(_quantile_rows(dash, sae_id, latent, dash.sample, cfg, strings))
    return rows
