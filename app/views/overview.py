"""SAE overview: latents by log density (click a bin to list them), dead and dense counts, the L0 distribution."""

import urllib.parse

import charts
import pandas as pd
import streamlit as st
import ui

from saelab.app_support.overview import density_histogram
from saelab.db import queries as q

L0_QUANTILES = {"l0_p10": "p10", "l0_p50": "median", "l0_p90": "p90", "l0_p99": "p99"}


def _dense_threshold() -> float:
    from saelab.evals.core import CoreEvalConfig  # the threshold `saelab eval` counts dense latents by

    return CoreEvalConfig().dense_threshold


def _counts(sae: q.SaeRow, hist, core: dict[str, float], threshold: float) -> None:
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("latents", f"{sae.d_sae:,}", help=f"{sae.dashboards:,} with dashboard rows")
    c2.metric("never fire", f"{len(hist.dead):,}", help="density 0 on the dashboard tokens")
    c3.metric("dense", f"{len(hist.dense):,}", help=f"fire on more than {threshold:.0%} of the dashboard tokens")
    if "l0" in core:
        c4.metric("mean L0", f"{core['l0']:.1f}", help="active latents per token on the evaluation tokens")


def _bin_latents(sae: q.SaeRow, hist, latents: pd.DataFrame, event) -> None:
    points = event.selection.points if event is not None and event.selection else []
    fullest = max(range(len(hist.latents)), key=lambda i: hist.counts[i])
    clicked = points[0]["point_index"] if points else fullest
    labels = [f"{hist.label(i)}  ({n} latents)" for i, n in enumerate(hist.counts)]
    chosen = st.selectbox("latents in bin", range(len(labels)), index=clicked, format_func=labels.__getitem__,
                          key=f"density_bin_{sae.sae_id}_{clicked}")
    rows = latents[latents["latent"].isin(hist.latents[chosen])].sort_values("density", ascending=False)
    rows = rows.assign(open=[f"/features?sae={urllib.parse.quote(sae.sae_id)}&latent={latent}"
                             for latent in rows["latent"]])
    st.dataframe(rows, hide_index=True, height=min(320, 38 + 35 * len(rows)), column_config={
        "open": st.column_config.LinkColumn("dashboard", display_text="open"),
        "density": st.column_config.NumberColumn(format="%.2e")})


def render() -> None:
    st.title("SAE overview")
    store = ui.require_store()
    sae = ui.pick_sae_with_dashboards(store, ", so no densities")
    if sae is None:
        return
    latents = q.latent_densities(store, sae.sae_id)
    threshold = _dense_threshold()
    hist = density_histogram(list(latents["latent"]), list(latents["density"]), threshold)
    core = q.sae_eval_metrics(store, sae.sae_id)
    _counts(sae, hist, core, threshold)
    left, right = st.columns([3, 2])
    with left:
        if hist.latents:
            event = st.plotly_chart(charts.density_bars([hist.label(i) for i in range(len(hist.counts))],
                                                        hist.counts),
                                    on_select="rerun", selection_mode="points", key=f"density_{sae.sae_id}",
                                    config={"displayModeBar": False})
            _bin_latents(sae, hist, latents, event)
        else:
            st.info("No latent of this SAE fires on the dashboard tokens.")
    with right:
        quantiles = {label: core[key] for key, label in L0_QUANTILES.items() if key in core}
        if quantiles:
            ui.chart(charts.l0_quantiles(quantiles))
        else:
            st.info(f"No L0 distribution yet: {ui.FILL_HINT['evals']} on this SAE.")


ui.run_page(render)
