"""Hook sites, positions and one-pass collection against TransformerLens' own cache."""

import pickle

import pytest
import torch

from saelab.activations import (
    SITE_KINDS,
    HookSite,
    Positions,
    SiteKind,
    collect,
    parse_sites,
    register_site_kind,
)
from saelab.activations.sites import stop_layer


def test_text_form_round_trips_and_hook_names_are_derived():
    site = HookSite.parse("1.attn_z")
    assert (site.layer, site.kind.name) == (1, "attn_z")
    assert str(site) == "1.attn_z"
    assert site.hook_name == "blocks.1.attn.hook_z"
    assert HookSite.parse(" 0.mlp_post ").hook_name == "blocks.0.mlp.hook_post"
    assert HookSite(2, "resid_post") == HookSite.parse("2.resid_post")
    assert {HookSite(2, "resid_post"): 1}[HookSite.parse("2.resid_post")] == 1
    assert pickle.loads(pickle.dumps(site)) == site


@pytest.mark.parametrize(
    "text", ["resid_post", "1.resid", "-1.resid_post", "1.2.resid_post", "a.resid_post", ""]
)
def test_bad_site_text_names_the_text_and_lists_kinds(text):
    with pytest.raises(ValueError) as info:
        HookSite.parse(text)
    assert repr(text) in str(info.value)
    assert "resid_post" in str(info.value) and "head_result" in str(info.value)


def test_validate_rejects_missing_layers_and_kinds(random_model):
    HookSite.parse("1.head_result").validate(random_model.cfg)
    with pytest.raises(ValueError, match=r"'2.resid_post'.*layers 0..1"):
        HookSite.parse("2.resid_post").validate(random_model.cfg)
    cfg = random_model.cfg.__class__(n_layers=1, d_model=8, n_ctx=4, d_head=4, attn_only=True, d_vocab=5,
                                     act_fn="relu")
    with pytest.raises(ValueError, match=r"'0.mlp_out'.*attention-only.*valid kinds here: .*attn_z"):
        HookSite.parse("0.mlp_out").validate(cfg)


def test_parse_sites_refuses_duplicates_and_empty():
    assert [str(s) for s in parse_sites("1.resid_post,0.attn_z")] == ["1.resid_post", "0.attn_z"]
    with pytest.raises(ValueError, match="twice"):
        parse_sites("1.resid_post,1.resid_post")
    with pytest.raises(ValueError, match="no hook sites"):
        parse_sites(" , ")


def test_registry_refuses_duplicate_kind():
    with pytest.raises(ValueError, match="already registered"):
        register_site_kind(SiteKind("resid_post", "hook_resid_post", lambda cfg: (cfg.d_model,)))


def test_widths(random_model):
    cfg = random_model.cfg
    widths = {name: HookSite(0, name).width(cfg) for name in SITE_KINDS}
    assert widths == {"resid_pre": 64, "resid_mid": 64, "resid_post": 64, "mlp_out": 64, "mlp_post": 256,
                      "attn_z": 64, "attn_out": 64, "head_result": 4 * 64}
    assert HookSite(0, "head_result").feature_shape(cfg) == (4, 64)


def _reference(model, tokens, site):
    """The same activation from TransformerLens' run_with_cache (head results with use_attn_result on)."""
    if site.kind.name == "head_result":
        model.set_use_attn_result(True)
        try:
            _, cache = model.run_with_cache(tokens)
        finally:
            model.set_use_attn_result(False)
        return cache[f"blocks.{site.layer}.attn.hook_result"]
    _, cache = model.run_with_cache(tokens)
    value = cache[site.hook_name]
    return value.flatten(-2) if site.kind.name == "attn_z" else value


def test_collect_equals_run_with_cache_for_every_kind(random_model):
    tokens = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(0))
    sites = [HookSite(layer, kind) for layer in range(2) for kind in SITE_KINDS]
    got = collect(random_model, tokens, sites)
    assert set(got) == set(sites)
    for site in sites:
        expected = _reference(random_model, tokens, site)
        assert got[site].shape == (3, 12, *site.feature_shape(random_model.cfg))
        if site.kind.name == "head_result":  # TransformerLens sums z*W_O in another order: rounding only
            torch.testing.assert_close(got[site], expected, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(got[site], expected), str(site)


def test_head_results_sum_to_attention_output(random_model):
    tokens = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    got = collect(random_model, tokens, "1.head_result,1.attn_out")
    summed = got[HookSite(1, "head_result")].sum(dim=2) + random_model.blocks[1].attn.b_O
    torch.testing.assert_close(summed, got[HookSite(1, "attn_out")], rtol=1e-5, atol=1e-5)


def test_forward_stops_after_deepest_site(random_model):
    calls = []
    random_model.add_hook("blocks.1.hook_resid_pre", lambda t, hook: calls.append(hook.name))
    try:
        collect(random_model, torch.zeros(1, 4, dtype=torch.long), ["0.mlp_out"])
        assert calls == []
        collect(random_model, torch.zeros(1, 4, dtype=torch.long), ["0.mlp_out", "1.resid_pre"])
        assert calls == ["blocks.1.hook_resid_pre"]
    finally:
        random_model.reset_hooks()
    assert stop_layer(parse_sites("0.attn_z,1.mlp_out")) == 2


def test_positions_modes(random_model):
    tokens = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(2))
    site = HookSite(1, "resid_post")
    full = collect(random_model, tokens, [site])[site]
    last_index = torch.tensor([6, 3, 4])
    assert torch.equal(collect(random_model, tokens, [site], Positions.last())[site], full[:, -1])
    got = collect(random_model, tokens, [site], Positions.last(last_index))[site]
    assert torch.equal(got, torch.stack([full[0, 6], full[1, 3], full[2, 4]]))
    torch.testing.assert_close(collect(random_model, tokens, [site], Positions.mean())[site], full.mean(1))
    mask = torch.arange(7)[None] <= last_index[:, None]
    expected = torch.stack([full[b, : int(last_index[b]) + 1].mean(0) for b in range(3)])
    torch.testing.assert_close(collect(random_model, tokens, [site], Positions.mean(mask))[site], expected)
    end, s2 = torch.tensor([6, 5, 4]), torch.tensor([1, 2, 0])
    named = Positions.at(END=end, S2=s2)
    assert named.names == ("END", "S2")
    got = collect(random_model, tokens, [site], named)[site]
    assert got.shape == (3, 2, 64)
    assert torch.equal(got[1, 0], full[1, 5]) and torch.equal(got[2, 1], full[2, 0])
    heads = collect(random_model, tokens, ["1.head_result"], Positions.at(END=end))[
        HookSite(1, "head_result")
    ]
    assert heads.shape == (3, 1, 4, 64)


def test_positions_reject_bad_values():
    with pytest.raises(ValueError, match="mode 'first'"):
        Positions("first")
    with pytest.raises(ValueError, match="at least one name"):
        Positions.at()
    # the library's ValueError; under pytest the field's shape annotation (jaxtyping) refuses it first
    with pytest.raises((ValueError, TypeError), match="'END'"):
        Positions.at(END=torch.tensor([[1, 2]]))
