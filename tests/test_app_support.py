"""saelab.app_support: the pure helpers behind the web app (rendering, shaping, prompts, DFA); how `saelab app`
starts Streamlit (saelab.cli.app)."""

import math
import sys

import pandas as pd
import pytest
import torch

from saelab.activations.collect import collect
from saelab.activations.sites import HookSite
from saelab.app_support import (
    ground_truth_heads,
    head_grid,
    histogram_bars,
    logit_entries,
    pareto_frontier,
    parse_head_node,
    roc_points,
    strongest_heads,
    token_spans_html,
    visible_token,
    workspace_from_argv,
)
from saelab.app_support.circuits import node_position
from saelab.app_support.frontier import frontier_points
from saelab.app_support.prompts import PromptTooLongError, attn_z_dfa, prompt_top_latents
from saelab.app_support.render import distinct_contexts, quantile_groups
from saelab.app_support.resources import MissingArtifactError, resolve_sae_dir
from saelab.cli.app import app_main_script, streamlit_command
from saelab.db.queries import SaeRow
from saelab.errors import SaelabError
from saelab.sae import SAE, SAEConfig
from saelab.workspace import Workspace

# ---------------------------------------------------------------- rendering


def test_token_spans_escape_markup_and_shade_by_activation():
    html = token_spans_html(["<script>alert(1)</script>", " a&b", '"q"'], [2.0, 1.0, 0.0], scale=2.0, center=0)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "a&amp;b" in html and "&quot;q&quot;" in html
    assert "rgba(255, 106, 0, 1.00)" in html and "rgba(255, 106, 0, 0.50)" in html
    assert "rgba(255, 106, 0, 0.00)" in html
    assert html.count("border-bottom") == 1  # only the center token is underlined


def test_token_spans_clamp_and_survive_zero_scale_and_nan():
    html = token_spans_html(["a", "b"], [5.0, float("nan")], scale=0.0)
    assert "rgba(255, 106, 0, 0.00)" in html and "1.00" not in html
    assert "rgba(255, 106, 0, 1.00)" in token_spans_html(["a"], [9.0], scale=1.0)


def test_token_spans_draw_newlines_and_refuse_length_mismatch():
    assert "↵" in token_spans_html(["\n"], [0.0], 1.0)
    assert visible_token("a\x07\tb\x00") == "a␇⇥b␀"
    with pytest.raises(ValueError, match="2 tokens but 1 activations"):
        token_spans_html(["a", "b"], [1.0], 1.0)


def test_logit_entries_accept_objects_and_pairs():
    assert logit_entries([{"token": " the", "value": 1.5}]) == [(" the", 1.5)]
    assert logit_entries([["def", -2]]) == [("def", -2.0)]
    assert logit_entries(None) == []
    with pytest.raises(ValueError, match="logit entry"):
        logit_entries([3.0])


def test_histogram_bars_from_edges_and_counts():
    bars = histogram_bars({"edges": [0.0, 1.0, 3.0], "counts": [4, 2]})
    assert bars == ([0.0, 1.0, 3.0], [4.0, 2.0], False)
    assert histogram_bars({"edges": [0.01, 0.1, 1.0], "counts": [1, 2], "scale": "log"}).log_scale
    assert not histogram_bars({"edges": [0.0, 0.1, 1.0], "counts": [1, 2], "scale": "log"}).log_scale
    assert histogram_bars(None) is None
    with pytest.raises(ValueError, match="edges"):
        histogram_bars({"edges": [0.0, 1.0], "counts": [1, 2]})


def test_strongest_heads_ranks_attribution():
    assert strongest_heads([0.1, 0.6, 0.3]) == "h1 0.60, h2 0.30"
    assert strongest_heads(None) == ""


# ---------------------------------------------------------------- circuits and frontier


@pytest.mark.parametrize("name, expected", [("3.7", (3, 7)), ("3.7.q", (3, 7)), ("a1.h2", (1, 2)),
                                            ("L10H4", (10, 4)), ("mlp3", None), ("logits", None)])
def test_parse_head_node(name, expected):
    assert parse_head_node(name) == expected


def test_node_position_places_non_head_nodes_around_the_heads():
    assert node_position("1.2.k", n_layers=2, n_heads=4) == (1.0, 2.0)
    assert node_position("input", 2, 4) == (-1.0, 1.5)
    assert node_position("logits", 2, 4) == (2.0, 1.5)
    assert node_position("mlp0", 2, 4) == (0.5, 1.5)
    assert node_position("something", 2, 4) is None


def test_head_grid_places_scores_and_leaves_gaps_nan():
    grid = head_grid(pd.DataFrame({"node": ["0.1", "1.0", "mlp0"], "score": [0.5, 2.0, 9.0]}))
    assert (grid.n_layers, grid.n_heads) == (2, 2)
    assert grid.values[0][1] == 0.5 and grid.values[1][0] == 2.0 and math.isnan(grid.values[0][0])


def test_roc_points_both_shapes():
    assert roc_points({"fpr": [0, 1], "tpr": [0, 1]}) == ([0.0, 1.0], [0.0, 1.0])
    assert roc_points([[0, 0], [0.5, 1]]) == ([0.0, 0.5], [0.0, 1.0])
    assert roc_points(None) is None
    with pytest.raises(ValueError, match="equal length"):
        roc_points({"fpr": [0], "tpr": [0, 1]})


def test_ground_truth_from_stored_run_causal_file_or_published_circuit(tmp_path):
    stored = pd.DataFrame({"node": ["0.1", "1.2", "1.3"], "score": [1.0, 0.0, 1.0]})
    assert ground_truth_heads("ioi", "saelab-random", stored).heads == {(0, 1), (1, 3)}
    (tmp_path / "saelab-random").mkdir()
    (tmp_path / "saelab-random" / "ioi.json").write_text('{"nodes": ["input", "0.2", "mlp0", "1.3", "logits"]}')
    causal = ground_truth_heads("ioi", "saelab-random", truth_root=tmp_path)
    assert causal.heads == {(0, 2), (1, 3)} and "causal" in causal.source
    published = ground_truth_heads("ioi", "gpt2", truth_root=tmp_path)
    assert {(9, 9), (10, 0)} <= published.heads and published.source == "published circuit"  # name movers
    assert ground_truth_heads("ioi", "saelab-random", truth_root=tmp_path / "none") is None
    assert ground_truth_heads("no-such-task", "gpt2", truth_root=tmp_path) is None


def test_pareto_frontier_keeps_only_undominated_points():
    points = pd.DataFrame({"l0": [1, 2, 3, 4], "fvu": [0.5, 0.6, 0.3, 0.3]})
    assert pareto_frontier(points)[["l0", "fvu"]].values.tolist() == [[1, 0.5], [3, 0.3]]


def test_frontier_points_pivot_core_metrics_and_skip_incomplete():
    core = pd.DataFrame({"sae_id": ["a", "a", "b"], "architecture": ["topk", "topk", "vq"],
                         "d_sae": [8, 8, 8], "metric": ["fvu", "l0", "fvu"], "value": [0.2, 4.0, 0.5]})
    points = frontier_points(core)
    assert points.to_dict("records") == [{"sae_id": "a", "architecture": "topk", "site": "(no site)", "d_sae": 8,
                                          "l0": 4.0, "fvu": 0.2}]
    points = frontier_points(core.assign(site=["1.resid_post", "1.resid_post", "0.attn_z"]))
    assert points["site"].tolist() == ["1.resid_post"]


# ---------------------------------------------------------------- launching and resources


def test_streamlit_command_binds_localhost_headless_and_passes_workspace(tmp_path):
    cmd = streamlit_command(Workspace(tmp_path), port=8765)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(app_main_script()) and app_main_script().name == "main.py"
    for flag, value in [("--server.address", "127.0.0.1"), ("--server.port", "8765"),
                        ("--server.headless", "true"), ("--browser.gatherUsageStats", "false")]:
        assert cmd[cmd.index(flag) + 1] == value
    assert cmd[-3:] == ["--", "--workspace", str(tmp_path)]


@pytest.mark.parametrize("port", [0, 70000])
def test_streamlit_command_refuses_bad_port(tmp_path, port):
    with pytest.raises(ValueError, match=f"port must be between 1 and 65535, got {port}"):
        streamlit_command(Workspace(tmp_path), port=port)


def test_workspace_from_argv_ignores_foreign_arguments(tmp_path, monkeypatch):
    assert workspace_from_argv(["-q", "--workspace", str(tmp_path), "x"]).root == tmp_path.resolve()
    monkeypatch.setenv("SAELAB_WORKSPACE", str(tmp_path / "env"))
    assert workspace_from_argv(["-q"]).root == (tmp_path / "env").resolve()


def test_resolve_sae_dir_names_missing_directory(tmp_path):
    row = SaeRow("s1", None, "m", "0.attn_z", "topk", 8, 16, 2, {}, "saes/s1")
    with pytest.raises(MissingArtifactError, match="saelab train") as info:
        resolve_sae_dir(Workspace(tmp_path), row)
    assert str(tmp_path / "saes" / "s1") in str(info.value)


# ---------------------------------------------------------------- prompt explorer and DFA


def _sae(site: str, d_in: int, d_sae: int = 32) -> SAE:
    return SAE(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=4, hook_site=site, seed=1))


def test_prompt_top_latents_match_encoding_the_site(random_model):
    site = HookSite.parse("1.resid_post")
    sae = _sae(str(site), random_model.cfg.d_model)
    result = prompt_top_latents(random_model, sae, site, "def f(x): return x", k=3)
    assert len(result.str_tokens) == result.tokens.shape[0] == result.latent_ids.shape[0]
    acts = collect(random_model, result.tokens[None], [site])[site][0]
    expected = sae.encode(acts).topk(3, dim=-1)
    torch.testing.assert_close(result.latent_acts, expected.values)
    assert torch.equal(result.latent_ids, expected.indices)


def test_prompt_over_context_and_empty_prompt_are_clear_errors(random_model):
    site = HookSite.parse("0.resid_post")
    sae = _sae(str(site), random_model.cfg.d_model)
    with pytest.raises(PromptTooLongError, match=f"at most {random_model.cfg.n_ctx}"):
        prompt_top_latents(random_model, sae, site, "x" * (random_model.cfg.n_ctx + 5))
    with pytest.raises(SaelabError, match="empty"):
        prompt_top_latents(random_model, sae, site, "   ")


def test_prompt_refuses_sae_of_another_width(random_model):
    site = HookSite.parse("0.resid_post")
    with pytest.raises(SaelabError, match="d_in=7"):
        prompt_top_latents(random_model, _sae(str(site), 7), site, "abc")


def test_dfa_sums_to_the_encoders_reading_of_z(random_model):
    site = HookSite.parse("0.attn_z")
    cfg = random_model.cfg
    sae = _sae(str(site), cfg.n_heads * cfg.d_head)
    text, latent, position = "When Mary and John went", 5, 9
    dfa = attn_z_dfa(random_model, sae, site, text, latent, position)
    assert dfa.contributions.shape == (len(dfa.str_tokens), cfg.n_heads)
    assert torch.all(dfa.contributions[position + 1:] == 0)  # causal: no later sources
    tokens = random_model.to_tokens(text)
    z = collect(random_model, tokens, [site])[site][0, position]
    torch.testing.assert_close(dfa.contributions.sum(), z @ sae.W_enc[:, latent], atol=1e-5, rtol=1e-4)


def test_dfa_refuses_other_sites_and_bad_latents(random_model):
    cfg = random_model.cfg
    with pytest.raises(SaelabError, match="attn_z"):
        attn_z_dfa(random_model, _sae("0.resid_post", cfg.d_model), HookSite.parse("0.resid_post"), "ab", 0, 0)
    site = HookSite.parse("0.attn_z")
    with pytest.raises(SaelabError, match="latent 99 is out of range"):
        attn_z_dfa(random_model, _sae(str(site), cfg.n_heads * cfg.d_head), site, "ab", 99, 0)
    with pytest.raises(SaelabError, match="position 50 is out of range"):
        attn_z_dfa(random_model, _sae(str(site), cfg.n_heads * cfg.d_head), site, "ab", 0, 50)


def test_run_server_stops_its_child_when_terminated(tmp_path):
    """`kill` on `saelab app` must not leave the Streamlit server behind."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import sys; from saelab.cli.app import run_server; "
                               f"sys.exit(run_server([sys.executable, '-c', {child!r}]))"])
    while not (pid_file.exists() and pid_file.read_text()):  # a handshake; pytest's timeout bounds it
        assert parent.poll() is None, f"run_server exited with {parent.returncode} before starting its child"
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # reaped by the parent before it exited; allow the kernel a moment
            os.kill(child_pid, 0)
            time.sleep(0.1)


def test_training_dead_window_follows_saelab_trains_schedule():
    from saelab.app_support.dead import training_dead_window

    assert training_dead_window({"tokens": 2_000_000, "batch_size": 4096}) == 500_000  # a quarter of the run
    assert training_dead_window('{"tokens": 8000000, "batch_size": 4096}') == 1_000_000  # at most 1M
    assert training_dead_window({"tokens": 8192, "batch_size": 4096}) == 4096  # at least one batch
    assert training_dead_window({"model": "m"}) is None and training_dead_window(None) is None


# ---------------------------------------------------------------- top contexts (issue 19)

def test_distinct_contexts_drop_shifted_copies_of_the_same_text():
    from saelab.db.queries import FeatureExample

    text = [f" t{i}" for i in range(30)]

    def ex(start, stop, act):
        return FeatureExample("top", 0, act, text[start:stop], [act] * (stop - start), 3)

    first, shifted, other = ex(0, 20, 5.0), ex(4, 24, 4.0), ex(0, 20, 3.0)._replace(tokens=[" x"] * 20)
    barely = ex(15, 30, 2.0)  # overlaps `first` on 5 of 15 tokens: another stretch of the document
    assert distinct_contexts([first, shifted, other, barely]) == [first, other, barely]
    assert distinct_contexts([shifted, first]) == [shifted]  # whichever is stronger is kept


def test_distinct_contexts_keep_one_per_stored_document():
    from saelab.db.queries import FeatureExample

    def ex(act, document, tokens):
        return FeatureExample("top", 0, act, tokens, [act] * len(tokens), 0, document)

    a, b, c = ex(3.0, 7, [" a", " b"]), ex(2.0, 7, [" x", " y"]), ex(1.0, 9, [" a", " b"])
    assert distinct_contexts([a, b, c]) == [a, c]  # by document: other text of document 7 goes, same text stays
    assert distinct_contexts([a, b._replace(document=None), c]) == [a, b._replace(document=None)]  # by text


def test_quantile_groups_from_examples_of_an_old_store_assume_equal_shares():
    groups = quantile_groups(None, {"quantile_0": [0.1, 0.3], "quantile_2": [2.0, 1.5], "quantile_1": [0.9]})
    assert [g.index for g in groups] == [2, 1, 0]
    assert (groups[0].low, groups[0].high) == (1.5, 2.0) and (groups[2].low, groups[2].high) == (0.1, 0.3)
    assert all(g.share_of_firing == pytest.approx(1 / 3) and not g.exact for g in groups)


def test_stored_quantile_groups_are_shown_as_stored_strongest_first():
    stored = [{"index": 0, "low": 0.5, "high": 0.6, "count": 2}, {"index": 1, "low": 0.95, "high": 1.2, "count": 4},
              {"index": 3, "low": 2.0, "high": 3.0, "count": 2}]
    groups = quantile_groups(stored, {"quantile_0": [0.55]})  # the stored groups win over the examples
    assert [(g.index, g.low, g.high, g.count, g.share_of_firing) for g in groups] == [
        (3, 2.0, 3.0, 2, 0.25), (1, 0.95, 1.2, 4, 0.5), (0, 0.5, 0.6, 2, 0.25)]
    assert all(g.exact for g in groups)


def test_the_ranked_token_is_marked_strongly():
    html = token_spans_html(["a", "b"], [0.1, 1.0], 1.0, center=1)
    assert html.count("outline") == 1 and "font-weight: bold" in html.split("<span")[2]


def test_density_histogram_bins_by_log_density_and_keeps_dead_apart():
    from saelab.app_support.overview import density_histogram

    hist = density_histogram([0, 1, 2, 3, 4, 5], [0.0, 0.002, 0.003, 0.5, 0.0015, 1.0], dense_threshold=0.1)
    assert hist.edges[0] == -3 and hist.edges[-1] == 0 and len(hist.edges) == 13  # 3 decades x 4 bins
    assert hist.latents[0] == [4] and hist.latents[1] == [1, 2]  # log10: -2.82 | -2.70, -2.52
    assert hist.latents[-1] == [5] and hist.latents[10] == [3]  # density 1 in the last bin; log10 0.5 = -0.30
    assert hist.dead == [0] and hist.dense == [3, 5] and sum(hist.counts) == 5
    assert hist.label(1) == "0.0018 – 0.0032"
    with pytest.raises(ValueError, match="3 latents but 2 densities"):
        density_histogram([0, 1, 2], [0.1, 0.2], 0.1)


def test_auto_label_from_peak_ngrams_needs_a_majority():
    from saelab.app_support.labels import auto_label
    from saelab.db.queries import FeatureExample

    def ex(tokens, center):
        return FeatureExample("top", 0, 1.0, tokens, [0.0] * len(tokens), center)

    years = [ex([" in", " 19", "99"], 1), ex([" in", " 19", "85"], 1), ex([" of", " 19", "70"], 1),
             ex([" in", " 20", "01"], 1)]
    label = auto_label(years)
    assert (label.text, label.support, label.n_contexts) == ("' 19' after ' in'", 2, 4)
    assert auto_label(years[1:]).text == "' 19'"  # no bigram reaches 2 of 3: the peak token alone (2 of 3)
    assert auto_label([ex(["a", "b"], 1), ex(["c", "d"], 1), ex(["e", "f"], 0)]) is None
    assert auto_label([]) is None and auto_label([ex(["a"], None)]) is None
