"""Shared pieces of the app's pages: the workspace context, the one-line error guard, cached model and SAE
loading, SAE pickers and links to feature pages. Analysis lives in `saelab`; this module only wires it to
Streamlit.
"""

import sys
from collections.abc import Callable

import duckdb
import streamlit as st

from saelab.app_support import (
    AppContext,
    dashboards_command,
    open_context,
    resolve_sae_dir,
    workspace_from_argv,
)
from saelab.db import ResultsStore
from saelab.db import queries as q
from saelab.errors import SaelabError

FEATURES_PAGE = "views/features.py"
FILL_HINT = {
    "store": "run `saelab demo` (or `saelab cache`, `saelab train`, `saelab eval`) to fill it",
    "saes": "train one with `saelab train`",
    "circuits": "run `saelab circuits` on a task",
    "evals": "run `saelab eval`",
}


def context() -> AppContext:
    """The workspace named on the app's command line (`-- --workspace DIR`) and its store."""
    return open_context(workspace_from_argv(sys.argv[1:]))


def require_store() -> ResultsStore:
    """The store, or a message saying how to create it (and the page stops)."""
    ctx = context()
    if ctx.store is None:
        st.info(f"No results store in the workspace {ctx.workspace.root} yet: {FILL_HINT['store']}.")
        st.stop()
    return ctx.store


def run_page(render: Callable[[], None]) -> None:
    """Run a page body; user-facing errors (a missing file, a locked or foreign store, a bad value) become
    one line on the page instead of a traceback."""
    try:
        render()
    except SaelabError as exc:
        st.error(str(exc))
    except ValueError as exc:
        st.error(f"{exc}")
    except duckdb.Error as exc:
        st.error(f"the results store could not be read ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                 "it may have been written by another saelab version")
    except OSError as exc:
        st.error(f"a file could not be read: {exc}")


@st.cache_resource(show_spinner="loading the model…", max_entries=2)
def load_model_cached(name: str):
    from saelab.models import load_model

    return load_model(name)


@st.cache_resource(show_spinner="loading the SAE…", max_entries=4)
def _load_sae_cached(directory: str, mtime_ns: int):
    from saelab.sae import load_sae

    return load_sae(directory)


def load_sae_for(sae: q.SaeRow):
    """The SAE behind a row (cached; reloaded when its weights file changes)."""
    directory = resolve_sae_dir(context().workspace, sae)
    weights = directory / "sae.safetensors"
    if not weights.is_file():
        raise SaelabError(f"SAE {sae.sae_id!r}: no weights at {weights}; train it again with `saelab train`")
    return _load_sae_cached(str(directory), weights.stat().st_mtime_ns)


def pick_sae(store: ResultsStore, label: str = "SAE") -> q.SaeRow | None:
    """A select box over the store's SAEs, in step with the `sae` query parameter (shareable URLs). Without
    one it opens on the first SAE that has dashboards, so a page never starts on an empty SAE."""
    saes = {row.sae_id: row for row in q.sae_rows(store)}
    if not saes:
        st.info(f"The results store has no SAEs yet: {FILL_HINT['saes']}.")
        return None
    ids = list(saes)
    wanted = st.query_params.get("sae")
    if wanted is not None and wanted not in ids:
        st.warning(f"There is no SAE {wanted!r} in this workspace; showing {ids[0]!r} instead.")
    with_dashboards = [sae_id for sae_id in ids if saes[sae_id].dashboards]
    index = ids.index(wanted) if wanted in ids else ids.index((with_dashboards or ids)[0])
    labels = {row.sae_id: f"{row.sae_id}  ·  {row.architecture}, {row.site}, {row.d_sae} latents"
                          + ("" if row.dashboards else "  ·  no dashboards") for row in saes.values()}
    chosen = st.selectbox(label, ids, index=index, format_func=labels.__getitem__)
    if chosen != wanted:
        st.query_params["sae"] = chosen
        if wanted is not None:
            st.query_params.pop("latent", None)
    return saes[chosen]


def pick_sae_with_dashboards(store: ResultsStore, needs: str = "") -> q.SaeRow | None:
    """`pick_sae`, then None (after saying which command fills them) when the chosen SAE has no dashboards;
    `needs` says what the page would have shown from them."""
    sae = pick_sae(store)
    if sae is not None and not sae.dashboards:
        st.info(f"SAE {sae.sae_id!r} has no dashboards yet{needs}: {dashboards_hint(sae)}.")
        return None
    return sae


def dashboards_hint(sae: q.SaeRow) -> str:
    """How to fill an SAE's dashboards: the exact command for this workspace."""
    return f"compute them with `{dashboards_command(context().workspace, sae)}`"


def chart(figure, container=None) -> None:
    """A plotly figure without the mode bar (which covers the title); zoom and hover still work."""
    (container or st).plotly_chart(figure, config={"displayModeBar": False, "displaylogo": False})


def feature_link(sae_id: str, latent: int, label: str | None = None) -> None:
    """A link to a latent's feature page (the URL carries `sae` and `latent`)."""
    st.page_link(FEATURES_PAGE, label=label or f"latent {latent}", icon=":material/open_in_new:",
                 query_params={"sae": sae_id, "latent": str(latent)})


def download_csv(frame, name: str, label: str = "Download CSV", index: bool = False) -> None:
    """A button that saves `frame` as `name`.csv."""
    st.download_button(label, frame.to_csv(index=index).encode(), file_name=f"{name}.csv", mime="text/csv",
                       key=f"csv_{name}", icon=":material/download:")
