"""`encode`, `decode` and `forward` of every registered architecture against dense references written here.

Each reference follows its paper's definition with plain loops and masks, sharing no code with saelab. The
parameters are moved away from their init (non-zero b_dec, b_enc, gate and magnitude biases, per-latent
thresholds), so forgetting a bias or reading x instead of x − b_dec changes the result. The encoder bias is
pushed down so that many pre-activations are negative: some inputs have no positive pre-activation, some
fewer than k, some more, and the tests assert that all three kinds are present.
"""

import math

import pytest
import torch
from torch import Tensor

from saelab.sae import ARCHITECTURES, NO_CODE, SAE, SAEConfig, argmax_codes, topk_codes
from saelab.sae.batchtopk import batch_topk
from saelab.sae.functional import dense_latents, fraction_of_variance_unexplained, mean_l0, mse_loss
from saelab.sae.types import InitialState, SAEOutput

D_IN, D_SAE, K, BATCH = 6, 20, 4, 24
THRESHOLD = 0.3
"""BatchTopK's inference threshold in these tests."""


def _pre(x: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """pre[n, j] = Σ_i x[n, i] W[i, j] + b[j], written as a sum of outer columns."""
    return sum(x[:, i : i + 1] * W[i] for i in range(x.shape[1])) + b


def ref_relu_l1(p: dict, x: Tensor) -> Tensor:
    return _pre(x - p["b_dec"], p["W_enc"], p["b_enc"]).clamp(min=0)


def ref_relu_l1_anthropic(p: dict, x: Tensor) -> Tensor:
    return _pre(x, p["W_enc"], p["b_enc"]).clamp(min=0)


def ref_topk(p: dict, x: Tensor) -> Tensor:
    """Gao et al.: ReLU of the k largest pre-activations, so a latent among the top k with a negative
    pre-activation stays at 0."""
    pre = _pre(x - p["b_dec"], p["W_enc"], p["b_enc"])
    out = torch.zeros_like(pre)
    for n in range(pre.shape[0]):
        ranked = sorted(range(pre.shape[1]), key=lambda j, n=n: -float(pre[n, j]))
        for j in ranked[:K]:
            out[n, j] = max(float(pre[n, j]), 0.0)
    return out


def ref_batchtopk(p: dict, x: Tensor) -> Tensor:
    """Per-input inference: the ReLU'd pre-activations above the training threshold."""
    pre = _pre(x - p["b_dec"], p["W_enc"], p["b_enc"])
    return torch.where(pre > max(float(p["threshold"]), 0.0), pre, torch.zeros_like(pre))


def ref_batch_topk_training(p: dict, x: Tensor) -> Tensor:
    """Bussmann et al.: the batch·k largest ReLU'd pre-activations of the whole batch (not k per row)."""
    pre = _pre(x - p["b_dec"], p["W_enc"], p["b_enc"]).clamp(min=0)
    flat = pre.flatten()
    keep = sorted(range(flat.numel()), key=lambda i: -float(flat[i]))[: x.shape[0] * K]
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.view_as(pre)


def ref_jumprelu(p: dict, x: Tensor) -> Tensor:
    """Rajamanoharan et al.: pre · H(pre − θ_j), from x itself (no b_dec subtracted)."""
    pre = _pre(x, p["W_enc"], p["b_enc"])
    return torch.where(pre > p["threshold"], pre, torch.zeros_like(pre))


def ref_gated(p: dict, x: Tensor) -> Tensor:
    """Rajamanoharan et al.: 1[π_gate > 0] · ReLU(π_mag), π_mag sharing W_enc rescaled by exp(r_mag)."""
    projected = _pre(x - p["b_dec"], p["W_enc"], torch.zeros(D_SAE, dtype=x.dtype))
    gate = projected + p["b_gate"] > 0
    magnitude = (projected * torch.exp(p["r_mag"]) + p["b_mag"]).clamp(min=0)
    return torch.where(gate, magnitude, torch.zeros_like(magnitude))


def ref_vq_ids(p: dict, x: Tensor) -> list[list[int]]:
    """Residual VQ: each step takes the code most cosine-similar to what is left, then subtracts it."""
    ids = []
    for row in x - p["b_dec"]:
        residual, chosen = row.clone(), []
        for _ in range(K):
            sims = [float(torch.dot(residual, c) / c.norm()) for c in p["W_dec"]]
            best = max(range(len(sims)), key=sims.__getitem__)
            chosen.append(best)
            residual = residual - p["W_dec"][best]
        ids.append(chosen)
    return ids


def ref_vq(p: dict, x: Tensor) -> Tensor:
    out = torch.zeros(x.shape[0], D_SAE, dtype=x.dtype)
    for n, chosen in enumerate(ref_vq_ids(p, x)):
        for j in chosen:
            out[n, j] += 1.0
    return out


REFERENCES = {
    "relu_l1": ref_relu_l1,
    "relu_l1_anthropic": ref_relu_l1_anthropic,
    "topk": ref_topk,
    "batchtopk": ref_batchtopk,
    "jumprelu": ref_jumprelu,
    "gated": ref_gated,
    "vq": ref_vq,
}


def ref_decode(p: dict, latents: Tensor) -> Tensor:
    return _pre(latents, p["W_dec"], p["b_dec"])


def make_sae(architecture: str, seed: int = 0) -> SAE:
    """An SAE whose every parameter is moved off its init, with the encoder biases pushed negative."""
    sae = SAE(SAEConfig(architecture, D_IN, D_SAE, k=K, dtype="float64", seed=seed))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            if name in ("b_enc", "b_gate", "b_mag"):
                p.sub_(1.0)
            if name == "W_dec":  # rows of different norms, so norms matter
                p.mul_(torch.rand(D_SAE, 1, generator=g, dtype=p.dtype) + 0.5)
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=g, dtype=torch.float64) * 0.8 + 0.05)
        if architecture == "batchtopk":
            sae.threshold.fill_(THRESHOLD)
    return sae


def inputs(seed: int = 0) -> Tensor:
    """Inputs at scales from tiny (no positive pre-activation under the negative biases) to large."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.0, 3.0, BATCH, dtype=torch.float64)[:, None]
    return torch.randn(BATCH, D_IN, generator=g, dtype=torch.float64) * scales


def params(sae: SAE) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in [*sae.named_parameters(), *sae.named_buffers()]}


def test_every_registered_architecture_has_a_reference() -> None:
    assert set(REFERENCES) == set(ARCHITECTURES)


@pytest.mark.parametrize("architecture", sorted(REFERENCES))
def test_encode_and_decode_match_the_dense_reference(architecture: str) -> None:
    sae, x = make_sae(architecture), inputs()
    p = params(sae)
    expected = REFERENCES[architecture](p, x)
    with torch.no_grad():
        latents = sae.encode(x)
        torch.testing.assert_close(latents, expected, rtol=1e-10, atol=1e-10)
        assert bool((latents >= 0).all())
        torch.testing.assert_close(sae.decode(latents), ref_decode(p, expected), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("architecture", ["relu_l1", "relu_l1_anthropic", "topk", "jumprelu", "gated", "vq"])
def test_forward_matches_the_reference_for_per_input_architectures(architecture: str) -> None:
    sae, x = make_sae(architecture, seed=1), inputs(seed=1)
    p = params(sae)
    expected = REFERENCES[architecture](p, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.x_hat, ref_decode(p, expected), rtol=1e-10, atol=1e-10)
    if architecture == "vq":
        assert out.indices.tolist() == ref_vq_ids(p, x)
    else:
        torch.testing.assert_close(dense_latents(out, D_SAE), expected, rtol=1e-10, atol=1e-10)


def test_topk_inputs_cover_fewer_than_k_positive_pre_activations() -> None:
    sae, x = make_sae("topk"), inputs()
    p = params(sae)
    positive = (_pre(x - p["b_dec"], p["W_enc"], p["b_enc"]) > 0).sum(-1)
    assert int((positive == 0).sum()) >= 2 and int(((positive > 0) & (positive < K)).sum()) >= 2
    assert int((positive > K).sum()) >= 2
    with torch.no_grad():
        latents, out = sae.encode(x), sae(x)
    # never a negative value, and exactly min(k, #positive) latents active
    assert bool((latents >= 0).all()) and bool((out.acts >= 0).all())
    assert (latents > 0).sum(-1).tolist() == positive.clamp(max=K).tolist()


def test_batchtopk_training_forward_keeps_batch_times_k_across_the_batch() -> None:
    sae, x = make_sae("batchtopk", seed=2), inputs(seed=2)
    p = params(sae)
    expected = ref_batch_topk_training(p, x)
    with torch.no_grad():
        out = sae(x)
    torch.testing.assert_close(out.acts, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.x_hat, ref_decode(p, expected), rtol=1e-10, atol=1e-10)
    per_row = (expected > 0).sum(-1)
    assert int(per_row.sum()) == BATCH * K and int(per_row.max()) > K  # rows share one budget
    # fewer positive pre-activations than batch·k: nothing negative is kept
    few = x[:3] * 0.01
    with torch.no_grad():
        acts = sae(few).acts
    assert bool((acts >= 0).all()) and int((acts > 0).sum()) < 3 * K
    torch.testing.assert_close(acts, ref_batch_topk_training(p, few), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(batch_topk(torch.tensor([[3.0, 0.0, 1.0], [2.0, 5.0, 0.5]]), 1),
                               torch.tensor([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0]]))


def _hand_sae() -> SAE:
    """ReLU SAE with W_enc = W_dec = I and zero biases: latents = ReLU(x), so codes can be read off by eye."""
    eye = torch.eye(3)
    state = InitialState({"W_enc": eye, "b_enc": torch.zeros(3), "W_dec": eye, "b_dec": torch.zeros(3)}, {})
    return SAE(SAEConfig("relu_l1", 3, 3), state)


HAND_X = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [-1.0, -2.0, -3.0],
                       [1.0, 4.0, 2.0], [0.5, 0.0, 0.1], [-1.0, 0.0, 2.0]])


def test_argmax_and_topk_codes_and_their_counts_by_hand() -> None:
    sae = _hand_sae()
    codes = argmax_codes(sae, HAND_X)
    assert codes.tolist() == [0, 2, NO_CODE, 1, 0, 2]
    assert torch.bincount(codes + 1, minlength=4).tolist() == [1, 2, 1, 2]  # NO_CODE, 0, 1, 2
    assert topk_codes(sae, HAND_X, 2).tolist() == [[0, 1], [2, 1], [NO_CODE, NO_CODE], [1, 2], [0, 2],
                                                   [2, NO_CODE]]


def test_vq_codes_and_counts_by_hand() -> None:
    codebook = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    state = InitialState({"W_dec": codebook, "b_dec": torch.tensor([0.5, 0.0])}, {})
    sae = SAE(SAEConfig("vq", 2, 3, k=2), state)
    x = torch.tensor([[3.5, 0.0], [0.5, 1.0], [-2.0, -1.0]])
    # centred: (3, 0) -> code 0, left (2, 0) -> 0; (0, 1) -> 1, left (0, -1) -> 2; (-2.5, -1) -> 2, left
    # (-1.5, 0) -> 2 (cosine 0.71 beats code 0's -1)
    assert sae(x).indices.tolist() == [[0, 0], [1, 2], [2, 2]]
    assert sae.encode(x).tolist() == [[2.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 2.0]]


def test_metrics_by_hand() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    x_hat = torch.tensor([[1.0, 1.0], [4.0, 4.0], [5.0, 8.0]])
    assert float(mse_loss(x_hat, x)) == pytest.approx(1.0)  # SSE 3 over 3 inputs
    # x's mean is (3, 5): total variance 4 + 9 + 0 + 1 + 4 + 16 = 34
    assert float(fraction_of_variance_unexplained(x_hat, x)) == pytest.approx(3 / 34)
    acts = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = SAEOutput(
        acts, acts, torch.arange(3).expand(4, 3), acts, acts[:, :0], torch.zeros(4, 0, dtype=torch.long)
    )
    assert float(mean_l0(out)) == pytest.approx(1.5)  # (2 + 0 + 1 + 3) / 4


@pytest.mark.parametrize("architecture", sorted(REFERENCES))
def test_post_step_puts_decoder_rows_at_unit_norm_exactly_when_the_architecture_says(
    architecture: str,
) -> None:
    sae, x = make_sae(architecture, seed=3), inputs(seed=3)
    before = sae.W_dec.detach().clone()
    with torch.no_grad():
        sae.post_step_(sae(x))
    norms = sae.W_dec.norm(dim=-1)
    if ARCHITECTURES[architecture].unit_norm_decoder:
        torch.testing.assert_close(norms, torch.ones(D_SAE, dtype=norms.dtype))
        cosine = (sae.W_dec * before).sum(-1) / before.norm(dim=-1)
        torch.testing.assert_close(cosine, torch.ones(D_SAE, dtype=norms.dtype))  # directions kept
    else:
        assert torch.equal(sae.W_dec, before)


def _l1(architecture: str, x: Tensor) -> tuple[float, dict]:
    sae = make_sae(architecture, seed=4)
    with torch.no_grad():
        return float(sae.loss(x, sae(x)).parts["l1"]), params(sae)


def test_l1_penalties_by_hand() -> None:
    """Plain L1 for relu_l1; L1 weighted by decoder row norms for Anthropic's variant and for the gate of
    gated."""
    x = inputs(seed=4)
    l1, p = _l1("relu_l1", x)
    assert l1 == pytest.approx(float(ref_relu_l1(p, x).sum(-1).mean()), rel=1e-10)
    l1, p = _l1("relu_l1_anthropic", x)
    acts, norms = ref_relu_l1_anthropic(p, x), p["W_dec"].norm(dim=-1)
    assert l1 == pytest.approx(float((acts * norms).sum(-1).mean()), rel=1e-10)
    assert not math.isclose(l1, float(acts.sum(-1).mean()), rel_tol=1e-3)
    l1, p = _l1("gated", x)
    gate = (_pre(x - p["b_dec"], p["W_enc"], p["b_gate"])).clamp(min=0)
    assert l1 == pytest.approx(float((gate * p["W_dec"].norm(dim=-1)).sum(-1).mean()), rel=1e-10)


def test_batchtopk_threshold_is_the_running_mean_of_the_smallest_kept_activation() -> None:
    sae = make_sae("batchtopk")
    sae.threshold.zero_()
    empty = torch.zeros(2, 0, dtype=torch.long)
    for smallest, expected in ((1.0, 1.0), (3.0, 2.0), (5.0, 3.0)):  # the mean of 1, 3, 5 so far
        acts = torch.tensor([[0.0, smallest + 2.0], [smallest, 0.0]], dtype=torch.float64)
        sae.post_step_(SAEOutput(acts, acts, torch.arange(2).expand(2, 2), acts, acts[:, :0], empty))
        assert float(sae.threshold) == pytest.approx(expected)


def test_shapes_are_checked_while_tests_run() -> None:
    """tests/conftest.py installs jaxtyping's import hook on the SAE maths: a batch-size mismatch that
    broadcasting would silently accept is an error."""
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        fraction_of_variance_unexplained(torch.ones(3, 2), torch.zeros(1, 2))
    with pytest.raises(TypeCheckError):
        mse_loss(torch.ones(3, 2), torch.zeros(3, 1))
