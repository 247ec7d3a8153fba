"""The TopK SAE's sparse forward/backward against a straightforward dense computation."""

import pytest
import torch
from torch import Tensor

from saelab.sae import SAE, SAEConfig
from saelab.sae.batchtopk import batch_topk
from saelab.sae.functional import latent_fire_counts, latent_major_sum, sampled_row_dots, sparse_decode

D_IN, D_SAE, K, BATCH = 12, 40, 5, 16


def reference_topk_loss(
    params: dict[str, Tensor],
    x: Tensor,
    k: int,
    dead_mask: Tensor | None,
    n_aux: int,
    auxk_coefficient: float,
) -> dict[str, Tensor]:
    """OpenAI's TopK + AuxK written densely: every latent materialised, nothing shared with saelab."""
    W_enc, b_enc, W_dec, b_dec = params["W_enc"], params["b_enc"], params["W_dec"], params["b_dec"]
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(1, indices, values.relu())
    x_hat = acts @ W_dec + b_dec
    mse = ((x_hat - x) ** 2).sum(-1).mean()
    auxk = torch.zeros((), dtype=x.dtype)
    if dead_mask is not None and dead_mask.any():
        masked = pre.masked_fill(~dead_mask, float("-inf"))
        aux_values, aux_indices = masked.topk(min(n_aux, int(dead_mask.sum())), dim=-1)
        aux_acts = torch.zeros_like(pre).scatter(1, aux_indices, aux_values.relu())
        residual = (x - x_hat).detach()
        auxk = ((aux_acts @ W_dec - residual) ** 2).sum(-1).mean()
    return {"mse": mse, "auxk": auxk, "total": mse + auxk_coefficient * auxk, "x_hat": x_hat}


def _sae_and_input(dtype: str, seed: int = 0) -> tuple[SAE, Tensor]:
    sae = SAE(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, auxk_k=7, dtype=dtype, seed=seed))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # move away from the tied init so every parameter matters
        for p in sae.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    x = torch.randn(BATCH, D_IN, generator=generator, dtype=sae.W_dec.dtype) * 2
    return sae, x


def _reference_grads(
    sae: SAE, x: Tensor, dead_mask: Tensor | None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {n: p.detach().clone().requires_grad_() for n, p in sae.named_parameters()}
    ref = reference_topk_loss(params, x, K, dead_mask, sae.cfg.n_auxk, sae.cfg.auxk_coefficient)
    ref["total"].backward()
    return ref, {n: p.grad for n, p in params.items()}


@pytest.mark.parametrize("n_dead", [None, 0, 3, 25])
def test_topk_and_auxk_loss_and_gradients_match_dense_reference(n_dead: int | None) -> None:
    sae, x = _sae_and_input("float64")
    dead_mask = None if n_dead is None else torch.arange(D_SAE) >= D_SAE - n_dead
    ref, ref_grads = _reference_grads(sae, x, dead_mask)

    out = sae(x, dead_mask)
    loss = sae.loss(x, out)
    loss.total.backward()

    torch.testing.assert_close(out.x_hat, ref["x_hat"], rtol=1e-10, atol=1e-10)
    for part in ("mse", "auxk"):
        torch.testing.assert_close(loss.parts[part], ref[part], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss.total, ref["total"], rtol=1e-10, atol=1e-10)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(
            p.grad, ref_grads[name], rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}"
        )
    if n_dead:
        assert loss.parts["auxk"] > 0
        assert out.aux_indices.shape == (BATCH, min(n_dead, sae.cfg.n_auxk))
        assert bool(dead_mask[out.aux_indices].all())


def test_float32_sparse_path_matches_float64_reference() -> None:
    sae, x = _sae_and_input("float32", seed=3)
    dead_mask = torch.arange(D_SAE) < 10
    sae64 = SAE(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, auxk_k=7, dtype="float64"))
    sae64.load_state_dict({n: t.double() for n, t in sae.state_dict().items()})
    ref, ref_grads = _reference_grads(sae64, x.double(), dead_mask)
    loss = sae.loss(x, sae(x, dead_mask))
    loss.total.backward()
    torch.testing.assert_close(loss.total.double(), ref["total"], rtol=1e-4, atol=1e-4)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad.double(), ref_grads[name], rtol=1e-3, atol=1e-4)


def test_input_gradient_flows_through_the_sparse_encoder() -> None:
    sae, x = _sae_and_input("float64", seed=5)
    x_sparse = x.clone().requires_grad_()
    sae.loss(x_sparse, sae(x_sparse)).total.backward()
    params = {n: p.detach() for n, p in sae.named_parameters()}
    x_ref = x.clone().requires_grad_()
    reference_topk_loss(params, x_ref, K, None, 0, 0.0)["total"].backward()
    torch.testing.assert_close(x_sparse.grad, x_ref.grad, rtol=1e-9, atol=1e-9)


def test_sparse_helpers_match_dense_formulas() -> None:
    generator = torch.Generator().manual_seed(7)
    indices = torch.stack([torch.randperm(D_SAE, generator=generator)[:K] for _ in range(BATCH)])
    weights = torch.randn(BATCH, K, generator=generator, dtype=torch.float64)
    rows = torch.randn(BATCH, D_IN, generator=generator, dtype=torch.float64)
    W = torch.randn(D_SAE, D_IN, generator=generator, dtype=torch.float64)
    dense = torch.zeros(BATCH, D_SAE, dtype=torch.float64).scatter(1, indices, weights)
    torch.testing.assert_close(latent_major_sum(indices, weights, rows, D_SAE), dense.t() @ rows)
    torch.testing.assert_close(sampled_row_dots(rows, W, indices), (rows @ W.t()).gather(1, indices))
    torch.testing.assert_close(sparse_decode(weights, indices, W), dense @ W)


def test_topk_encode_keeps_k_latents_and_matches_forward() -> None:
    sae, x = _sae_and_input("float64", seed=2)
    latents = sae.encode(x)
    assert bool(((latents > 0).sum(-1) <= K).all())
    torch.testing.assert_close(sae.decode(latents), sae(x).x_hat)


def test_batch_topk_keeps_the_largest_batch_times_k_entries() -> None:
    pre = torch.rand(8, 30, generator=torch.Generator().manual_seed(0))
    kept = batch_topk(pre, 3)
    assert int((kept > 0).sum()) == 24
    assert float(kept[kept > 0].min()) > float(pre[kept == 0].max())
    assert int((kept > 0).sum(-1).max()) > 3 or int((kept > 0).sum(-1).min()) < 3  # not per-row top-k


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "relu_l1", "jumprelu", "gated", "vq"])
def test_latent_fire_counts_match_the_dense_latents(architecture: str) -> None:
    torch.manual_seed(0)
    cfg = SAEConfig(architecture=architecture, d_in=D_IN, d_sae=D_SAE, k=K if architecture != "vq" else 2)
    x = torch.randn(BATCH, D_IN) * 3
    with torch.no_grad():
        out = SAE(cfg)(x)
    counts = latent_fire_counts(out, D_SAE)
    assert counts.dtype == torch.long and 0 < int(counts.sum()) < BATCH * D_SAE
    # the plain definition: one count per listed (input, latent) entry with a positive activation
    assert torch.equal(counts, torch.bincount(out.indices[out.acts > 0], minlength=D_SAE))
