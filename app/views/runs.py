"""Runs: runs and SAEs with their configs, training curves, core metrics, the FVU–L0 frontier."""

import charts
import streamlit as st
import ui

from saelab.app_support import frontier_points
from saelab.app_support.dead import dead_fraction_note, tokens_text, training_dead_window
from saelab.db import queries as q

CURVE_DEFAULTS = ("loss", "fvu", "l0", "dead_fraction")


def _dead_windows(saes, runs) -> dict[str, int | None]:
    """SAE id -> the dead window (tokens) of the training run behind it."""
    configs = dict(zip(runs["run_id"], runs["config"], strict=True)) if not runs.empty else {}
    return {sae_id: training_dead_window(configs.get(run_id))
            for sae_id, run_id in zip(saes["sae_id"], saes["run_id"], strict=True)}


def _curves(store, saes, windows: dict[str, int | None]) -> None:
    st.subheader("Training curves")
    every = st.toggle("all SAEs", value=len(saes) <= 8)
    chosen = list(saes["sae_id"]) if every else st.multiselect("SAEs", list(saes["sae_id"]),
                                                               default=list(saes["sae_id"])[:3])
    names = q.training_metric_names(store, chosen)
    if not names:
        st.info(f"No training metrics logged for these SAEs: {ui.FILL_HINT['saes']}.")
        return
    metrics = st.multiselect("metrics", names, default=[m for m in CURVE_DEFAULTS if m in names] or names[:4])
    log_y = st.toggle("log y axes", value=False)
    if metrics:
        ui.chart(charts.training_curves(q.training_curves(store, chosen, metrics), metrics, log_y))
    if "dead_fraction" in metrics:
        st.caption(f"dead_fraction while training: the share of latents idle for the last "
                   f"{tokens_text(windows.get(s) for s in chosen)} training tokens (core metrics below use "
                   "another window).")


def _core(store, windows: dict[str, int | None]) -> None:
    st.subheader("Core metrics")
    if "core" not in q.eval_kinds(store):
        st.info(f"No core metrics yet: {ui.FILL_HINT['evals']}.")
        return
    core = q.eval_metrics(store, "core")
    meta = core.drop_duplicates("sae_id").set_index("sae_id")[["architecture", "site", "d_sae"]]
    wide = meta.join(core.pivot_table(index="sae_id", columns="metric", values="value")).reset_index()
    st.dataframe(wide, hide_index=True, height=min(300, 38 + 35 * len(wide)))
    ui.download_csv(wide, "core-metrics")
    if "dead_fraction" in wide.columns:
        eval_tokens = wide["n_tokens"] if "n_tokens" in wide.columns else []
        st.markdown(dead_fraction_note([windows.get(s) for s in wide["sae_id"]], eval_tokens))
    st.subheader("Compare SAEs: sparsity against fidelity")
    points = frontier_points(core)
    if points.empty:
        st.info("The core metrics have no FVU and L0 pair to plot.")
        return
    st.caption("One panel per site. Lower left is better; lines join each architecture's Pareto-optimal SAEs. "
               "Discrete SAEs (argmax codes, VQ) sit at L0 = number of codes.")
    ui.chart(charts.frontier(points))


def render() -> None:
    st.title("Runs")
    store = ui.require_store()
    counts = q.table_counts(store)
    cols = st.columns(4)
    for col, table in zip(cols, ("runs", "saes", "features", "circuit_runs"), strict=True):
        col.metric(table.replace("_", " "), f"{counts.get(table, 0):,}")
    runs = q.list_runs(store)
    st.subheader("Runs")
    if runs.empty:
        st.info(f"No runs recorded yet: {ui.FILL_HINT['store']}.")
    else:
        st.dataframe(runs, hide_index=True, height=min(250, 38 + 35 * len(runs)))
        ui.download_csv(runs, "runs")
    saes = q.list_saes(store)
    st.subheader("SAEs")
    if saes.empty:
        st.info(f"No SAEs yet: {ui.FILL_HINT['saes']}.")
        return
    st.dataframe(saes, hide_index=True, height=min(300, 38 + 35 * len(saes)),
                 column_config={"dashboards": st.column_config.NumberColumn(
                     help="latents with dashboard rows (0: compute them with saelab eval --dashboards)")})
    ui.download_csv(saes, "saes")
    windows = _dead_windows(saes, runs)
    _curves(store, saes, windows)
    _core(store, windows)


ui.run_page(render)
