"""Feature dashboards: streaming top-k and samples against brute force, statistics, logit effects, rows."""

import numpy as np
import pytest
import torch

from saelab.activations import HookSite, collect
from saelab.data.packing import pack_contexts
from saelab.evals.core import keep_mask
from saelab.evals.dashboard_rows import example_rows, feature_rows, quantile_picks, vocab_strings
from saelab.evals.features import (
    DashboardConfig,
    compute_dashboards,
    histogram_bins,
    init_state,
    quantile_groups,
    unembed_directions,
    update_state,
)
from saelab.sae import SAE, SAEConfig

SITE = "1.resid_post"
CFG = DashboardConfig(
    batch_size=2, n_top=5, window=3, sample_size=6, n_quantiles=3, per_quantile=2, n_logits=4
)


@pytest.fixture(scope="module")
def tokens(random_model):
    generator = torch.Generator().manual_seed(1)
    t = torch.randint(1, random_model.cfg.d_vocab - 1, (5, 12), generator=generator)
    t[:, 0] = random_model.tokenizer.bos_token_id
    return t


@pytest.fixture(scope="module")
def sae():
    return SAE(SAEConfig("relu_l1", 64, 40, hook_site=SITE, seed=2))


@pytest.fixture(scope="module")
def dense(random_model, tokens, sae):
    """Every latent on every token, BOS zeroed: [d_sae, n_contexts * pos]."""
    site = HookSite.parse(SITE)
    x = collect(random_model, tokens, [site])[site]
    latents = sae.encode(x.flatten(0, 1)).detach()
    latents = latents * keep_mask(tokens, random_model.tokenizer.bos_token_id, True).flatten()[:, None]
    return latents.t()


@pytest.fixture(scope="module")
def dash(random_model, tokens, sae):
    return compute_dashboards(random_model, sae, tokens, CFG)


def test_streaming_top_k_equals_brute_force(dash, dense):
    values, index = dense.topk(CFG.n_top, dim=1)
    torch.testing.assert_close(dash.top.activation, values)
    firing = values > 0
    assert torch.equal(dash.top.token_index[firing], index[firing])
    assert firing.any()


def test_windows_hold_neighbouring_activations(dash, dense, tokens):
    context_len = tokens.shape[1]
    for latent in range(0, dense.shape[0], 7):
        for rank in range(CFG.n_top):
            index = int(dash.top.token_index[latent, rank])
            position = index % context_len
            for offset in range(-CFG.window, CFG.window + 1):
                expected = (
                    float(dense[latent, index + offset]) if 0 <= position + offset < context_len else 0.0
                )
                assert float(dash.top.window[latent, rank, offset + CFG.window]) == pytest.approx(expected)


def test_statistics_match_dense(dash, dense):
    fires = (dense > 0).sum(1)
    assert dash.n_tokens == dense.shape[1]
    torch.testing.assert_close(dash.density, fires.float() / dense.shape[1])
    torch.testing.assert_close(dash.max_act, dense.max(1).values)
    alive = fires > 0
    torch.testing.assert_close(dash.mean_act[alive], (dense.sum(1) / fires)[alive])
    assert torch.equal(dash.histogram.sum(1), fires)


def test_sample_is_firing_tokens_without_repeats(dash, dense):
    fires = (dense > 0).sum(1)
    kept = dash.sample.score >= 0
    assert torch.equal(kept.sum(1), fires.clamp(max=CFG.sample_size))
    for latent in range(dense.shape[0]):
        index = dash.sample.token_index[latent][kept[latent]]
        assert len(set(index.tolist())) == index.numel()
        torch.testing.assert_close(dash.sample.activation[latent][kept[latent]], dense[latent, index])


def test_batch_size_does_not_change_top_examples(random_model, tokens, sae, dash):
    other = compute_dashboards(
        random_model, sae, tokens, DashboardConfig(**{**CFG.__dict__, "batch_size": 5})
    )
    torch.testing.assert_close(other.top.activation, dash.top.activation)
    torch.testing.assert_close(other.top.window, dash.top.window)


def test_logit_effects_match_direct_product(random_model, sae, dash):
    ln = random_model.ln_final
    directions = sae.W_dec.detach()
    directions = directions - directions.mean(-1, keepdim=True)
    if hasattr(ln, "w"):
        directions = directions * ln.w
    effects = directions @ random_model.W_U
    torch.testing.assert_close(unembed_directions(random_model, sae.W_dec.detach()), effects)
    top = effects.topk(CFG.n_logits, dim=1)
    assert torch.equal(dash.logits.top_ids, top.indices)
    assert torch.equal(dash.logits.bottom_ids, effects.topk(CFG.n_logits, dim=1, largest=False).indices)


def test_attn_z_dashboards_have_head_attribution(random_model, tokens):
    sae = SAE(SAEConfig("topk", 64, 24, k=4, hook_site="0.attn_z"))
    d = compute_dashboards(random_model, sae, tokens, CFG)
    assert d.head_attribution.shape == (24, 4) and d.logits is not None
    torch.testing.assert_close(d.head_attribution.sum(1), torch.ones(24))


def test_rows(random_model, dash, tokens):
    strings = vocab_strings(random_model.tokenizer, random_model.cfg.d_vocab)
    rows = feature_rows(dash, "s", strings)
    assert len(rows) == 40 and set(rows[0]) >= {"density", "histogram", "top_logits", "head_attribution"}
    alive = [r for r in rows if r["density"] > 0]
    assert all(sum(r["histogram"]["counts"]) == round(r["density"] * dash.n_tokens) for r in alive)
    examples = example_rows(dash, "s", strings, CFG)
    tops = [r for r in examples if r["kind"] == "top"]
    assert tops and all(
        r["activations"][r["center"]] == pytest.approx(r["activation"], abs=1e-4) for r in tops
    )
    assert all(len(r["tokens"]) == len(r["activations"]) <= 2 * CFG.window + 1 for r in examples)
    first = next(r for r in tops if r["latent"] == tops[0]["latent"] and r["rank"] == 0)
    index = int(dash.top.token_index[first["latent"], 0])
    context, position = divmod(index, tokens.shape[1])
    assert first["tokens"][first["center"]] == strings[int(tokens[context, position])]
    assert {r["kind"] for r in examples} > {"top", "quantile_0"}


def test_quantile_picks_are_ordered_groups():
    picks = quantile_picks([5.0, 1.0, 3.0, 2.0, 4.0, 6.0], [1, 0, 1, 0, 2, 2], 3, 2)
    assert picks == [[3, 1], [0, 2], [5, 4]]
    assert quantile_picks([1.0], [0], 3, 2) == [[0], [], []]
    assert quantile_picks([float(i) for i in range(10)], [0] * 5 + [1] * 5, 2, 3) == [[4, 2, 0], [9, 7, 5]]


# ---------------------------------------------------------------- exact quantile groups

QCFG = DashboardConfig(n_top=3, window=1, sample_size=8, n_quantiles=4, per_quantile=2, skip_bos=False,
                       quantile_bins_per_decade=8)
# Latent 0's activations, over two batches. Bins (8 per decade, bin b = [10^(b/8 - 4), 10^((b+1)/8 - 4))):
# 0.5 -> 29, 0.6 -> 30, 0.95 -> 31, 1.0 (a bin edge) -> 32, 1.2 -> 32, 2.0 -> 34, 3.0 -> 35. Counts below each
# bin 0, 1, 2, 3, 6, 7 of 8, so bin b joins group floor(4 * below / 8) = 0, 0, 1, 1, 3, 3: group 2 is empty.
HAND = [0.6, 1.0, 3.0, 0.5, 1.2, 0.95, 2.0, 1.0]
HAND_GROUPS = [(0, 0.5, 0.6, 2), (1, 0.95, 1.2, 4), (3, 2.0, 3.0, 2)]  # (group, lowest, highest, count)


def _hand_state(latents: torch.Tensor, batch: int, documents: torch.Tensor | None = None):
    """Fold [n_tokens, d_sae] latents (one context of `batch` tokens per batch) into a dashboard state."""
    state, generator = init_state(latents.shape[1], QCFG), torch.Generator().manual_seed(0)
    for start in range(0, latents.shape[0], batch):
        state = update_state(state, latents[start:start + batch], start, batch, QCFG, generator, documents)
    return state


def test_quantile_groups_are_exact_on_a_hand_built_activation_set():
    latents = torch.zeros(8, 2)
    latents[:, 0] = torch.tensor(HAND)
    latents[[1, 6], 1] = torch.tensor([7.0, 7.0])  # one bin: one group holds everything
    state = _hand_state(latents, batch=4)  # two batches: bin minima and maxima merge across them
    groups = quantile_groups(state.quantile_bins, QCFG.quantile_edges(), QCFG.n_quantiles)
    found = [(q, float(groups.low[0, q]), float(groups.high[0, q]), int(groups.count[0, q]))
             for q in range(4) if groups.count[0, q]]
    assert [(q, round(lo, 6), round(hi, 6), c) for q, lo, hi, c in found] == HAND_GROUPS
    assert groups.count[1].tolist() == [2, 0, 0, 0] and float(groups.high[1, 0]) == 7.0
    assert histogram_bins(torch.tensor([1.0]), QCFG.quantile_edges()).item() == 32  # [1.0, 1.33)


def test_stored_quantiles_hold_every_firing_token_and_examples_lie_in_their_group(random_model, dash, dense):
    strings = vocab_strings(random_model.tokenizer, random_model.cfg.d_vocab)
    rows = {r["latent"]: r for r in feature_rows(dash, "s", strings)}
    examples = example_rows(dash, "s", strings, CFG)
    edges = CFG.quantile_edges()
    for latent in range(dense.shape[0]):
        firing = dense[latent][dense[latent] > 0]
        if firing.numel() == 0:
            assert rows[latent]["quantiles"] is None
            continue
        group_of = dash.quantiles.bin_group[latent][histogram_bins(firing, edges)]
        stored = rows[latent]["quantiles"]
        assert sum(g["count"] for g in stored) == firing.numel()  # every firing token, not a sample
        for g in stored:
            members = firing[group_of == g["index"]]
            assert g["count"] == members.numel()
            assert g["low"] == pytest.approx(float(members.min()), abs=1e-6)
            assert g["high"] == pytest.approx(float(members.max()), abs=1e-6)
        assert all(a["high"] <= b["low"] for a, b in zip(stored, stored[1:], strict=False))  # ordered
        ranges = {f"quantile_{g['index']}": (g["low"], g["high"]) for g in stored}
        for e in (e for e in examples if e["latent"] == latent and e["kind"] != "top"):
            low, high = ranges[e["kind"]]
            assert low - 1e-5 <= e["activation"] <= high + 1e-5


# ---------------------------------------------------------------- one top context per document


def test_a_document_repeating_the_peak_pattern_gives_one_top_context():
    """A corpus of documents (characters as tokens, 8 per context after BOS, one context per batch); the
    latent fires 2.0 on "x" in document 0, which repeats it six times across two contexts (so two batches),
    and 1.0 on "x" in the others. Its top three contexts come from three documents."""
    texts = ["axbxcxdxexfx", "qqxqq", "rrrxr", "zzzzzzzz"]  # the last fills the fourth context
    packed = list(pack_contexts(texts, lambda chunk: [[ord(c) for c in t] for t in chunk], 0, 9))
    tokens = torch.tensor(np.stack([c.tokens for c in packed]), dtype=torch.long)
    documents = torch.tensor(np.stack([c.doc for c in packed]), dtype=torch.long)
    strength = torch.tensor([2.0, 1.0, 1.0, 1.0])[documents.flatten()]
    latents = ((tokens.flatten() == ord("x")) * strength)[:, None]
    with_docs = _hand_state(latents, batch=9, documents=documents.flatten())
    assert with_docs.top.activation[0].tolist() == [2.0, 1.0, 1.0]
    assert sorted(documents.flatten()[with_docs.top.token_index[0]].tolist()) == [0, 1, 2]
    without = _hand_state(latents, batch=9)
    assert without.top.activation[0].tolist() == [2.0, 2.0, 2.0]  # shifted copies of document 0


def test_top_examples_with_documents_equal_the_best_token_of_each_document(random_model, tokens, sae, dense):
    documents = torch.arange(tokens.numel()).view(tokens.shape) // 7  # documents cross contexts and batches
    d = compute_dashboards(random_model, sae, tokens, CFG, documents=documents)
    flat = documents.flatten()
    for latent in range(dense.shape[0]):
        best = torch.zeros(int(flat.max()) + 1).scatter_reduce(0, flat, dense[latent], "amax")
        expected = best.topk(CFG.n_top).values
        torch.testing.assert_close(d.top.activation[latent], expected)
        firing = d.top.activation[latent] > 0
        docs = flat[d.top.token_index[latent][firing]]
        assert len(set(docs.tolist())) == docs.numel()
    strings = vocab_strings(random_model.tokenizer, random_model.cfg.d_vocab)
    rows = example_rows(d, "s", strings, CFG)
    top = next(r for r in rows if r["kind"] == "top" and r["rank"] == 0)
    assert top["document"] == int(flat[d.top.token_index[top["latent"], 0]])


def test_config_validation():
    with pytest.raises(ValueError, match="n_top"):
        DashboardConfig(n_top=0)
    with pytest.raises(ValueError, match="histogram_range"):
        DashboardConfig(histogram_range=(1.0, 0.5))
