"""Training on a device: the tests `benchmarks/gpu_check.sh` runs with `-k cuda` on a GPU machine (each also
runs on the CPU, `-k cpu`, so that they are known to pass without one)."""

from pathlib import Path

import pytest
import torch
from test_sae_topk import D_IN, D_SAE, K, _reference_grads, _sae_and_input

from saelab.sae import SAE, SAEConfig, load_sae
from saelab.training import TrainerConfig, train_saes

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.skip_allowed_in_ci,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"),
        ],
    ),
]
SITE = "0.resid_post"


def batches(n: int, batch: int = 64, d_in: int = 32) -> list[dict[str, torch.Tensor]]:
    """Inputs made of a few directions plus noise (so latents specialise and some go idle: AuxK runs)."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(8, d_in, generator=generator)
    return [{SITE: (torch.randn(batch, 8, generator=generator).relu() @ basis
                    + 0.05 * torch.randn(batch, d_in, generator=generator)) * 3} for _ in range(n)]


@pytest.mark.parametrize("device", DEVICES)
def test_sparse_topk_gradients_with_a_workspace_match_the_dense_reference(device: str) -> None:
    sae, x = _sae_and_input("float32", seed=3)
    dead_mask = torch.arange(D_SAE) < 10
    sae64 = SAE(SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, auxk_k=7, dtype="float64"))
    sae64.load_state_dict({n: t.double() for n, t in sae.state_dict().items()})
    ref, ref_grads = _reference_grads(sae64, x.double(), dead_mask)
    sae, x, dead_mask = sae.to(device), x.to(device), dead_mask.to(device)
    loss = sae.loss(x, sae(x, dead_mask, sae.new_workspace(x.shape[0])))
    loss.total.backward()
    torch.testing.assert_close(loss.total.double().cpu(), ref["total"], rtol=1e-4, atol=1e-4)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad.double().cpu(), ref_grads[name], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_training_with_work_buffers_matches_training_without(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = SAEConfig(architecture="topk", d_in=32, d_sae=128, k=4, hook_site=SITE)
    config = TrainerConfig(total_tokens=10 * 64, batch_size=64, lr=3e-3, dead_window_tokens=64,
                           normalization_batches=2)
    data = batches(10)
    with_buffers = train_saes({"sae": cfg}, data, config, tmp_path / "a", progress=False, device=device)
    monkeypatch.setattr(SAE, "new_workspace", lambda sae, batch: None)
    without = train_saes({"sae": cfg}, data, config, tmp_path / "b", progress=False, device=device)
    a, b = load_sae(with_buffers[0].paths.directory), load_sae(without[0].paths.directory)
    for name, tensor in a.state_dict().items():
        if device == "cpu":
            assert torch.equal(tensor, b.state_dict()[name]), name
        else:  # CUDA's scatter-adds are atomic, so their order (and last bits) vary from run to run
            torch.testing.assert_close(tensor, b.state_dict()[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_training_reduces_the_loss(device: str, tmp_path: Path) -> None:
    cfg = SAEConfig(architecture="topk", d_in=32, d_sae=128, k=8, hook_site=SITE, dtype="bfloat16")
    config = TrainerConfig(total_tokens=60 * 64, batch_size=64, lr=3e-3, log_every_steps=5)
    rows: list[dict] = []
    trained = train_saes(
        {"sae": cfg}, batches(60), config, tmp_path, metrics_sink=rows.extend, progress=False, device=device
    )
    fvu = [row["fvu"] for row in rows]
    assert all(torch.isfinite(torch.tensor(fvu)))
    assert fvu[-1] < 0.6 * fvu[0], fvu
    assert load_sae(trained[0].paths.directory).W_dec.dtype == torch.bfloat16
