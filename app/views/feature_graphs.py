"""Feature graphs: a stored feature circuit or attribution graph drawn with layers left to right, pruned by
edge weight and node effect, each latent linked to its dashboard, and one latent ablated or steered on a prompt
(shareable as ?graph=ID)."""

import math
from urllib.parse import urlencode

import charts
import pandas as pd
import streamlit as st
import ui

from saelab.app_support.feature_graphs import (
    edge_widths,
    feature_page_params,
    hover_text,
    latent_nodes,
    layout,
    node_name,
    prune,
    readable_edge_threshold,
    top_tokens_by_node,
)
from saelab.db import queries as q
from saelab.feature_circuits.storage import load_feature_graph
from saelab.feature_circuits.types import FeatureGraph, FeatureNode

# shown first: what the methods' papers report (a bare string here would be drawn by Streamlit's magic)
KEY_METRICS = ("faithfulness", "completeness", "replacement_score", "completeness_score")
FILL = ("run `saelab circuits --features --task greater_than --dicts ...` or "
        "`saelab graph --prompt \"...\" --transcoders ...` to store one")


def _pick(graphs: pd.DataFrame) -> str:
    """A select box over the stored graphs, in step with the `graph` query parameter."""
    ids = list(graphs["graph_id"])
    wanted = st.query_params.get("graph")
    if wanted is not None and wanted not in ids:
        st.warning(f"There is no feature graph {wanted!r} in this workspace; showing {ids[0]!r} instead.")
    rows = graphs.set_index("graph_id")
    labels = {g: f"{g}  ·  {r['model']}  ·  {r['task'] or r['prompt'][:40]!r}  ·  {r['n_nodes']} nodes, "
                 f"{r['n_edges']} edges" for g, r in rows.iterrows()}
    chosen = st.selectbox("graph", ids, index=ids.index(wanted) if wanted in ids else 0,
                          format_func=labels.__getitem__)
    if chosen != wanted:
        st.query_params["graph"] = chosen
    return chosen


def _summary(graph: FeatureGraph) -> None:
    what = f"task {graph.task}" if graph.task else f"prompt {graph.prompt!r}"
    st.caption(f"{graph.kind.replace('_', ' ')} of {graph.model} · {what} · dictionaries: "
               f"{', '.join(graph.dictionaries)}" + (f" · {graph.params}" if graph.params else ""))
    first = [k for k in KEY_METRICS if k in graph.metrics]
    names = first + [k for k in graph.metrics if k not in first]
    for row in range(0, len(names), 6):
        for column, name in zip(st.columns(6), names[row:row + 6], strict=False):
            column.metric(name, _number(graph.metrics[name]))


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if value == int(value) and abs(value) >= 1 else f"{value:.3f}"


def _thresholds(graph: FeatureGraph) -> tuple[float, float]:
    top_edge = max((abs(e.weight) for e in graph.edges), default=0.0)
    top_node = max((abs(n.effect) for n in graph.nodes if n.kind in ("latent", "error")), default=0.0)
    left, right = st.columns(2)
    edge = left.slider("min |edge weight|", 0.0, float(top_edge) or 1.0,
                       min(readable_edge_threshold(graph), float(top_edge)), format="%.4f", key="graph_min_edge",
                       help="edges weaker than this are hidden, and input tokens left without an edge")
    node = right.slider("min |node effect|", 0.0, float(top_node) or 1.0, 0.0, format="%.4f", key="graph_min_node",
                        help="latents and error terms with a smaller effect are hidden, with their edges")
    return edge, node


def _draw(store, graph: FeatureGraph) -> FeatureGraph:
    shown = prune(graph, *_thresholds(graph))
    tops = q.top_example_tokens(store, [(n.dictionary, n.index) for n in shown.nodes
                                        if n.kind == "latent" and n.index is not None])
    by_node = top_tokens_by_node(shown, tops)
    hovers = {n.id: hover_text(n, by_node.get(n.id, ())) for n in shown.nodes}
    placed = layout(shown)
    ui.chart(charts.feature_graph(shown, placed.xy, placed.columns, hovers,
                                  edge_widths([e.weight for e in shown.edges])))
    st.caption(f"Showing {len(shown.nodes)} of {len(graph.nodes)} nodes and {len(shown.edges)} of "
               f"{len(graph.edges)} edges. Blue edges push the target up, red ones down; width follows |weight|. "
               "Hover a latent for its top activating tokens (from its stored dashboard).")
    return shown


def _latent_table(shown: FeatureGraph) -> None:
    latents = latent_nodes(shown)
    if not latents:
        return
    table = pd.DataFrame({
        "latent": [node_name(n) for n in latents], "dictionary": [n.dictionary for n in latents],
        "site": [n.site for n in latents], "activation": [n.activation for n in latents],
        "effect": [n.effect for n in latents],
        "dashboard": [f"features?{urlencode(feature_page_params(n))}" for n in latents]})
    st.dataframe(table, hide_index=True, height=min(320, 38 + 35 * len(table)),
                 column_config={"dashboard": st.column_config.LinkColumn("dashboard", display_text="open")})


def _default_prompt(store, graph: FeatureGraph) -> str:
    """The graph's prompt; for a feature circuit, one of its clean prompts (or a stored prompt of its task)."""
    if graph.kind == "attribution_graph" or not graph.task:
        return graph.prompt
    if graph.params.get("example_prompt"):
        return str(graph.params["example_prompt"])
    examples = q.task_prompts(store, graph.task, limit=1)
    return str(examples["prompt"].iloc[0]) if not examples.empty else ""


def _intervene(store, graph_id: str, graph: FeatureGraph, shown: FeatureGraph) -> None:
    st.subheader("Ablate or steer a latent")
    latents = {n.id: n for n in latent_nodes(shown)}
    if not latents:
        st.caption("no latent is shown at these thresholds")
        return
    chosen = st.selectbox("latent", list(latents), key=f"graph_latent_{graph_id}",
                          format_func=lambda i: f"{node_name(latents[i])} · {latents[i].dictionary} · "
                                                f"effect {latents[i].effect:.3g}")
    node = latents[chosen]
    ui.feature_link(node.dictionary, node.index, f"dashboard of latent {node.index} of {node.dictionary}")
    with st.form("graph_edit"):
        text = st.text_area("prompt", _default_prompt(store, graph), height=80)
        left, middle, right = st.columns(3)
        mode = left.radio("edit", ["ablate (× 0)", "scale"], horizontal=True)
        scale = middle.number_input("scale (when scaling)", -20.0, 20.0, 2.0, step=0.5)
        only = f"only {node.position}"
        where = right.radio("positions", ["every position", *([only] if node.position is not None else [])],
                            horizontal=True)
        run = st.form_submit_button("Run the edit")
    if run:
        factor = 0.0 if mode.startswith("ablate") else float(scale)
        position = node.position if where == only else None
        st.session_state["graph_edit_result"] = ((graph_id, node.id), _edit(store, graph, node, text, factor, position),
                                          factor, position)
    saved = st.session_state.get("graph_edit_result")
    if saved is not None and saved[0] == (graph_id, node.id):
        _show_edit(*saved[1:])


def _edit(store, graph: FeatureGraph, node: FeatureNode, text: str, scale: float, position: int | None):
    from saelab.app_support.steering import LatentEdit, edit_latent

    sae_row = q.get_sae(store, node.dictionary)
    if sae_row is None:
        raise ValueError(f"dictionary {node.dictionary!r} of this graph is not among the workspace's SAEs; "
                         "train or register it with `saelab train`, then reopen the graph")
    model = ui.load_model_cached(graph.model)
    return edit_latent(model, ui.load_sae_for(sae_row), text, LatentEdit(int(node.index), scale, position))


def _show_edit(result, scale: float, position: int | None) -> None:
    where = "every position" if position is None else f"position {position}"
    fired = result.latent_acts.gt(0).sum().item()
    st.caption(f"Latent activation × {scale:g} at {where}; it fires at {fired} of {len(result.str_tokens)} "
               f"positions of this prompt (max {float(result.latent_acts.max()):.3f}). Next-token logits at the "
               f"last token {result.str_tokens[-1]!r}:")

    def frame(rows, change: bool):
        table = pd.DataFrame({"token": [repr(r.token) for r in rows], "logit": [r.logit for r in rows],
                              "prob": [r.prob for r in rows]})
        if change:
            table["logit change"] = [float(result.logit_diff[r.token_id]) for r in rows]
        return table

    left, right = st.columns(2)
    left.markdown("**before**")
    left.dataframe(frame(result.before, False), hide_index=True)
    right.markdown("**after the edit**")
    right.dataframe(frame(result.after, True), hide_index=True)


def render() -> None:
    st.title("Feature graphs")
    store = ui.require_store()
    graphs = q.list_feature_graphs(store)
    if graphs.empty:
        st.info(f"No feature graphs in the store yet: {FILL}.")
        return
    graph_id = _pick(graphs)
    graph = load_feature_graph(store, graph_id)
    _summary(graph)
    if not graph.nodes:
        st.info(f"This graph has no nodes: its thresholds ({graph.params}) kept none. Build it again with lower "
                "thresholds (e.g. `--node-threshold`).")
        return
    shown = _draw(store, graph)
    _latent_table(shown)
    _intervene(store, graph_id, graph, shown)


ui.run_page(render)
