"""Features: search an SAE's latents, and one latent's dashboard (shareable as ?sae=ID&latent=N)."""

import charts
import pandas as pd
import streamlit as st
import ui

from saelab.app_support import context_html, histogram_bars, logit_entries, strongest_heads
from saelab.app_support.export import dashboard_html, dashboard_json_text
from saelab.app_support.labels import MAX_LABEL_CHARS, MAX_NOTE_CHARS, auto_label, save_label
from saelab.app_support.render import distinct_contexts, quantile_groups
from saelab.db import queries as q

SORTS = {"max_act": "max activation", "density": "density", "mean_act": "mean activation",
         "top_logit": "top logit effect", "head_attribution": "attribution to one head", "latent": "latent id"}
PAGE_SIZE = 100


def _latent_from_url(sae: q.SaeRow) -> int | None:
    raw = st.query_params.get("latent")
    if raw is None:
        return None
    try:
        latent = int(raw)
    except ValueError:
        st.error(f"latent {raw!r} in the URL is not a whole number; pick a latent below.")
        return None
    if not 0 <= latent < sae.d_sae:
        st.error(f"latent {latent} is out of range: SAE {sae.sae_id!r} has latents 0..{sae.d_sae - 1}.")
        return None
    return latent


def _search_controls(sae: q.SaeRow) -> q.FeatureQuery:
    attn = sae.site is not None and sae.site.endswith("attn_z")
    sorts = [s for s in SORTS if attn or s != "head_attribution"]
    c1, c2, c3, c4, c5 = st.columns([2, 1, 2, 1, 1])
    sort_by = c1.selectbox("sort by", sorts, format_func=SORTS.__getitem__)
    head = c1.number_input("head", 0, 64, 0) if sort_by == "head_attribution" else None
    descending = c2.toggle("largest first", value=sort_by != "latent")
    token = c3.text_input("top logit token contains", max_chars=100, placeholder="e.g. def")
    context = c3.text_input("a context contains", max_chars=200, placeholder="e.g. return x")
    label = c3.text_input("label or note contains", max_chars=200, placeholder="e.g. year")
    min_density = c4.number_input("min density", 0.0, 1.0, 0.0, format="%.5f")
    max_density = c5.number_input("max density", 0.0, 1.0, 1.0, format="%.5f")
    page = max(1, int(st.session_state.get("feature_page", 1)))
    return q.FeatureQuery(sae.sae_id, sort_by, descending, min_density or None, max_density, token.strip(),
                          None if head is None else int(head), PAGE_SIZE, (page - 1) * PAGE_SIZE, context,
                          label.strip())


def _search(store, sae: q.SaeRow) -> None:
    query = _search_controls(sae)
    result = q.search_features(store, query)
    if result.total == 0:
        hint = "" if sae.dashboards else f" (this SAE has no dashboard rows: {ui.dashboards_hint(sae)})"
        st.info(f"No latent matches{hint}.")
        return
    if query.offset >= result.total:  # the filters shrank the result below the current page
        st.session_state["feature_page"] = 1
        st.rerun()
    rows = result.rows
    table = pd.DataFrame({
        "latent": rows["latent"], "label": [v or "" for v in rows["label"]], "density": rows["density"], "max act": rows["max_act"],
        "mean act": rows["mean_act"],
        "top logits": [" ".join(repr(e.token) for e in logit_entries(v)[:3]) for v in rows["top_logits"]],
        "heads": [strongest_heads(v) for v in rows["head_attribution"]],
    })
    st.caption(f"{result.total:,} latents match; click a row to open its dashboard.")
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"feature_table_{sae.sae_id}", height=300,
                         column_config={"density": st.column_config.NumberColumn(format="%.2e")})
    ui.download_csv(table, f"{sae.sae_id}-latents-page{query.offset // PAGE_SIZE + 1}", "Download this page as CSV")
    pages = max(1, -(-result.total // PAGE_SIZE))
    if pages > 1:
        st.number_input("page", 1, pages, key="feature_page")
    selected = event.selection.rows if event is not None else []
    if selected:
        latent = int(table.iloc[selected[0]]["latent"])
        if st.session_state.get("feature_table_opened") != (sae.sae_id, latent):
            st.session_state["feature_table_opened"] = (sae.sae_id, latent)
            st.query_params["latent"] = str(latent)
            st.rerun()


def _contexts(examples: list[q.FeatureExample], scale: float) -> str:
    return "".join(context_html(e.tokens, e.activations, scale, e.center) for e in examples)


def _examples(sae: q.SaeRow, examples: list[q.FeatureExample], scale: float, feature: q.FeatureRow | None) -> None:
    top = [e for e in examples if e.kind == "top"]
    distinct = distinct_contexts(top)
    st.markdown("**Top activations**")
    if distinct:
        by_document = all(e.document is not None for e in top)
        dropped = len(top) - len(distinct)
        st.caption("The token each context was ranked by is boxed; hover a token for its activation. "
                   + ("One context per document: each document's strongest token." if by_document else
                      "Shifted copies of a context shown above are left out (this store records no document "
                      f"ids{f'; {dropped} left out' if dropped else ''})."))
        st.html(_contexts(distinct, scale))
    else:
        st.caption("no top examples stored")
    _quantiles(sae, examples, scale, feature)


def _quantiles(sae: q.SaeRow, examples: list[q.FeatureExample], scale: float, feature: q.FeatureRow | None) -> None:
    by_kind = {kind: [e for e in examples if e.kind == kind] for kind in {e.kind for e in examples} - {"top"}}
    groups = quantile_groups(feature.quantiles if feature else None,
                             {kind: [e.activation for e in group] for kind, group in by_kind.items()})
    if not groups:
        return
    density = feature.density if feature else None
    if groups[0].exact:
        total = sum(g.count for g in groups)
        st.caption(f"Quantile groups of all {total:,} firing tokens: consecutive histogram bins holding about "
                   f"1/{len(groups)} each; a range is the lowest to highest activation in the group and a share "
                   "counts every firing token. Contexts: sampled firing tokens that fall in the group.")
    else:
        st.caption("Ranges are those of the contexts shown, sampled from the firing tokens; shares assume equal "
                   f"groups. Exact ranges and shares: {ui.dashboards_hint(sae)}.")
    for position, group in enumerate(groups):
        share = f"{group.share_of_firing:.1%} of its firing tokens"
        if group.count is not None:
            share = f"{group.count:,} tokens, {share}"
        if density:
            share += f", {group.share_of_firing * density:.3%} of all tokens"
        label = (f"quantile {len(groups) - position} of {len(groups)}: activations {group.low:.3g}–{group.high:.3g} "
                 f"({share})")
        with st.expander(label, expanded=False):
            members = by_kind.get(f"quantile_{group.index}", [])
            if members:
                st.html(_contexts(members, scale))
            else:
                st.caption("no sampled firing token fell in this group")


def _dashboard(store, sae: q.SaeRow, latent: int) -> None:
    feature, examples = q.feature_dashboard(store, sae.sae_id, latent)
    st.header(f"Latent {latent}")
    st.caption(f"SAE {sae.sae_id} · {sae.architecture} · site {sae.site} · link: ?sae={sae.sae_id}&latent={latent}")
    if feature is None and not examples:
        st.warning(f"No dashboard data for latent {latent} of {sae.sae_id!r}: {ui.dashboards_hint(sae)}.")
        return
    _labels(store, sae, latent, examples)
    name = f"{sae.sae_id}-latent{latent}"
    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button("Download JSON", dashboard_json_text(sae, latent, feature, examples), f"{name}.json",
                       "application/json", icon=":material/download:",
                       help="Neuronpedia's field names where they fit (pos_str, frac_nonzero, activations, ...)")
    c2.download_button("Download HTML", dashboard_html(sae, latent, feature, examples), f"{name}.html", "text/html",
                       icon=":material/download:", help="a standalone page with the statistics and every context")
    if feature is not None and not feature.density:
        st.info(f"Latent {latent} never fires: no token of the dashboard sample activates it (density 0), so "
                "it has no contexts or histogram. It is dead on this data.")
    if feature is not None:
        c1, c2, c3 = st.columns(3)
        density = feature.density or 0.0
        c1.metric("density", f"{density:.3%}", help="fraction of tokens the latent fires on")
        c2.metric("max activation", f"{feature.max_act or 0:.3f}")
        c3.metric("mean activation (when active)", f"{feature.mean_act or 0:.3f}")
    left, right = st.columns([2, 3])
    with left:
        _statistics(feature)
    with right:
        scale = (feature.max_act if feature and feature.max_act else None) or max(
            (e.activation for e in examples), default=1.0)
        _examples(sae, examples, scale, feature)


def _labels(store, sae: q.SaeRow, latent: int, examples: list[q.FeatureExample]) -> None:
    """The researcher's label (editable, saved to the store) beside the automatic one."""
    mine = q.feature_label(store, sae.sae_id, latent)
    if mine is not None:
        st.markdown(f"label: **{mine.label}**" + (f" — {mine.note}" if mine.note else ""))
    auto = auto_label(distinct_contexts([e for e in examples if e.kind == "top"]))
    if auto is not None:
        st.caption(f"automatic label: **{auto.text}** at the peak of {auto.support} of {auto.n_contexts} top "
                   "contexts (n-gram counts, not a reading of the contexts; a starting point)")
    with st.expander("Edit label" if mine else "Name this latent", expanded=False), \
            st.form(f"label_{sae.sae_id}_{latent}", clear_on_submit=False):
        text = st.text_input("label", mine.label if mine else "", max_chars=MAX_LABEL_CHARS,
                             placeholder=auto.text if auto else "a few words naming the latent")
        note = st.text_area("note", mine.note if mine else "", max_chars=MAX_NOTE_CHARS)
        if st.form_submit_button("Save label", help="stored in this workspace's results store; clear both "
                                                     "fields and save to remove it"):
            try:
                stored = save_label(store, sae.sae_id, latent, text, note)
            except ValueError as exc:
                st.error(str(exc))
                return
            st.session_state["label_saved"] = "label saved" if stored else "label removed"
            st.rerun()
    if saved := st.session_state.pop("label_saved", None):
        st.toast(saved)


def _statistics(feature: q.FeatureRow | None) -> None:
    if feature is None:
        st.caption("no statistics stored for this latent")
        return
    bars = histogram_bars(feature.histogram)
    if bars is not None:
        ui.chart(charts.histogram(bars, "activation histogram (active tokens)"))
    top, bottom = logit_entries(feature.top_logits), logit_entries(feature.bottom_logits)
    if top:
        ui.chart(charts.logit_bars(top, "top logit effects", "#2ca02c"))
    if bottom:
        ui.chart(charts.logit_bars(bottom, "bottom logit effects", "#d62728"))
    if feature.head_attribution:
        ui.chart(charts.head_attribution([float(a) for a in feature.head_attribution]))


def _compare(store, sae: q.SaeRow, latent: int) -> None:
    """Nearest latents of another SAE at the same site by decoder cosine, and the best match's contexts beside
    this latent's."""
    others = [row for row in q.sae_rows(store) if row.sae_id != sae.sae_id and row.site == sae.site
              and row.d_in == sae.d_in]
    if not others:
        st.caption(f"No other SAE at site {sae.site} to compare with.")
        return
    other = st.selectbox("other SAE", others, format_func=lambda row: f"{row.sae_id} ({row.architecture})",
                         key="compare_sae")
    from saelab.app_support.compare import nearest_latents

    mine, theirs = ui.load_sae_for(sae), ui.load_sae_for(other)
    nearest = nearest_latents(mine.W_dec[latent].detach(), theirs.W_dec.detach(), 5)
    for match, cosine in zip(nearest.latents, nearest.cosines, strict=True):
        ui.feature_link(other.sae_id, match, f"{other.sae_id} latent {match} — decoder cosine {cosine:.3f}")
    best = nearest.latents[0]
    left, right = st.columns(2)
    for column, row, index in ((left, sae, latent), (right, other, best)):
        feature, examples = q.feature_dashboard(store, row.sae_id, index)
        top = distinct_contexts([e for e in examples if e.kind == "top"])[:5]
        column.markdown(f"**{row.sae_id} · latent {index}**")
        if top:
            scale = (feature.max_act if feature and feature.max_act else None) or max(e.activation for e in top)
            column.html(_contexts(top, scale))
        else:
            column.caption("no dashboard rows")


def render() -> None:
    st.title("Features")
    store = ui.require_store()
    sae = ui.pick_sae_with_dashboards(store)
    if sae is None:
        return
    latent = _latent_from_url(sae)
    with st.expander("Search latents", expanded=latent is None):
        _search(store, sae)
    if latent is None:
        st.info("Pick a latent in the table above (or open one from the prompt explorer).")
        return
    _dashboard(store, sae, latent)
    if st.toggle("Compare with another SAE (nearest latents by decoder cosine)", key="compare"):
        _compare(store, sae, latent)


ui.run_page(render)
