"""The Streamlit app's pages under streamlit.testing (AppTest): the demo workspace, an empty workspace, an
empty store, missing SAE files, shareable feature URLs, bad latents and over-long prompts."""

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from synthetic_graphs import synthetic_graph

from saelab.db import ResultsStore
from saelab.feature_circuits.storage import save_feature_graph
from saelab.testing import DEMO_SAES, build_demo_workspace

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
PAGES = ["views/runs.py", "views/overview.py", "views/features.py", "views/prompts.py", "views/circuits.py", "views/evaluations.py",
         "views/feature_graphs.py"]
ATTN, RESID = DEMO_SAES[0].sae_id, DEMO_SAES[2].sae_id
GRAPH_ID = "attribution_graph-demo"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo workspace with a synthetic feature graph over two of its SAEs stored (id GRAPH_ID)."""
    workspace = build_demo_workspace(tmp_path_factory.mktemp("demo"), d_sae=16)
    save_feature_graph(ResultsStore(workspace.db_path), synthetic_graph(), graph_id=GRAPH_ID)
    return workspace


def _app(monkeypatch, workspace_root, page: str, **params) -> AppTest:
    monkeypatch.setenv("SAELAB_WORKSPACE", str(workspace_root))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.switch_page(page)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _clean(at: AppTest) -> None:
    assert not at.exception, _texts(at.exception)
    assert not at.error, _texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_the_demo_workspace_without_writing_it(monkeypatch, demo, page):
    before = hashlib.sha256(demo.db_path.read_bytes()).hexdigest()
    at = _app(monkeypatch, demo.root, page)
    _clean(at)
    assert at.title and not at.warning
    assert hashlib.sha256(demo.db_path.read_bytes()).hexdigest() == before  # the app only reads


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_empty_workspace(monkeypatch, tmp_path, page):
    at = _app(monkeypatch, tmp_path / "nothing-here", page)
    _clean(at)
    assert any("No results store" in t and "saelab demo" in t for t in _texts(at.info)), _texts(at.info)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_empty_store(monkeypatch, tmp_path, page):
    ResultsStore(tmp_path / "saelab.duckdb").initialize()
    at = _app(monkeypatch, tmp_path, page)
    _clean(at)
    assert any("saelab" in t for t in _texts(at.info)), _texts(at.info)


def test_runs_page_draws_curves_core_metrics_and_frontier(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/runs.py")
    assert {"Training curves", "Core metrics", "Compare SAEs: sparsity against fidelity"} <= set(_texts(at.subheader))
    assert len(at.get("plotly_chart")) == 2
    core = next(d.value for d in at.dataframe if "fvu" in d.value.columns)
    assert len(core) == len(DEMO_SAES) and core["fvu"].notna().all() and core["architecture"].notna().all()
    at.multiselect[0].set_value([]).run()  # no SAE chosen: a message, not a crash
    _clean(at)
    assert any("No training metrics" in t for t in _texts(at.info))


def test_feature_page_opens_from_query_params(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN, latent="5")
    _clean(at)
    assert _texts(at.header) == ["Latent 5"]
    html = "".join(h.proto.body for h in at.get("html"))
    assert html.count("<span") >= 8 * 24  # top contexts, one span per token
    assert at.selectbox[0].value == ATTN
    # histogram, top and bottom logits, head attribution (an attn_z SAE)
    assert len(at.get("plotly_chart")) == 4


def test_feature_page_without_head_attribution_for_residual_sae(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=RESID, latent="0")
    _clean(at)
    assert len(at.get("plotly_chart")) == 3


@pytest.mark.parametrize("latent, message", [("16", "latent 16 is out of range"), ("-1", "out of range"),
                                             ("abc", "not a whole number")])
def test_bad_latent_in_url_is_a_message(monkeypatch, demo, latent, message):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN, latent=latent)
    assert not at.exception
    assert any(message in t for t in _texts(at.error)), _texts(at.error)
    assert not at.header


def test_unknown_sae_in_url_falls_back_with_a_warning(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae="no-such-sae", latent="1")
    assert not at.exception
    assert any("no-such-sae" in t for t in _texts(at.warning))


def test_latent_without_dashboard_rows_says_which_command_fills_it(monkeypatch, tmp_path):
    store = ResultsStore(tmp_path / "saelab.duckdb").initialize()
    store.insert("saes", [{"sae_id": "bare", "architecture": "topk", "d_in": 8, "d_sae": 4, "path": "saes/bare",
                           "site": "0.resid_post", "model": "saelab-random"}])
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="bare", latent="2")
    _clean(at)
    assert any("saelab eval" in t for t in _texts(at.warning) + _texts(at.info))


def test_feature_search_takes_hostile_text_as_a_value(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN)
    at.text_input[0].input("'; DROP TABLE features; --").run()
    _clean(at)
    assert any("No latent matches" in t for t in _texts(at.info))
    at.text_input[0].input("").run()
    assert any("latents match" in t for t in _texts(at.caption))


def test_feature_search_sorts_by_head_attribution(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN)
    sort = next(s for s in at.selectbox if s.label == "sort by")
    sort.select("head_attribution").run()
    _clean(at)
    assert any(n.label == "head" for n in at.number_input)


def test_prompt_explorer_lists_latents_and_dfa_for_attn_sae(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/prompts.py", sae=ATTN)
    _clean(at)
    assert len(at.get("page_link")) >= 1  # links to the feature pages of the active latents
    assert "Direct feature attribution" in _texts(at.subheader)
    at.text_area[0].input("x" * 300)
    at.button[0].click().run()
    assert not at.exception
    assert any("reads at most" in t and "shorten" in t for t in _texts(at.error)), _texts(at.error)


def test_prompt_explorer_residual_sae_has_no_dfa(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/prompts.py", sae=RESID)
    _clean(at)
    assert "Direct feature attribution" not in _texts(at.subheader)


def test_prompt_explorer_names_missing_sae_files(monkeypatch, tmp_path):
    workspace = build_demo_workspace(tmp_path / "ws", d_sae=8, sae_files=False)
    at = _app(monkeypatch, workspace.root, "views/prompts.py", sae=ATTN)
    assert not at.exception
    assert any("no saved SAE" in t and "saelab train" in t for t in _texts(at.error)), _texts(at.error)


def test_circuits_page_switches_task_and_method(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/circuits.py")
    _clean(at)
    assert len(at.get("plotly_chart")) == 5  # scores, ground truth, graph, ROC, faithfulness
    assert at.selectbox[2].value == "sae_codes"
    at.selectbox[0].select("greater_than").run()
    at.selectbox[2].select("eap").run()
    _clean(at)
    assert at.dataframe[0].value["method"].tolist() == ["acdc", "eap", "eap_ig", "patching", "sae_codes"]
    at.radio[0].set_value("edge_auc").run()
    _clean(at)
    assert len(at.get("plotly_chart")) == 5


def test_evaluations_page_opens_on_key_core_metrics_and_a_metric_that_differs(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/evaluations.py")
    _clean(at)
    assert at.selectbox[0].value == "core" and set(at.selectbox[0].options) >= {"core", "supervised_ioi"}
    table = at.dataframe[0].value
    assert list(table.columns[:5]) == ["fvu", "l0", "ce_loss_score", "kl_div", "dead_fraction"]
    assert at.selectbox[1].value == "fvu" and table["fvu"].nunique() > 1  # the first key metric that differs
    at.selectbox[0].select("supervised_ioi").run()
    _clean(at)
    table = at.dataframe[0].value
    assert {"no-edit", "supervised:ioi:name_movers@END", ATTN} <= set(table.index)
    assert {"sufficiency", "necessity", "saelab_edit_accuracy", "supervised_edit_accuracy", "f1_IO",
            "occlusion"} <= set(table.columns)  # the names the evaluation writes (score_rows)


def test_most_varying_metric_skips_constant_ones():
    import pandas as pd

    from saelab.app_support.metrics import most_varying_metric

    table = pd.DataFrame({"fvu": [0.1, 0.1], "l0": [4.0, 4.0], "a_other": [1.0, 2.0]}, index=["x", "y"])
    assert most_varying_metric(table) == "a_other"
    assert most_varying_metric(table.assign(l0=[4.0, 8.0])) == "l0"
    assert most_varying_metric(table.iloc[:1]) == "fvu" and most_varying_metric(pd.DataFrame()) is None


def test_cli_refuses_bad_port_in_one_line(tmp_path, capsys):
    from saelab.cli import main

    assert main(["app", "--workspace", str(tmp_path), "--port", "70000"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "port must be between 1 and 65535, got 70000" in err


# ---------------------------------------------------------------- issue 19: charts, empty SAEs, URLs

def _plotly_specs(at: AppTest) -> list[dict]:
    import json

    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _store_with(tmp_path, saes: dict[str, list[dict]]) -> ResultsStore:
    """A store with one `saes` row per key and the given `features` rows."""
    store = ResultsStore(tmp_path / "saelab.duckdb").initialize()
    store.insert("saes", [{"sae_id": sae_id, "architecture": "topk", "d_in": 8, "d_sae": 4, "k": 2,
                           "path": f"saes/{sae_id}", "site": "0.resid_post", "model": "saelab-random",
                           "config": {"seed": 3}} for sae_id in saes])
    store.insert("features", [row for rows in saes.values() for row in rows])
    return store


NUMERIC_TOKENS = ["05", "1999", " 17", "2", "05 ", "1e3"]


def test_numeric_looking_tokens_stay_labels_on_every_token_axis(monkeypatch, tmp_path):
    logits = [{"token": t, "value": 3.0 - i * 0.1} for i, t in enumerate(NUMERIC_TOKENS)]
    _store_with(tmp_path, {"nums": [{"sae_id": "nums", "latent": 0, "density": 0.1, "max_act": 2.0,
                                     "mean_act": 1.0, "top_logits": logits,
                                     "bottom_logits": [{**e, "value": -e["value"]} for e in logits]}]})
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="nums", latent="0")
    _clean(at)
    bars = [s for s in _plotly_specs(at) if s["data"][0]["type"] == "bar"]
    assert len(bars) == 2  # top and bottom logit effects
    for spec in bars:
        assert spec["layout"]["yaxis"]["type"] == "category"
        assert spec["data"][0]["y"] == [repr(t) for t in NUMERIC_TOKENS]


def test_every_token_or_id_axis_is_categorical():
    import sys

    import numpy as np

    sys.path.insert(0, str(Path(MAIN).parent))
    import charts

    from saelab.app_support import HeadGrid
    from saelab.app_support.render import LogitEntry

    figures = {"y": [charts.logit_bars([LogitEntry("05", 1.0), LogitEntry("5", 0.5)], "t", "#000"),
                     charts.dfa_heatmap(np.ones((2, 3)), ["05", "1999"], 1)],
               "x": [charts.head_attribution([0.5, 0.5]), charts.dfa_heatmap(np.ones((2, 3)), ["1", "2"], 1),
                     charts.head_heatmap(HeadGrid(np.ones((2, 3)).tolist(), 2, 3), "g"),
                     charts.metric_bars(__import__("pandas").DataFrame({"m": [1.0, 2.0]}, index=["05", "5"]), "m")]}
    for axis, group in figures.items():
        for fig in group:
            assert fig.layout[f"{axis}axis"].type == "category", fig.layout.title.text


def test_pages_open_on_an_sae_with_dashboards_and_name_the_command_for_others(monkeypatch, tmp_path):
    row = {"sae_id": "b-full", "latent": 0, "density": 0.1, "max_act": 2.0, "mean_act": 1.0}
    _store_with(tmp_path, {"a-empty": [], "b-full": [row]})
    at = _app(monkeypatch, tmp_path, "views/features.py")
    _clean(at)
    assert at.selectbox[0].value == "b-full"
    assert any("latents match" in t for t in _texts(at.caption))
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="a-empty")
    _clean(at)
    command = (f"saelab eval --sae {tmp_path.resolve() / 'saes' / 'a-empty'} --dashboards "
               f"--workspace {tmp_path.resolve()}")
    assert any(command in t for t in _texts(at.info)), _texts(at.info)


def test_every_page_has_its_own_stable_url(monkeypatch, demo):
    import streamlit as st

    seen = []
    real = st.navigation

    def recording(pages, **kwargs):
        seen.extend(pages)
        return real(pages, **kwargs)

    monkeypatch.setattr(st, "navigation", recording)
    monkeypatch.setenv("SAELAB_WORKSPACE", str(demo.root))
    at = AppTest.from_file(MAIN, default_timeout=120).run()  # the root URL
    _clean(at)
    assert _texts(at.title) == ["Runs"]
    visible = {p.title: p.url_path for p in seen if p._visibility != "hidden"}
    assert visible == {"Runs": "runs", "SAE overview": "overview", "Features": "features", "Prompt explorer": "prompts",
                       "Circuits": "circuits", "Evaluations": "evaluations", "Feature graphs": "feature_graphs"}


def test_runs_page_names_both_dead_fraction_windows(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/runs.py")
    _clean(at)
    # saelab train's schedule for 2,000,000 tokens: dead after a quarter of the run, 500,000 tokens
    assert any("idle for the last 500,000 training tokens" in t for t in _texts(at.caption)), _texts(at.caption)
    note = next(t for t in _texts(at.markdown) if "dead_fraction" in t)
    assert "last 500,000 training tokens" in note and "never fired on the 65,536 held-out tokens" in note
    saes = next(d.value for d in at.dataframe if "dashboards" in d.value.columns)
    assert {"seed", "dashboards"} <= set(saes.columns) and (saes["dashboards"] == 16).all()


def test_dead_latent_says_it_never_fires_and_quantiles_show_ranges(monkeypatch, tmp_path, demo):
    _store_with(tmp_path, {"d": [{"sae_id": "d", "latent": 0, "density": 0.0, "max_act": 0.0}]})
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="d", latent="0")
    _clean(at)
    assert any("never fires" in t for t in _texts(at.info)), _texts(at.info)
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN, latent="5")
    labels = [e.label for e in at.expander if e.label.startswith("quantile")]
    assert len(labels) == 4 and labels[0].startswith("quantile 4 of 4: activations ")
    assert all("25.0% of its firing tokens" in label for label in labels), labels


HAND_QUANTILES = [{"index": 0, "low": 0.5, "high": 0.6, "count": 2}, {"index": 1, "low": 0.95, "high": 1.2, "count": 4},
                  {"index": 3, "low": 2.0, "high": 3.0, "count": 2}]  # tests/test_evals_features.py's hand set


def _example(kind: str, rank: int, activation: float, document: int | None) -> dict:
    return {"sae_id": "y", "latent": 0, "kind": kind, "rank": rank, "activation": activation,
            "tokens": [" a", f" w{rank}{kind}", " b"], "activations": [0.0, activation, 0.0], "center": 1,
            "document": document}


def test_quantile_groups_show_exact_ranges_and_shares_of_every_firing_token(monkeypatch, tmp_path):
    store = _store_with(tmp_path, {"y": [{"sae_id": "y", "latent": 0, "density": 0.1, "max_act": 3.0,
                                          "quantiles": HAND_QUANTILES}]})
    store.insert("feature_examples", [_example("top", 0, 3.0, 4), _example("quantile_0", 0, 0.55, 1),
                                      _example("quantile_1", 0, 1.0, 2)])
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="y", latent="0")
    _clean(at)
    labels = [e.label for e in at.expander if e.label.startswith("quantile")]
    assert labels == ["quantile 3 of 3: activations 2–3 (2 tokens, 25.0% of its firing tokens, 2.500% of all tokens)",
                      "quantile 2 of 3: activations 0.95–1.2 (4 tokens, 50.0% of its firing tokens, 5.000% of all "
                      "tokens)",
                      "quantile 1 of 3: activations 0.5–0.6 (2 tokens, 25.0% of its firing tokens, 2.500% of all "
                      "tokens)"]
    assert any("Quantile groups of all 8 firing tokens" in t for t in _texts(at.caption)), _texts(at.caption)
    assert any("no sampled firing token fell in this group" in t for t in _texts(at.caption))
    assert any("One context per document" in t for t in _texts(at.caption))


def test_quantiles_of_a_store_without_them_say_what_they_are_read_from(monkeypatch, tmp_path):
    store = _store_with(tmp_path, {"y": [{"sae_id": "y", "latent": 0, "density": 0.1, "max_act": 3.0}]})
    store.insert("feature_examples", [_example("quantile_0", 0, 0.55, None), _example("quantile_1", 0, 1.0, None)])
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="y", latent="0")
    _clean(at)
    labels = [e.label for e in at.expander if e.label.startswith("quantile")]
    assert labels[0] == "quantile 2 of 2: activations 1–1 (50.0% of its firing tokens, 5.000% of all tokens)"
    assert any("Ranges are those of the contexts shown" in t and "saelab eval --sae" in t
               for t in _texts(at.caption)), _texts(at.caption)


def test_feature_dashboard_and_tables_download(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN, latent="5")
    _clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Download JSON", "Download HTML", "Download this page as CSV"} <= set(labels), labels
    for page, name in (("views/runs.py", "Download CSV"), ("views/evaluations.py", "Download CSV"),
                       ("views/circuits.py", "Download CSV")):
        at = _app(monkeypatch, demo.root, page)
        _clean(at)
        assert name in [b.proto.label for b in at.get("download_button")], page


def test_dashboard_export_json_and_html(demo):
    import json

    from saelab.app_support.export import dashboard_html, dashboard_json_text
    from saelab.db import queries as q

    store = ResultsStore(demo.db_path)
    sae = q.get_sae(store, ATTN)
    feature, examples = q.feature_dashboard(store, ATTN, 5)
    data = json.loads(dashboard_json_text(sae, 5, feature, examples))
    assert data["index"] == "5" and data["layer"] == "0.attn_z" and data["frac_nonzero"] == feature.density
    assert data["pos_str"] == [e["token"] for e in feature.top_logits] and len(data["head_attribution"]) == 4
    assert len(data["activations"]) == len(examples)
    top = data["activations"][0]
    assert top["values"][top["maxValueTokenIndex"]] == top["maxValue"]  # the ranked token's own activation
    assert data["quantiles"] == feature.quantiles and [a["document"] for a in data["activations"]] == [
        e.document for e in examples]
    page = dashboard_html(sae, 5, feature, examples)
    assert page.startswith("<!doctype html>") and page.count("outline") == len(examples)  # each ranked token


def test_overview_bins_latents_by_density_and_lists_a_bin(monkeypatch, tmp_path):
    rows = [{"sae_id": "o", "latent": i, "density": d, "max_act": 1.0}
            for i, d in enumerate([0.0, 0.002, 0.003, 0.5, 0.0015, 0.2])]
    _store_with(tmp_path, {"o": rows})
    at = _app(monkeypatch, tmp_path, "views/overview.py", sae="o")
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["never fire"] == "1" and metrics["dense"] == "2"  # 0.5 and 0.2 fire on more than 10%
    (bars,) = [s for s in _plotly_specs(at) if s["data"][0]["type"] == "bar"]
    assert sum(bars["data"][0]["y"]) == 5 and bars["layout"]["xaxis"]["type"] == "category"
    listed = next(d.value for d in at.dataframe if "open" in d.value.columns)
    assert sorted(listed["latent"]) == [1, 2]  # the fullest bin, 10^-2.75 .. 10^-2.5 (0.0015 is one bin lower)
    assert listed["open"].iloc[0] == "/features?sae=o&latent=2"


def test_frontier_split_by_site_with_ids_and_curves_on_log_axes(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/runs.py")
    curves, frontier = _plotly_specs(at)
    titles = [a["text"] for a in frontier["layout"]["annotations"]]
    assert titles == ["0.attn_z", "1.resid_post"]
    labelled = [t for trace in frontier["data"] if trace.get("mode") == "markers+text" for t in trace["text"]]
    assert sorted(labelled) == sorted(d.sae_id for d in DEMO_SAES)
    assert curves["layout"]["yaxis"].get("type") != "log"
    next(t for t in at.toggle if t.label == "log y axes").set_value(True).run()
    _clean(at)
    assert _plotly_specs(at)[0]["layout"]["yaxis"]["type"] == "log"
    next(t for t in at.toggle if t.label == "all SAEs").set_value(True).run()
    _clean(at)
    names = {trace["name"] for trace in _plotly_specs(at)[0]["data"]}
    assert names == {d.sae_id for d in DEMO_SAES}


def test_circuits_table_explains_edge_auc_of_a_method_without_edge_scores(monkeypatch, tmp_path):
    workspace = build_demo_workspace(tmp_path / "ws", d_sae=8, sae_files=False)
    store = ResultsStore(workspace.db_path)
    with store.connect(read_only=False) as con:  # sae_codes scored heads only; its stored edge AUC is a meaningless 0
        con.execute("DELETE FROM circuit_scores WHERE circuit_run_id = 'greater_than-sae_codes' AND level = 'edge'")
        con.execute("UPDATE circuit_evals SET value = 0 WHERE circuit_run_id = 'greater_than-sae_codes' "
                    "AND metric = 'edge_auc'")
    at = _app(monkeypatch, workspace.root, "views/circuits.py")
    _clean(at)
    table = at.dataframe[0].value.set_index("method")
    assert table.loc["sae_codes", "edge_auc"] == "no edge scores"
    assert float(table.loc["eap", "edge_auc"]) > 0
    assert any("not defined for sae_codes" in t for t in _texts(at.caption)), _texts(at.caption)


def test_feature_page_finds_nearest_latents_of_another_sae(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=RESID, latent="3")
    next(t for t in at.toggle if t.key == "compare").set_value(True).run()
    _clean(at)
    links = [link.proto.label for link in at.get("page_link")]
    assert len(links) == 5 and all("decoder cosine" in label for label in links)
    other = at.selectbox(key="compare_sae").value
    assert other.site == "1.resid_post" and other.sae_id != RESID
    cosines = [float(label.rsplit(" ", 1)[1]) for label in links]
    assert cosines == sorted(cosines, reverse=True)
    assert sum("latent 3" in t or f"{other.sae_id} · latent" in t for t in _texts(at.markdown)) >= 2


def test_nearest_latents_rank_by_cosine_not_dot_product():
    import torch

    from saelab.app_support.compare import nearest_latents

    W_dec = torch.tensor([[10.0, 0.5], [0.6, 0.8], [0.0, 0.0], [1.0, 1.0]])
    near = nearest_latents(torch.tensor([0.0, 2.0]), W_dec, 3)
    assert near.latents == [1, 3, 0]  # a dot product would rank 3 (2.0) above 1 (1.6); the zero row 2 scores 0
    assert near.cosines == pytest.approx([0.8, 2 ** -0.5, 0.5 / (100.25 ** 0.5)])
    # the library's ValueError; under pytest the shape annotation (jaxtyping) refuses it first
    with pytest.raises((ValueError, TypeError), match="decoder widths differ|d_in"):
        nearest_latents(torch.ones(3), W_dec, 1)


def test_feature_search_by_context_text(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/features.py", sae=ATTN)
    next(t for t in at.text_input if t.label == "a context contains").input("zzz-not-there").run()
    _clean(at)
    assert any("No latent matches" in t for t in _texts(at.info))
    next(t for t in at.text_input if t.label == "a context contains").input(" Mary").run()
    _clean(at)
    assert any("latents match" in t for t in _texts(at.caption))


def test_feature_page_offers_an_automatic_label_marked_as_such(monkeypatch, tmp_path):
    store = _store_with(tmp_path, {"y": [{"sae_id": "y", "latent": 0, "density": 0.1, "max_act": 2.0}]})
    store.insert("feature_examples", [
        {"sae_id": "y", "latent": 0, "kind": "top", "rank": r, "activation": 2.0 - r, "tokens": [w, " 19", t],
         "activations": [0.0, 2.0 - r, 0.0], "center": 1}
        for r, (w, t) in enumerate([(" in", "99"), (" in", "85"), (" of", "70")])])
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="y", latent="0")
    _clean(at)
    assert any("automatic label: **' 19' after ' in'** at the peak of 2 of 3" in t for t in _texts(at.caption))


def test_circuit_graph_overlays_the_ground_truth_with_directed_edges(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/circuits.py")
    _clean(at)
    graph = next(s for s in _plotly_specs(at) if any(a.get("arrowhead") for a in s["layout"].get("annotations", [])))
    heads = next(t for t in graph["data"] if t.get("mode") == "markers+text" and "0.3" in t["text"])
    outlined = {n for n, w in zip(heads["text"], heads["marker"]["line"]["width"], strict=True) if w == 3}
    assert outlined == {"0.3", "1.1"}  # the demo's greater-than ground truth
    caption = next(t for t in _texts(at.caption) if "Ground truth" in t)
    assert "2 heads, outlined in red" in caption and "on the top 10 edges" in caption


def test_circuit_heads_link_to_the_attn_z_latents_written_through_them(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/circuits.py")
    at.selectbox(key="node_latents_head").select("0.2").run()
    _clean(at)
    links = [link.proto for link in at.get("page_link") if "through head 0.2" in link.proto.label]
    assert len(links) == 5 and all(ATTN in link.label for link in links)
    shares = [float(link.label.split(" — ")[1].split("%")[0]) for link in links]
    assert shares == sorted(shares, reverse=True)
    from saelab.db import queries as q

    store = ResultsStore(demo.db_path)
    best = max(range(16), key=lambda i: q.get_feature(store, ATTN, i).head_attribution[2])  # by hand
    assert links[0].label.startswith(f"{ATTN} latent {best} ")
    at.selectbox(key="node_latents_head").select("1.0").run()  # no attn_z SAE at layer 1: say how to make one
    _clean(at)
    from saelab.testing.demo_workspace import DEMO_MODEL

    command = f"saelab train --model {DEMO_MODEL} --sites 1.attn_z --workspace {demo.root}"
    assert any(f"`{command}`" in t and "head 1.0" in t for t in _texts(at.info)), _texts(at.info)


def test_circuit_head_whose_attn_z_sae_lacks_dashboards_names_the_eval_command(monkeypatch, tmp_path, demo):
    import shutil

    workspace = tmp_path / "ws"
    shutil.copytree(demo.root, workspace)
    ResultsStore(workspace / "saelab.duckdb").replace_rows("features", {"sae_id": ATTN}, [])
    at = _app(monkeypatch, workspace, "views/circuits.py")
    at.selectbox(key="node_latents_head").select("0.2").run()
    _clean(at)
    command = f"saelab eval --sae {workspace / 'saes' / ATTN} --dashboards --workspace {workspace}"
    assert any(f"`{command}`" in t and ATTN in t for t in _texts(at.info)), _texts(at.info)
    assert not [link for link in at.get("page_link") if "through head" in link.proto.label]


def test_researcher_labels_a_latent_and_finds_it_by_search(monkeypatch, tmp_path):
    from saelab.db import queries as q

    store = _store_with(tmp_path, {"y": [{"sae_id": "y", "latent": i, "density": 0.1, "max_act": 2.0}
                                         for i in range(3)]})
    store.insert("feature_examples", [
        {"sae_id": "y", "latent": 2, "kind": "top", "rank": r, "activation": 2.0 - r, "tokens": [" in", " 19", t],
         "activations": [0.0, 2.0 - r, 0.0], "center": 1} for r, t in enumerate(["99", "85"])])
    at = _app(monkeypatch, tmp_path, "views/features.py", sae="y", latent="2")
    _clean(at)
    next(t for t in at.text_area if t.label == "note").input("a note alone")  # a form: sent by its button
    next(b for b in at.button if b.label == "Save label").click().run()
    assert any("a note needs a label" in t for t in _texts(at.error))  # refused in one line, nothing stored
    assert q.feature_label(store, "y", 2) is None
    next(t for t in at.text_input if t.label == "label").input("first two digits of a year")
    next(t for t in at.text_area if t.label == "note").input("fires on ' 19' after ' in'")
    next(b for b in at.button if b.label == "Save label").click().run()
    _clean(at)
    assert q.feature_label(store, "y", 2)[:2] == ("first two digits of a year", "fires on ' 19' after ' in'")
    shown = [t for t in _texts(at.markdown) if t.startswith("label:")]
    assert shown == ["label: **first two digits of a year** — fires on ' 19' after ' in'"]
    assert any(t.startswith("automatic label: **' 19' after ' in'**") for t in _texts(at.caption))  # beside it

    at = _app(monkeypatch, tmp_path, "views/features.py", sae="y")
    next(t for t in at.text_input if t.label == "label or note contains").input("YEAR").run()
    _clean(at)
    table = next(d.value for d in at.dataframe if "label" in d.value.columns)
    assert table["latent"].tolist() == [2] and table["label"].tolist() == ["first two digits of a year"]
    next(t for t in at.text_input if t.label == "label or note contains").input("").run()
    assert next(d.value for d in at.dataframe if "label" in d.value.columns)["label"].tolist() == [
        "", "", "first two digits of a year"]  # no label: an empty cell
    next(t for t in at.text_input if t.label == "label or note contains").input("after ' in'").run()  # the note
    assert next(d.value for d in at.dataframe if "label" in d.value.columns)["latent"].tolist() == [2]


# ---------------------------------------------------------------- feature graphs

def _showing(at: AppTest) -> tuple[int, int]:
    """(nodes shown, edges shown) from the graph's caption."""
    text = next(t for t in _texts(at.caption) if t.startswith("Showing"))
    words = text.split()
    return int(words[1]), int(words[6])


def test_feature_graph_page_draws_the_graph_with_metrics_and_dashboard_links(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/feature_graphs.py")
    _clean(at)
    graph = synthetic_graph()
    assert at.selectbox[0].value == GRAPH_ID and at.query_params["graph"] in (GRAPH_ID, [GRAPH_ID])
    assert _showing(at) == (len(graph.nodes), len(graph.edges))  # few edges: nothing pruned by default
    assert {m.label for m in at.metric} == {"faithfulness", "completeness"}
    spec = _plotly_specs(at)[0]
    latents = next(t for t in spec["data"] if t.get("name") == "latent")
    assert len(latents["x"]) == 8 and any("top activating tokens" in h for h in latents["hovertext"])
    ticks = spec["layout"]["xaxis"]["ticktext"]
    assert ticks == ["tokens", "0.attn_z", "1.resid_post", "logits"]  # layers left to right
    links = at.dataframe[0].value["dashboard"].tolist()
    assert f"features?sae={ATTN}&latent=1" in links and len(links) == 8
    assert any(p.proto.page.endswith("features.py") or "features" in p.proto.page for p in at.get("page_link"))


def test_feature_graph_sliders_prune_edges_and_nodes(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/feature_graphs.py", graph=GRAPH_ID)
    graph = synthetic_graph()
    at.slider(key="graph_min_edge").set_value(1.0).run()
    _clean(at)
    nodes, edges = _showing(at)
    assert edges == sum(abs(e.weight) >= 1.0 for e in graph.edges) and 0 < edges < len(graph.edges)
    at.slider(key="graph_min_edge").set_value(0.0).run()
    at.slider(key="graph_min_node").set_value(0.5).run()
    _clean(at)
    nodes, _ = _showing(at)
    strong = sum(abs(n.effect) >= 0.5 for n in graph.nodes if n.kind in ("latent", "error"))
    assert nodes == strong + 5 + 2  # the five tokens and two logits stay


def test_feature_graph_ablate_a_latent_shows_old_and_new_top_logits(monkeypatch, demo):
    at = _app(monkeypatch, demo.root, "views/feature_graphs.py", graph=GRAPH_ID)
    at.button[0].click().run()  # "Run the edit" with the defaults: ablate, every position
    _clean(at)
    assert any("Latent activation × 0 at every position" in t for t in _texts(at.caption)), _texts(at.caption)
    before, after = at.dataframe[1].value, at.dataframe[2].value
    assert len(before) == len(after) == 10 and list(before.columns) == ["token", "logit", "prob"]
    assert list(after.columns) == ["token", "logit", "prob", "logit change"]
    at.radio[0].set_value("scale")
    at.number_input[0].set_value(5.0)
    at.button[0].click().run()
    _clean(at)
    assert any("× 5 at every position" in t for t in _texts(at.caption))


def test_feature_graph_unknown_id_falls_back_and_missing_dictionary_is_one_line(monkeypatch, tmp_path):
    workspace = build_demo_workspace(tmp_path / "ws", d_sae=16)
    store = ResultsStore(workspace.db_path)
    save_feature_graph(store, synthetic_graph(dicts=(("not-stored", "1.resid_post", 1),)), graph_id="g-missing")
    at = _app(monkeypatch, workspace.root, "views/feature_graphs.py", graph="no-such-graph")
    assert not at.exception
    assert any("no-such-graph" in t for t in _texts(at.warning))
    at.button[0].click().run()
    assert not at.exception
    assert any("'not-stored'" in t and "saelab train" in t for t in _texts(at.error)), _texts(at.error)


def test_feature_graph_without_nodes_says_how_to_get_some(monkeypatch, tmp_path):
    from saelab.feature_circuits.types import FeatureGraph

    store = ResultsStore(tmp_path / "saelab.duckdb").initialize()
    save_feature_graph(store, FeatureGraph("feature_circuit", "saelab-random", ("d",), (), (), task="ioi",
                                           params={"node_threshold": 0.1}), graph_id="empty")
    at = _app(monkeypatch, tmp_path, "views/feature_graphs.py")
    _clean(at)
    assert any("has no nodes" in t and "--node-threshold" in t for t in _texts(at.info)), _texts(at.info)
