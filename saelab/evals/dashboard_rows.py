"""Store rows of feature dashboards: `features` (one per latent) and `feature_examples` (top and quantile)."""

import math

import torch

from saelab.evals.features import DashboardConfig, FeatureDashboards, histogram_bins


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


def _quantiles(count: list[int], low: list[float], high: list[float]) -> list[dict] | None:
    """The non-empty quantile groups, weakest first: index q (its examples are kind "quantile_q"), the
    smallest and largest activation in it and how many firing tokens it holds."""
    groups = [{"index": q, "low": round(lo, 6), "high": round(hi, 6), "count": c}
              for q, (c, lo, hi) in enumerate(zip(count, low, high, strict=True)) if c]
    return groups or None


def feature_rows(dash: FeatureDashboards, sae_id: str, strings: list[str]) -> list[dict]:
    """One `features` row per latent."""
    quantiles = [t.tolist() for t in (dash.quantiles.count, dash.quantiles.low, dash.quantiles.high)]
    edges = [float(e) for e in dash.histogram_edges]
    histogram = dash.histogram.tolist()
    logits = None if dash.logits is None else [t.tolist() for t in dash.logits]
    attribution = None if dash.head_attribution is None else dash.head_attribution.tolist()
    rows = []
    for latent in range(len(dash.density)):
        mean = float(dash.mean_act[latent])
        rows.append(
            {
                "sae_id": sae_id,
                "latent": latent,
                "density": float(dash.density[latent]),
                "mean_act": None if math.isnan(mean) else mean,
                "max_act": float(dash.max_act[latent]),
                "histogram": _histogram(edges, histogram[latent]),
                "quantiles": _quantiles(*(column[latent] for column in quantiles)),
                "top_logits": None
                if logits is None
                else _logits(logits[0][latent], logits[1][latent], strings),
                "bottom_logits": None
                if logits is None
                else _logits(logits[2][latent], logits[3][latent], strings),
                "head_attribution": None
                if attribution is None
                else [round(a, 5) for a in attribution[latent]],
            }
        )
    return rows


def _rounded(t: torch.Tensor) -> list:
    """A tensor as nested lists of floats rounded to 5 decimals (in float64, so they print cleanly)."""
    return t.double().round(decimals=5).tolist()


def _example(
    tokens: list[list[int]], window: list[float], token_index: int, half: int, strings: list[str],
    documents: list[int] | None,
) -> dict:
    """Tokens, activations, centre and document (None when unknown) of one example, its window cut to the
    context."""
    context_len = len(tokens[0])
    context, position = divmod(token_index, context_len)
    low, high = max(0, position - half), min(context_len, position + half + 1)
    cut = window[low - (position - half): high - (position - half)]
    return {
        "tokens": [strings[i] for i in tokens[context][low:high]],
        "activations": cut,
        "center": position - low,
        "document": None if documents is None else documents[token_index],
    }


def quantile_picks(
    activations: list[float], groups: list[int], n_quantiles: int, per_quantile: int
) -> list[list[int]]:
    """Indices into `activations` (a uniform sample of firing activations, each with its quantile group in
    `groups`): per group, lowest group first, up to `per_quantile` members evenly spaced by activation,
    strongest first."""
    order = sorted(range(len(activations)), key=activations.__getitem__)
    picks = []
    for q in range(n_quantiles):
        group = [i for i in order if groups[i] == q]
        m = min(per_quantile, len(group))
        spots = sorted({round(i * (len(group) - 1) / (m - 1)) for i in range(m)}) if m > 1 else [0] * m
        picks.append([group[i] for i in reversed(spots)])
    return picks


def example_rows(
    dash: FeatureDashboards, sae_id: str, strings: list[str], cfg: DashboardConfig
) -> list[dict]:
    """`feature_examples` rows: kind "top" (rank 0 = strongest) and "quantile_q" (q = 0 is the weakest
    group; its examples are the sampled firing tokens that fall in the group)."""
    tokens = dash.tokens.tolist()
    documents = None if dash.documents is None else dash.documents.flatten().tolist()
    top = (_rounded(dash.top.activation), dash.top.token_index.tolist(), _rounded(dash.top.window))
    sample_bins = histogram_bins(dash.sample.activation.flatten(), dash.quantiles.edges)
    sample_groups = dash.quantiles.bin_group.gather(1, sample_bins.view(dash.sample.activation.shape))
    sample = (
        (dash.sample.score >= 0).tolist(),
        _rounded(dash.sample.activation),
        dash.sample.token_index.tolist(),
        _rounded(dash.sample.window),
        sample_groups.tolist(),
    )
    rows = []
    for latent in range(len(dash.density)):
        for rank, (a, t, w) in enumerate(zip(*(column[latent] for column in top), strict=True)):
            if a > 0:
                rows.append({"sae_id": sae_id, "latent": latent, "kind": "top", "rank": rank, "activation": a,
                             **_example(tokens, w, t, cfg.window, strings, documents)})
        kept, activation, token_index, window, group = (
            [v for v, k in zip(column[latent], sample[0][latent], strict=True) if k] for column in sample)
        for q, members in enumerate(quantile_picks(activation, group, cfg.n_quantiles, cfg.per_quantile)):
            rows.extend(
                {
                    "sae_id": sae_id,
                    "latent": latent,
                    "kind": f"quantile_{q}",
                    "rank": rank,
                    "activation": activation[i],
                    **_example(tokens, window[i], token_index[i], cfg.window, strings, documents),
                }
                for rank, i in enumerate(members)
            )
    return rows
