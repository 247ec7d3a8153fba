"""Adding a site kind is one `register_site_kind` call: the toy kind below (twice the residual stream after a
block) is defined in this file only, and is then read, cached into batches, spliced and mapped to logits by
the library's ordinary code paths."""

import pytest
import torch

from saelab.activations import SITE_KINDS, HookSite, SiteKind, collect, register_site_kind
from saelab.evals.core import CoreEvalConfig, evaluate_core
from saelab.evals.features import logit_effects
from saelab.evals.splice import run_with_replacement
from saelab.sae import SAE, SAEConfig
from saelab.sae.types import InitialState

# ---- the whole addition of a site kind (this block is all a new kind needs) ----
TOY = SiteKind(
    "toy_doubled", "hook_resid_post", lambda cfg: (cfg.d_model,),
    transform=lambda x, model, layer: 2 * x,
    write_back=lambda acts, model: acts / 2,
    residual_map=lambda W_dec, model, layer: W_dec / 2,
    description="twice the residual stream after the block (a test kind)",
)
# ---------------------------------------------------------------------------------


@pytest.fixture
def toy_kind(monkeypatch):
    """TOY registered for one test; the registry is restored afterwards."""
    monkeypatch.setattr(SITE_KINDS, "_entries", dict(SITE_KINDS._entries))
    return register_site_kind(TOY)


@pytest.fixture(scope="module")
def tokens(random_model):
    t = torch.randint(1, random_model.cfg.d_vocab - 1, (3, 10), generator=torch.Generator().manual_seed(0))
    t[:, 0] = random_model.tokenizer.bos_token_id
    return t


def _sae(W_dec: torch.Tensor, site: str) -> SAE:
    d_sae, d = W_dec.shape
    eye = torch.eye(d)
    params = {"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(d_sae), "W_dec": W_dec,
              "b_dec": torch.zeros(d)}
    return SAE(SAEConfig("relu_l1", d, d_sae, k=1, hook_site=site), InitialState(params, {}))


def test_toy_kind_parses_and_reads_through_its_transform(toy_kind, random_model, tokens):
    site = HookSite.parse("0.toy_doubled")
    assert site.kind is TOY and site.hook_name == "blocks.0.hook_resid_post"
    site.validate(random_model.cfg)
    got = collect(random_model, tokens, [site, "0.resid_post"])
    torch.testing.assert_close(got[site], 2 * got[HookSite(0, "resid_post")])


def test_toy_kind_splices_through_its_write_back(toy_kind, random_model, tokens):
    site, resid = HookSite(0, "toy_doubled"), HookSite(0, "resid_post")
    replacement = torch.randn(
        *tokens.shape, random_model.cfg.d_model, generator=torch.Generator().manual_seed(1)
    )
    via_toy = run_with_replacement(random_model, tokens, site, 2 * replacement)
    torch.testing.assert_close(via_toy, run_with_replacement(random_model, tokens, resid, replacement))
    assert (via_toy - run_with_replacement(random_model, tokens, resid, 2 * replacement)).abs().max() > 1e-3
    d = random_model.cfg.d_model
    identity = _sae(torch.cat([torch.eye(d), -torch.eye(d)], 0), "0.toy_doubled")
    m = evaluate_core(random_model, identity, tokens, CoreEvalConfig(batch_size=3))
    assert m.splice_skipped == "" and abs(m.kl_div) < 1e-6 and m.fvu < 1e-10


def test_toy_kind_maps_decoder_directions_through_its_residual_map(toy_kind, random_model):
    d = random_model.cfg.d_model
    W_dec = torch.randn(2 * d, d, generator=torch.Generator().manual_seed(2))
    toy, _ = logit_effects(random_model, _sae(W_dec, "0.toy_doubled"), HookSite(0, "toy_doubled"), n=3)
    plain, _ = logit_effects(random_model, _sae(W_dec / 2, "0.resid_post"), HookSite(0, "resid_post"), n=3)
    torch.testing.assert_close(toy.top_values, plain.top_values)
    assert torch.equal(toy.top_ids, plain.top_ids)


def test_a_kind_with_a_transform_must_say_how_to_write_back():
    with pytest.raises(ValueError, match="toy_bad.*write an activation back"):
        SiteKind(
            "toy_bad", "hook_resid_post", lambda cfg: (cfg.d_model,), transform=lambda x, m, layer: 2 * x
        )
    with pytest.raises(ValueError, match="hook point 'blocks.0.hook_resid_post'"):
        SiteKind("toy_bad", "blocks.0.hook_resid_post", lambda cfg: (cfg.d_model,))
