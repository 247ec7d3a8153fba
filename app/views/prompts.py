"""Prompt explorer: the strongest latents of an SAE at each token of a typed prompt; DFA for attn_z SAEs."""

import charts
import pandas as pd
import streamlit as st
import ui

from saelab.activations.sites import HookSite
from saelab.app_support import token_spans_html
from saelab.app_support.prompts import attn_z_dfa, prompt_top_latents
from saelab.db import queries as q

DEFAULT_PROMPT = "When Mary and John went to the store, John gave a drink to Mary.\ndef add(x, y):\n    return x + y"


def _strip(result) -> None:
    strongest = result.latent_acts[:, 0].clamp_min(0)
    # BOS often carries an outsized activation; shade the text by the strongest latent after it
    scale = float(strongest[1:].max()) if len(strongest) > 1 else float(strongest.max())
    st.markdown("**Tokens shaded by their strongest latent**")
    st.html(token_spans_html(result.str_tokens, strongest.tolist(), scale or 1.0))


def _table(result) -> None:
    table = pd.DataFrame({
        "position": range(len(result.str_tokens)),
        "token": [repr(t) for t in result.str_tokens],
        "top latents (activation)": [
            ", ".join(f"{int(i)} ({a:.2f})" for i, a in zip(ids, acts, strict=True) if a > 0)
            for ids, acts in zip(result.latent_ids.tolist(), result.latent_acts.tolist(), strict=True)],
    })
    st.dataframe(table, hide_index=True, height=min(420, 38 + 35 * len(table)))


def _position(result, sae: q.SaeRow) -> int:
    labels = [f"{i}: {t!r}" for i, t in enumerate(result.str_tokens)]
    position = st.selectbox("token", range(len(labels)), index=len(labels) - 1, format_func=labels.__getitem__)
    st.markdown("**Its latents** — open a dashboard:")
    active = [(int(i), float(a)) for i, a in zip(result.latent_ids[position].tolist(),
                                                   result.latent_acts[position].tolist(), strict=True) if a > 0]
    if not active:
        st.caption("no latent fires here")
    for latent, act in active:
        ui.feature_link(sae.sae_id, latent, f"latent {latent} — activation {act:.3f}")
    return position


def _dfa(model, sae_module, site: HookSite, text: str, result, position: int) -> None:
    st.subheader("Direct feature attribution")
    active = [int(i) for i, a in zip(result.latent_ids[position].tolist(), result.latent_acts[position].tolist(),
                                     strict=True) if a > 0]
    if not active:
        st.caption("no active latent at this token to attribute")
        return
    latent = st.selectbox("latent to attribute", active)
    dfa = attn_z_dfa(model, sae_module, site, text, latent, position)
    st.caption("How the latent's pre-activation at this token splits over source tokens and heads "
               "(attention weight × value · encoder direction).")
    ui.chart(charts.dfa_heatmap(dfa.contributions, dfa.str_tokens, position))


def render() -> None:
    st.title("Prompt explorer")
    store = ui.require_store()
    sae = ui.pick_sae(store)
    if sae is None:
        return
    if not sae.model or not sae.site:
        st.warning(f"SAE {sae.sae_id!r} has no model or site recorded, so it cannot be run on a prompt.")
        return
    sae_module = ui.load_sae_for(sae)
    with st.form("prompt"):
        text = st.text_area("prompt", value=st.session_state.get("prompt_text", DEFAULT_PROMPT), height=120)
        k = st.slider("latents per token", 1, 10, 5)
        submitted = st.form_submit_button("Run")
    if submitted:
        st.session_state["prompt_text"] = text
    text = st.session_state.get("prompt_text", DEFAULT_PROMPT)
    model = ui.load_model_cached(sae.model)
    site = HookSite.parse(sae.site)
    result = prompt_top_latents(model, sae_module, site, text, k)
    _strip(result)
    left, right = st.columns([3, 2])
    with left:
        _table(result)
    with right:
        position = _position(result, sae)
    if site.kind.name == "attn_z":
        _dfa(model, sae_module, site, text, result, position)


ui.run_page(render)
