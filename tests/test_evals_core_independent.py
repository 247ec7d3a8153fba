"""`evaluate_core` against computations that share no code with it.

Losses come from TransformerLens itself (`model(tokens, return_type="loss", loss_per_token=True)` over all
contexts at once), KL from `torch.nn.functional.kl_div`, ablations and the splice from plain hooks written
here, and the mean-ablation mean from a mask built here that leaves out every BOS token. The contexts are
split into unequal batches (2, 2, 1), so a mean of per-batch means differs from the per-token mean.

Each test also asserts that the wrong variant it guards against (KL the other way round, the mean of batch
means, a mean over BOS too, CE recovered from the other ablation) gives a number measurably different from
the right one, so that a pass means the code computes the right one.
"""

import pytest
import torch
import torch.nn.functional as F

from saelab.activations import HookSite
from saelab.evals.core import CoreEvalConfig, evaluate_core, l0_quantiles, site_mean
from saelab.sae import SAE, InitialState, SAEConfig

# The TransformerLens hook of each site, written out here rather than taken from HookSite.
HOOKS = {"1.resid_pre": "blocks.1.hook_resid_pre", "0.attn_z": "blocks.0.attn.hook_z"}
N_CONTEXTS, N_POS, BATCH_SIZE = 5, 12, 2  # batches of 2, 2 and 1 contexts
TOL = dict(rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def tokens(random_model):
    bos = random_model.tokenizer.bos_token_id
    t = torch.randint(
        0, random_model.cfg.d_vocab, (N_CONTEXTS, N_POS), generator=torch.Generator().manual_seed(1)
    )
    t[t == bos] = 7
    t[:, 0] = bos
    t[1, 6] = bos  # BOS separators inside contexts: neither spliced nor averaged over
    t[4, 3] = bos
    return t


def _not_bos(model, tokens):
    return tokens != model.tokenizer.bos_token_id


def _capture(model, tokens, hook_name):
    _, cache = model.run_with_cache(tokens, names_filter=hook_name)
    act = cache[hook_name]
    return act.reshape(*tokens.shape, -1), act.shape


def _replacing(value, keep, shape):
    """A hook that puts value[b, p] (flat) at every kept position and leaves the others as they were."""

    def hook(act, hook):
        flat = act.reshape(*keep.shape, -1)
        return torch.where(keep[..., None], value.to(act.dtype), flat).reshape(shape)

    return hook


def _per_token_loss(model, tokens, hooks=()):
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(tokens, return_type="loss", loss_per_token=True)


def _log_probs(model, tokens, hooks=()):
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(tokens)[:, :-1].float().log_softmax(-1).flatten(0, 1)


class Reference:
    """Every splice metric computed with hooks and TransformerLens' loss, for one SAE at one site."""

    def __init__(self, model, tokens, sae, site):
        name = HOOKS[site]
        keep = _not_bos(model, tokens)
        x, shape = _capture(model, tokens, name)
        self.mean = x[keep].double().mean(0).float()
        self.mean_with_bos = x.flatten(0, 1).double().mean(0).float()
        with torch.no_grad():
            x_hat = sae.decode(sae.encode(x.flatten(0, 1))).reshape(x.shape)
        runs = {"spliced": x_hat, "zero": torch.zeros_like(x), "mean": self.mean.expand_as(x),
                "mean_with_bos": self.mean_with_bos.expand_as(x)}
        hooks = {run: [(name, _replacing(value, keep, shape))] for run, value in runs.items()}
        self.per_token = {"clean": _per_token_loss(model, tokens)}
        self.per_token.update({run: _per_token_loss(model, tokens, h) for run, h in hooks.items()})
        self.ce = {run: float(loss.mean()) for run, loss in self.per_token.items()}
        clean_lp, spliced_lp = _log_probs(model, tokens), _log_probs(model, tokens, hooks["spliced"])
        n = clean_lp.shape[0]
        # F.kl_div(input, target) = Σ target · (log target − input): KL(target ‖ input).
        self.kl_clean_spliced = float(F.kl_div(spliced_lp, clean_lp, log_target=True, reduction="sum")) / n
        self.kl_spliced_clean = float(F.kl_div(clean_lp, spliced_lp, log_target=True, reduction="sum")) / n

    def mean_of_batch_means(self, run):
        return float(torch.stack([b.mean() for b in self.per_token[run].split(BATCH_SIZE)]).mean())

    def recovered(self, ablation, spliced="spliced"):
        return (self.ce[ablation] - self.ce[spliced]) / (self.ce[ablation] - self.ce["clean"])


def _far(a, b, margin=100):
    """a and b differ by far more than the tolerance the tests compare with."""
    return abs(a - b) > margin * max(TOL["abs"], TOL["rel"] * abs(b))


@pytest.fixture(scope="module", params=list(HOOKS))
def case(request, random_model, tokens):
    site = request.param
    width = HookSite.parse(site).width(random_model.cfg)
    sae = SAE(SAEConfig("topk", width, 32, k=3, hook_site=site, seed=4))
    metrics = evaluate_core(random_model, sae, tokens, CoreEvalConfig(batch_size=BATCH_SIZE))
    return metrics, Reference(random_model, tokens, sae, site), site


def test_losses_match_transformer_lens_per_token_loss(case):
    m, ref, _ = case
    assert m.ce_clean == pytest.approx(ref.ce["clean"], **TOL)
    assert m.ce_spliced == pytest.approx(ref.ce["spliced"], **TOL)
    assert m.ce_zero_ablation == pytest.approx(ref.ce["zero"], **TOL)
    assert m.ce_mean_ablation == pytest.approx(ref.ce["mean"], **TOL)
    assert m.ce_with_error == pytest.approx(ref.ce["clean"], **TOL)


def test_ce_is_a_per_token_mean_over_unequal_batches(case):
    m, ref, _ = case
    for run, value in (("clean", m.ce_clean), ("spliced", m.ce_spliced), ("zero", m.ce_zero_ablation)):
        assert _far(ref.mean_of_batch_means(run), ref.ce[run])  # the batches really are unequal
        assert value == pytest.approx(ref.ce[run], **TOL)


def test_kl_is_clean_to_spliced_as_documented(case):
    m, ref, _ = case
    assert _far(ref.kl_spliced_clean, ref.kl_clean_spliced)  # the direction matters on this SAE
    assert m.kl_div == pytest.approx(ref.kl_clean_spliced, rel=1e-4, abs=1e-6)
    assert abs(m.kl_with_error) < 1e-6


def test_ce_recovered_uses_each_ablation_s_own_loss(case):
    m, ref, _ = case
    assert _far(ref.ce["zero"], ref.ce["mean"])
    assert m.ce_loss_score == pytest.approx(ref.recovered("zero"), rel=1e-4)
    assert m.ce_recovered_mean == pytest.approx(ref.recovered("mean"), rel=1e-4)


def test_mean_ablation_leaves_bos_out_of_the_mean(case, random_model, tokens):
    m, ref, site = case
    assert _far(ref.ce["mean_with_bos"], ref.ce["mean"])  # BOS activations would move the mean
    assert m.ce_mean_ablation == pytest.approx(ref.ce["mean"], **TOL)
    mean = site_mean(random_model, HookSite.parse(site), list(tokens.split(BATCH_SIZE)))
    torch.testing.assert_close(mean, ref.mean, rtol=1e-5, atol=1e-6)


def test_dead_dense_and_l0_by_hand(random_model, tokens):
    """Three latents: one fires on every kept token, one on none, one on exactly one token (the kept token
    that projects furthest on a direction, with the bias half-way to the second furthest)."""
    site = "1.resid_pre"
    x, _ = _capture(random_model, tokens, HOOKS[site])
    x = x[_not_bos(random_model, tokens)]
    n = x.shape[0]
    direction = x[0] - x.mean(0)
    first, second = (x @ direction).topk(2).values.tolist()
    params = {"W_enc": torch.stack([torch.zeros(64), torch.zeros(64), direction], 1),
              "b_enc": torch.tensor([1.0, -1.0, -(first + second) / 2]),
              "W_dec": torch.zeros(3, 64), "b_dec": torch.zeros(64)}
    sae = SAE(SAEConfig("relu_l1", 64, 3, hook_site=site), InitialState(params, {}))
    m = evaluate_core(random_model, sae, tokens, CoreEvalConfig(batch_size=BATCH_SIZE, splice=False))
    assert m.n_tokens == n == int(_not_bos(random_model, tokens).sum())
    assert m.dead_fraction == pytest.approx(1 / 3)  # the latent that never fires; once is not dead
    assert m.dense_fraction == pytest.approx(1 / 3)  # fires on all tokens; 1 / n < 0.1 is not dense
    assert m.l0_histogram.tolist() == [0, n - 1, 1, 0]
    assert m.l0 == pytest.approx((n + 1) / n)


def test_l0_quantiles_by_hand():
    # 5 tokens with L0 = 1 and 5 with L0 = 2: the median is the first L0 whose CDF reaches 0.5
    assert l0_quantiles(torch.tensor([0, 5, 5]), (0.1, 0.5, 0.9)) == {
        "l0_p10": 1.0,
        "l0_p50": 1.0,
        "l0_p90": 2.0,
    }
    assert l0_quantiles(torch.tensor([2, 0, 0, 8]), (0.2, 0.25)) == {"l0_p20": 0.0, "l0_p25": 3.0}
