"""Circuits: scores of one method on a layer × head grid beside the ground truth, ROC curves and AUC/time of
every method, and the circuit graph."""

import charts
import pandas as pd
import streamlit as st
import ui

from saelab.app_support import ground_truth_heads, head_grid, parse_head_node, roc_points
from saelab.app_support.circuits import membership_grid, node_position
from saelab.db import queries as q

GROUND_TRUTH_METHOD = "ground_truth"


def _choose(runs: pd.DataFrame) -> tuple[str, str, str]:
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("task", sorted(runs["task"].unique()))
    models = sorted(runs.loc[runs["task"] == task, "model"].unique())
    model = c2.selectbox("model", models)
    methods = sorted(set(runs.loc[(runs["task"] == task) & (runs["model"] == model), "method"])
                     - {GROUND_TRUTH_METHOD})
    if not methods:
        st.info(f"Only a ground-truth run for {task} on {model}: {ui.FILL_HINT['circuits']} with a method.")
        st.stop()
    preferred = next((i for i, m in enumerate(methods) if m.startswith("sae_codes")), 0)
    method = c3.selectbox("method", methods, index=preferred)
    return task, model, method


def _latest(runs: pd.DataFrame, task: str, model: str, method: str) -> str | None:
    chosen = runs[(runs["task"] == task) & (runs["model"] == model) & (runs["method"] == method)]
    return None if chosen.empty else str(chosen.sort_values("created_at").iloc[-1]["circuit_run_id"])


def _heatmaps(store, runs, task, model, method) -> None:
    scores = q.circuit_scores(store, _latest(runs, task, model, method), "node")
    truth_run = _latest(runs, task, model, GROUND_TRUTH_METHOD)
    truth_scores = q.circuit_scores(store, truth_run, "node") if truth_run else None
    grid = head_grid(scores)
    left, right = st.columns(2)
    ui.chart(charts.head_heatmap(grid, f"{method}: node scores"), left)
    truth = ground_truth_heads(task, model, truth_scores)
    if truth is None:
        right.info(f"No ground truth for {task} on {model}: no causal ground-truth file (made by "
                   "`python evals/ground_truth.py`) and no published circuit for this model.")
    else:
        n_layers = max(grid.n_layers, max((layer for layer, _ in truth.heads), default=-1) + 1)
        n_heads = max(grid.n_heads, max((h for _, h in truth.heads), default=-1) + 1)
        ui.chart(charts.head_heatmap(membership_grid(truth.heads, n_layers, n_heads),
                                     f"ground truth: {truth.source}", "Greys"), right)
    _graph(store, runs, task, model, method, grid, truth)
    _node_latents(store, model, grid)


def _graph(store, runs, task, model, method, grid, truth) -> None:
    st.subheader("Circuit graph")
    edges = q.circuit_scores(store, _latest(runs, task, model, method), "edge")
    if edges.empty:
        st.caption("this run stored no edge scores")
        return
    n_top = st.slider("top edges", 1, max(1, len(edges)), min(10, len(edges)))
    shown = edges.head(n_top)
    ui.chart(charts.circuit_graph(grid, shown, lambda name: node_position(name, grid.n_layers, grid.n_heads),
                                  truth.heads if truth else None))
    if truth is not None:
        touched = {parse_head_node(str(n)) for n in (*shown["node"], *shown["target"].dropna())} - {None}
        st.caption(f"Arrows run from sender to receiver. Ground truth ({truth.source}): {len(truth.heads)} heads, "
                   f"outlined in red; {len(touched & truth.heads)} of them are on the top {n_top} edges, which "
                   f"touch {len(touched)} heads in all.")


def _node_latents(store, model: str, grid) -> None:
    """For a head of the graph, the latents of an attn_z SAE at its layer that write most through it (decoder
    weight share by head), linked to their feature pages; where there is none, the command that makes one."""
    st.markdown("**Latents behind a head** (attn_z SAEs: share of the decoder weight written through the head)")
    heads = [f"{layer}.{head}" for layer in range(grid.n_layers) for head in range(grid.n_heads)]
    if not heads:
        st.caption("this run scored no attention heads")
        return
    node = st.selectbox("head", heads, key="node_latents_head")
    layer, head = parse_head_node(node)
    saes = [row for row in q.sae_rows(store) if row.model == model and row.site == f"{layer}.attn_z"]
    if not saes:
        from saelab.cli.train import train_command

        command = train_command(model, f"{layer}.attn_z", ui.context().workspace.root)
        st.info(f"No attn_z SAE of {model} at layer {layer}, so head {node} has no latents to list. Train one "
                f"with `{command}`; it ends by printing the `saelab eval … --dashboards` command that computes "
                "its feature pages.")
        return
    if not any(sae.dashboards for sae in saes):
        st.info(f"The attn_z SAE {saes[0].sae_id!r} at layer {layer} has no feature pages yet: "
                f"{ui.dashboards_hint(saes[0])}.")
        return
    for sae in (row for row in saes if row.dashboards):
        top = q.search_features(store, q.FeatureQuery(sae.sae_id, "head_attribution", head=head, limit=5)).rows
        for latent, share in zip(top["latent"], top["head_attribution"], strict=True):
            ui.feature_link(sae.sae_id, int(latent), f"{sae.sae_id} latent {latent} — {share[head]:.0%} "
                                                     f"through head {node}")


def _label(taken: dict, label: str, row) -> str:
    """`label`, or with the run's seed when another seed of the same method already took it."""
    return label if label not in taken else f"{label} (run {str(row.circuit_run_id)[:8]})"


def _roc(evals: pd.DataFrame) -> None:
    with_curves = [m for m in ("node_auc", "edge_auc") if evals.loc[evals["metric"] == m, "curve"].notna().any()]
    if not with_curves:
        return
    metric = st.radio("ROC curves of", with_curves, horizontal=True,
                      format_func={"node_auc": "nodes (heads, MLPs)", "edge_auc": "edges"}.__getitem__)
    curves = {}
    for row in evals[evals["metric"] == metric].itertuples():
        points = roc_points(row.curve)
        if points is not None:
            curves[_label(curves, f"{row.method} vs {row.ground_truth}", row)] = (points.fpr, points.tpr,
                                                                                 float(row.value))
    ui.chart(charts.roc_curves(curves))


def _faithfulness(evals: pd.DataFrame) -> None:
    rows = evals[(evals["metric"] == "faithfulness") & evals["curve"].notna()]
    if rows.empty:
        return
    curves: dict = {}
    for row in rows.itertuples():
        curves[_label(curves, row.method, row)] = ([p[0] for p in row.curve], [p[1] for p in row.curve])
    ui.chart(charts.faithfulness(curves))


def _comparison(store, runs, task, model) -> None:
    st.subheader("All methods")
    chosen = runs[(runs["task"] == task) & (runs["model"] == model) & (runs["method"] != GROUND_TRUTH_METHOD)]
    evals = q.circuit_evals(store, list(chosen["circuit_run_id"]))
    if evals.empty:
        st.info(f"No evaluations of these runs against a ground truth yet: {ui.FILL_HINT['circuits']}.")
        return
    _roc(evals)
    _faithfulness(evals)
    table = evals.pivot_table(index=["method", "ground_truth"], columns="metric", values="value").reset_index()
    counts = q.edge_score_counts(store, list(chosen["circuit_run_id"]))
    no_edges = sorted({m for m, r in zip(chosen["method"], chosen["circuit_run_id"], strict=True) if not counts[r]})
    if "edge_auc" in table.columns and no_edges:
        table["edge_auc"] = table["edge_auc"].astype(object)
        table.loc[table["method"].isin(no_edges), "edge_auc"] = "no edge scores"
        st.caption(f"edge_auc is not defined for {', '.join(no_edges)}: these runs scored heads only, so there "
                   "is no ranking of edges to compare with the ground truth (shown as 'no edge scores', not 0).")
    cost = chosen.groupby("method")[["seconds", "peak_memory_mb"]].mean().reset_index()
    merged = table.merge(cost, on="method", how="left")
    st.dataframe(merged, hide_index=True)
    ui.download_csv(merged, f"circuits-{task}-{model}")


def render() -> None:
    st.title("Circuits")
    store = ui.require_store()
    runs = q.circuit_runs(store)
    if runs.empty:
        st.info(f"No circuit runs in the store yet: {ui.FILL_HINT['circuits']}.")
        return
    task, model, method = _choose(runs)
    _heatmaps(store, runs, task, model, method)
    _comparison(store, runs, task, model)
    examples = q.task_prompts(store, task, limit=5)
    if not examples.empty:
        with st.expander(f"example {task} prompts"):
            st.dataframe(examples, hide_index=True)


ui.run_page(render)
