"""Evaluations: the supervised-dictionary comparison and every other eval table in the store."""

import charts
import streamlit as st
import ui

from saelab.db import queries as q

DESCRIPTIONS = {
    "core": "Reconstruction and sparsity of each SAE on held-out tokens.",
    "supervised_ioi": "Supervised dictionaries against SAEs on IOI (Makelov, Lange & Nanda 2024): "
                      "approximation (sufficiency, necessity), control (edit accuracy, edit magnitude) and "
                      "interpretability (F1 of features against attributes), occlusion and over-splitting.",
}


def render() -> None:
    st.title("Evaluations")
    store = ui.require_store()
    kinds = q.eval_kinds(store)
    if not kinds:
        st.info(f"No evaluations in the store yet: {ui.FILL_HINT['evals']}.")
        return
    supervised = [k for k in kinds if k.startswith("supervised")]
    kind = st.selectbox("evaluation", kinds, index=kinds.index(supervised[0]) if supervised else 0)
    st.caption(DESCRIPTIONS.get(kind, "Latest value of each metric per dictionary."))
    long = q.eval_metrics(store, kind)
    table = long.pivot_table(index="sae_id", columns="metric", values="value")
    st.dataframe(table.style.format("{:.3f}"))
    ui.download_csv(table, f"eval-{kind}", index=True)
    metric = st.selectbox("metric to compare", list(table.columns))
    ui.chart(charts.metric_bars(table, metric))
    with st.expander("rows as stored"):
        st.dataframe(long, hide_index=True)


ui.run_page(render)
