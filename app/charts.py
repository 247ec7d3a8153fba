"""Plotly figures of the app's pages (drawing only; the numbers come from saelab)."""

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saelab.app_support import HeadGrid
from saelab.app_support.frontier import pareto_frontier
from saelab.app_support.render import HistogramBars, LogitEntry

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _categorical(fig: go.Figure, axis: str) -> go.Figure:
    """Treat `axis` ("x" or "y") as categories: tokens and ids like '05' or '1999' would otherwise be read as
    numbers by plotly, which then drops labels and merges bars."""
    (fig.update_xaxes if axis == "x" else fig.update_yaxes)(type="category")
    return fig


def _compact(fig: go.Figure, height: int) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def training_curves(curves: pd.DataFrame, metrics: list[str], log_y: bool = False) -> go.Figure:
    """One panel per metric, one line per SAE, against training tokens (log y axes if `log_y`)."""
    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=metrics, horizontal_spacing=0.08)
    colours = {sae: PALETTE[i % len(PALETTE)] for i, sae in enumerate(curves["sae_id"].unique())}
    for i, metric in enumerate(metrics):
        part = curves[curves["metric"] == metric]
        for sae_id, line in part.groupby("sae_id", sort=False):
            fig.add_trace(go.Scatter(x=line["tokens"], y=line["value"], mode="lines", name=sae_id,
                                     line={"color": colours[sae_id]}, legendgroup=sae_id, showlegend=i == 0),
                          row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(title_text="tokens")
    if log_y:
        fig.update_yaxes(type="log")
    return _compact(fig, 280 * rows)


def frontier(points: pd.DataFrame) -> go.Figure:
    """FVU against L0, one panel per site (SAEs of different sites are not comparable), coloured by architecture,
    each architecture's Pareto frontier per site, SAE ids written on the points."""
    sites = sorted(points["site"].unique())
    fig = make_subplots(rows=1, cols=len(sites), subplot_titles=sites, horizontal_spacing=0.06)
    colours = {arch: PALETTE[i % len(PALETTE)] for i, arch in enumerate(sorted(points["architecture"].unique()))}
    for col, site in enumerate(sites, start=1):
        for arch, group in points[points["site"] == site].groupby("architecture"):
            best = pareto_frontier(group)
            fig.add_trace(go.Scatter(x=best["l0"], y=best["fvu"], mode="lines", hoverinfo="skip", showlegend=False,
                                     line={"color": colours[arch], "width": 1}, legendgroup=arch), row=1, col=col)
            fig.add_trace(go.Scatter(x=group["l0"], y=group["fvu"], mode="markers+text", name=arch,
                                     legendgroup=arch, showlegend=col == 1, text=group["sae_id"],
                                     textposition="top center", textfont={"size": 9},
                                     marker={"color": colours[arch], "size": 10},
                                     hovertemplate="%{text}<br>L0 %{x:.2f}<br>FVU %{y:.4f}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="L0 (active latents per token)", type="log")
    fig.update_yaxes(title_text="fraction of variance unexplained", col=1)
    return _compact(fig, 460)


def histogram(bars: HistogramBars, title: str) -> go.Figure:
    """A filled step plot over the bin edges (works for log-spaced bins on a log axis too)."""
    fig = go.Figure(go.Scatter(x=bars.edges, y=[*bars.counts, bars.counts[-1] if bars.counts else 0],
                               mode="lines", line={"shape": "hv", "color": "#ff6a00"}, fill="tozeroy"))
    fig.update_layout(title=title)
    fig.update_xaxes(title_text="activation", type="log" if bars.log_scale else "linear")
    return _compact(fig, 240)


def logit_bars(entries: list[LogitEntry], title: str, colour: str) -> go.Figure:
    labels = [repr(e.token) for e in entries]
    fig = go.Figure(go.Bar(x=[e.value for e in entries], y=labels, orientation="h", marker_color=colour))
    fig.update_layout(title=title)
    fig.update_yaxes(autorange="reversed")
    return _compact(_categorical(fig, "y"), 60 + 22 * max(len(entries), 1))


def head_attribution(values: list[float]) -> go.Figure:
    fig = go.Figure(go.Bar(x=[f"h{h}" for h in range(len(values))], y=values, marker_color="#1f77b4"))
    fig.update_layout(title="decoder weight by head (‖W_dec[i, head]‖ share)")
    fig.update_yaxes(range=[0, 1])
    return _compact(_categorical(fig, "x"), 240)


def head_heatmap(grid: HeadGrid, title: str, colorscale: str = "Viridis") -> go.Figure:
    fig = go.Figure(go.Heatmap(z=grid.values, x=[f"h{h}" for h in range(grid.n_heads)],
                               y=[f"L{layer}" for layer in range(grid.n_layers)], colorscale=colorscale,
                               hovertemplate="layer %{y} head %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title)
    fig.update_yaxes(autorange="reversed")
    return _compact(_categorical(_categorical(fig, "x"), "y"), 120 + 40 * grid.n_layers)


def roc_curves(curves: dict[str, tuple[list[float], list[float], float]]) -> go.Figure:
    """curves: method -> (fpr, tpr, auc)."""
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                               showlegend=False, hoverinfo="skip"))
    for i, (method, (fpr, tpr, auc)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{method} (AUC {auc:.2f})",
                                 line={"color": PALETTE[i % len(PALETTE)], "shape": "hv"}))
    fig.update_xaxes(title_text="false positive rate", range=[0, 1])
    fig.update_yaxes(title_text="true positive rate", range=[0, 1.02])
    return _compact(fig, 380)


def faithfulness(curves: dict[str, tuple[list[float], list[float]]]) -> go.Figure:
    """method -> (circuit sizes, normalised task metric of the circuit alone)."""
    fig = go.Figure()
    for i, (method, (sizes, values)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=sizes, y=values, mode="lines+markers", name=method,
                                 line={"color": PALETTE[i % len(PALETTE)]}))
    fig.update_layout(title="faithfulness: the circuit alone, by size")
    fig.update_xaxes(title_text="circuit size (components kept)", type="log")
    fig.update_yaxes(title_text="normalised metric")
    return _compact(fig, 340)


def circuit_graph(grid: HeadGrid, edges: pd.DataFrame, position,
                  truth: set[tuple[int, int]] | None = None) -> go.Figure:
    """Heads at (layer, head) coloured by node score (ground-truth heads outlined in red), MLPs/input/logits
    where `position` puts them, and the given edges as arrows from sender to receiver whose width follows the
    score."""
    fig = go.Figure()
    top = float(edges["score"].abs().max()) if not edges.empty else 1.0
    others: dict[str, tuple[float, float]] = {}
    for edge in edges.itertuples():
        a, b = position(str(edge.node)), position(str(edge.target))
        if a is None or b is None:
            continue
        for name, xy in ((str(edge.node), a), (str(edge.target), b)):
            if "." not in name:
                others[name] = xy
        width = 1 + 4 * abs(float(edge.score)) / (top or 1.0)
        fig.add_annotation(x=b[0], y=b[1], ax=a[0], ay=a[1], xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1, arrowwidth=width, arrowcolor="#999",
                           standoff=11, startstandoff=11)
        fig.add_trace(go.Scatter(x=[(a[0] + b[0]) / 2], y=[(a[1] + b[1]) / 2], mode="markers", hoverinfo="text",
                                 text=f"{edge.node} → {edge.target}: {edge.score:.3f}", showlegend=False,
                                 marker={"size": 6, "color": "#999", "opacity": 0.4}))
    xs, ys, zs, names, outlines = [], [], [], [], []
    for layer, row in enumerate(grid.values):
        for head, value in enumerate(row):
            xs.append(layer)
            ys.append(head)
            zs.append(0.0 if math.isnan(value) else value)
            names.append(f"{layer}.{head}")
            outlines.append("#d62728" if truth and (layer, head) in truth else "#333")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=names, textposition="top center",
                             hovertext=[f"{n}: {z:.3f}" for n, z in zip(names, zs, strict=True)], hoverinfo="text",
                             showlegend=False,
                             marker={"size": 22, "color": zs, "colorscale": "Viridis", "showscale": True,
                                     "line": {"width": [3 if c != "#333" else 1 for c in outlines],
                                              "color": outlines}}))
    if others:
        fig.add_trace(go.Scatter(x=[xy[0] for xy in others.values()], y=[xy[1] for xy in others.values()],
                                 mode="markers+text", text=list(others), textposition="top center",
                                 showlegend=False, marker={"size": 18, "symbol": "square", "color": "#ddd",
                                                           "line": {"width": 1, "color": "#333"}}))
    fig.update_xaxes(title_text="layer", dtick=1)
    fig.update_yaxes(title_text="head", dtick=1, autorange="reversed")
    return _compact(fig, 160 + 45 * grid.n_heads)


def dfa_heatmap(contributions, str_tokens: list[str], position: int) -> go.Figure:
    """Direct feature attribution: source position × head."""
    labels = [f"{i}: {t!r}" for i, t in enumerate(str_tokens[: position + 1])]
    values = contributions[: position + 1].tolist()
    fig = go.Figure(go.Heatmap(z=values, y=labels, x=[f"h{h}" for h in range(len(values[0]))],
                               colorscale="RdBu", zmid=0.0))
    fig.update_layout(title=f"DFA at position {position}: source position × head")
    fig.update_yaxes(autorange="reversed")
    return _compact(_categorical(_categorical(fig, "x"), "y"), 120 + 22 * len(labels))


def metric_bars(table: pd.DataFrame, metric: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=table.index.astype(str), y=table[metric], marker_color="#1f77b4"))
    fig.update_layout(title=metric)
    return _compact(_categorical(fig, "x"), 320)


def density_bars(labels: list[str], counts: list[int]) -> go.Figure:
    """Latents per log-density bin (click a bar to list its latents)."""
    fig = go.Figure(go.Bar(x=labels, y=counts, marker_color="#ff6a00",
                           hovertemplate="density %{x}<br>%{y} latents<extra></extra>"))
    fig.update_layout(title="latents by density (log bins; click a bar)", clickmode="event+select")
    fig.update_xaxes(title_text="fraction of tokens the latent fires on")
    fig.update_yaxes(title_text="latents")
    return _compact(_categorical(fig, "x"), 320)


def l0_quantiles(quantiles: dict[str, float]) -> go.Figure:
    """L0 (active latents per token) at a few quantiles of the evaluation tokens."""
    fig = go.Figure(go.Bar(x=list(quantiles), y=list(quantiles.values()), marker_color="#1f77b4"))
    fig.update_layout(title="L0 per token: quantiles over the evaluation tokens")
    fig.update_yaxes(title_text="active latents")
    return _compact(_categorical(fig, "x"), 280)


_NODE_STYLE = {"token": ("square", "#dddddd", 16), "latent": ("circle", None, 18), "error": ("diamond", "#999999", 14),
               "logit": ("triangle-right", "#2ca02c", 18)}
"""Marker symbol, fixed colour (None: coloured by effect) and size of each node kind."""


def feature_graph(graph, xy: dict, columns: list[str], hovers: dict[str, str], widths: list[float]) -> go.Figure:
    """A feature graph: columns left to right (tokens … logits), edges as lines whose width follows |weight|
    (blue positive, red negative), latents coloured by effect; hover a node for its text in `hovers`."""
    fig = go.Figure()
    for edge, width in zip(graph.edges, widths, strict=True):
        (x0, y0), (x1, y1) = xy[edge.source], xy[edge.target]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False,
                                 line={"width": width, "color": "rgba(31,119,180,0.45)" if edge.weight >= 0
                                       else "rgba(214,39,40,0.45)"}))
    effects = [abs(n.effect) for n in graph.nodes if n.kind == "latent"]
    top = max(effects, default=1.0) or 1.0
    for kind, (symbol, colour, size) in _NODE_STYLE.items():
        nodes = [n for n in graph.nodes if n.kind == kind]
        if not nodes:
            continue
        marker = {"symbol": symbol, "size": size, "line": {"width": 1, "color": "#333"}}
        marker["color"] = colour or [n.effect for n in nodes]
        if colour is None:
            marker.update(colorscale="RdBu", cmin=-top, cmax=top, showscale=True,
                          colorbar={"title": {"text": "effect"}, "thickness": 12})
        text = [n.label if kind in ("token", "logit") else (str(n.index) if kind == "latent" else "ε")
                for n in nodes]
        fig.add_trace(go.Scatter(x=[xy[n.id][0] for n in nodes], y=[xy[n.id][1] for n in nodes], name=kind,
                                 mode="markers+text", text=[repr(t) if kind in ("token", "logit") else t for t in text],
                                 textposition="middle left" if kind == "token" else "top center",
                                 textfont={"size": 10}, hovertext=[hovers.get(n.id, n.id) for n in nodes],
                                 hoverinfo="text", marker=marker))
    fig.update_xaxes(tickvals=list(range(len(columns))), ticktext=columns, range=[-0.8, len(columns) - 0.5],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(legend={"orientation": "h", "y": -0.05})
    rows = max((sum(1 for v in xy.values() if v[0] == c) for c in range(len(columns))), default=1)
    return _compact(fig, max(380, min(1100, 120 + 28 * rows)))
