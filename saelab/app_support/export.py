"""A latent's dashboard as standalone files: JSON in the shape Neuronpedia's feature export uses where a field
fits (pos_str/pos_values, frac_nonzero, freq_hist_data_bar_*, activations with maxValueTokenIndex), and one
self-contained HTML page. Pure functions over the rows `saelab.db.queries` returns."""

import html
import json
from typing import Any

from saelab.app_support.render import context_html, histogram_bars, logit_entries
from saelab.db.queries import FeatureExample, FeatureRow, SaeRow


def dashboard_json(
    sae: SaeRow, latent: int, feature: FeatureRow | None, examples: list[FeatureExample]
) -> dict:
    """One latent's dashboard as a JSON-ready dict (Neuronpedia field names where they fit; saelab's own
    fields, such as `sae_id`, `head_attribution`, `quantiles` and each context's `document`, beside them)."""
    top, bottom = logit_entries(feature.top_logits if feature else None), logit_entries(
        feature.bottom_logits if feature else None)
    bars = histogram_bars(feature.histogram) if feature else None
    return {
        "modelId": sae.model, "layer": sae.site, "index": str(latent), "sae_id": sae.sae_id,
        "architecture": sae.architecture,
        "frac_nonzero": feature.density if feature else None,
        "maxActApprox": feature.max_act if feature else None,
        "mean_act": feature.mean_act if feature else None,
        "pos_str": [e.token for e in top], "pos_values": [e.value for e in top],
        "neg_str": [e.token for e in bottom], "neg_values": [e.value for e in bottom],
        "freq_hist_data_bar_values": [] if bars is None else bars.edges[:-1],
        "freq_hist_data_bar_heights": [] if bars is None else bars.counts,
        "head_attribution": feature.head_attribution if feature else None,
        "quantiles": feature.quantiles if feature else None,
        "activations": [{"kind": e.kind, "rank": e.rank, "tokens": e.tokens, "values": e.activations,
                         "maxValue": e.activation, "maxValueTokenIndex": e.center, "document": e.document}
                        for e in examples],
    }


def dashboard_json_text(*args: Any) -> str:
    """`dashboard_json` as indented JSON text."""
    return json.dumps(dashboard_json(*args), indent=1, ensure_ascii=False)


def dashboard_html(
    sae: SaeRow, latent: int, feature: FeatureRow | None, examples: list[FeatureExample]
) -> str:
    """A self-contained HTML page of the latent: statistics, logit effects and every context, shaded."""
    data = dashboard_json(sae, latent, feature, examples)
    scale = data["maxActApprox"] or max((e.activation for e in examples), default=1.0)
    stats = "".join(f"<li>{html.escape(k)}: {html.escape(str(data[k]))}</li>"
                    for k in ("frac_nonzero", "maxActApprox", "mean_act"))
    logits = "".join(f"<li>{html.escape(repr(t))}: {v:+.3f}</li>"
                     for t, v in (*zip(data["pos_str"], data["pos_values"], strict=True),
                                  *zip(data["neg_str"], data["neg_values"], strict=True)))
    sections = []
    for kind in dict.fromkeys(e.kind for e in examples):
        body = "".join(
            context_html(e.tokens, e.activations, scale, e.center) for e in examples if e.kind == kind
        )
        sections.append(f"<h3>{html.escape(kind.replace('_', ' '))}</h3>{body}")
    title = html.escape(f"{sae.sae_id} latent {latent}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family: sans-serif'><h1>{title}</h1>"
            f"<p>{html.escape(f'{sae.architecture} SAE on {sae.model} at {sae.site}')}</p>"
            f"<ul>{stats}</ul><h2>Logit effects</h2><ul>{logits}</ul><h2>Contexts</h2>{''.join(sections)}"
            f"</body></html>")
