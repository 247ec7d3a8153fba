"""Evaluations: every kind of evaluation the store holds (core metrics first, key metrics described), one metric
compared across SAEs."""

import charts
import streamlit as st
import ui

from saelab.app_support.metrics import (
    EVAL_KIND_DESCRIPTIONS,
    KEY_METRICS,
    most_varying_metric,
    ordered_metrics,
)
from saelab.db import queries as q


def render() -> None:
    st.title("Evaluations")
    store = ui.require_store()
    kinds = q.eval_kinds(store)
    if not kinds:
        st.info(f"No evaluations in the store yet: {ui.FILL_HINT['evals']}.")
        return
    kind = st.selectbox("evaluation", kinds, index=kinds.index("core") if "core" in kinds else 0)
    st.caption(EVAL_KIND_DESCRIPTIONS.get(kind, "Latest value of each metric per dictionary."))
    long = q.eval_metrics(store, kind)
    table = long.pivot_table(index="sae_id", columns="metric", values="value")
    table = table[ordered_metrics(list(table.columns))]
    st.dataframe(table.style.format("{:.4g}"), column_config={
        metric: st.column_config.NumberColumn(metric, help=text) for metric, text in KEY_METRICS.items()})
    ui.download_csv(table, f"eval-{kind}", index=True)
    columns = list(table.columns)
    default = most_varying_metric(table)
    metric = st.selectbox("metric to compare", columns, index=columns.index(default) if default else 0,
                          help="opens on the first metric whose value differs between the SAEs")
    if metric in KEY_METRICS:
        st.caption(f"{metric}: {KEY_METRICS[metric]}")
    ui.chart(charts.metric_bars(table, metric))
    with st.expander("rows as stored"):
        st.dataframe(long, hide_index=True)


ui.run_page(render)
