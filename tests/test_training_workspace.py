"""Reused work buffers: a training step that writes its large temporaries (pre-activations, top-k selection, weight
gradients) into a workspace gives the same weights as one that allocates them afresh, and really writes into it."""

from pathlib import Path

import pytest
import torch

from saelab.sae import SAE, SAEConfig, load_sae
from saelab.training import TrainerConfig, train_saes
from saelab.training.state import new_member
from saelab.training.trainer import train_step

SITE = "0.resid_post"
D_IN, D_SAE, K, BATCH = 16, 64, 4, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def batches(n: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # a few directions carry most of the signal, so some latents stop firing and AuxK has dead ones to train
    basis = torch.randn(4, D_IN, generator=generator)
    return [torch.randn(BATCH, 4, generator=generator) @ basis + 0.1 * torch.randn(BATCH, D_IN, generator=generator)
            for _ in range(n)]


def config(steps: int) -> TrainerConfig:
    # a dead window of one batch: latents that did not fire in the last batch are dead, so AuxK runs from step 2
    return TrainerConfig(total_tokens=steps * BATCH, batch_size=BATCH, lr=1e-2, dead_window_tokens=BATCH,
                         normalization_batches=1, log_every_steps=1)


def topk_config(dtype: str = "float32") -> SAEConfig:
    return SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=K, hook_site=SITE, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steps_with_a_workspace_give_bit_identical_weights_and_write_into_it(dtype: str) -> None:
    cfg, trainer = topk_config(dtype), config(6)
    plain, reused = (new_member("sae", cfg, trainer, torch.device("cpu")) for _ in range(2))
    reused.work = reused.sae.new_workspace(BATCH)
    auxk_used = False
    for step, x in enumerate(batches(6)):
        x = x.to(cfg.torch_dtype)
        for buffer in (reused.work.pre_acts, reused.work.grad_W_enc, reused.work.grad_W_dec):
            buffer.fill_(float("nan"))
        rows = [train_step(member, x, step, trainer, log=True) for member in (plain, reused)]
        assert rows[0] == rows[1]
        auxk_used |= rows[0]["loss_auxk"] > 0
        for buffer in (reused.work.pre_acts, reused.work.grad_W_enc, reused.work.grad_W_dec):
            assert not buffer.isnan().any(), "train_step should write into every buffer of the workspace"
        # autograd adds the workspace's gradients into .grad; .grad never becomes (a view of) the workspace
        assert reused.sae.W_enc.grad.data_ptr() != reused.work.grad_W_enc.data_ptr()
        assert reused.sae.W_dec.grad.data_ptr() != reused.work.grad_W_dec.data_ptr()
    assert auxk_used, "the batches should leave dead latents, so that the AuxK path is compared too"
    for name, tensor in plain.sae.state_dict().items():
        assert torch.equal(tensor, reused.sae.state_dict()[name]), name
    out = reused.sae(batches(1)[0].to(cfg.torch_dtype), None, reused.work)
    assert out.pre_acts.data_ptr() == reused.work.pre_acts.data_ptr()
    assert out.indices.data_ptr() == reused.work.top_indices.data_ptr()


def test_train_saes_gives_the_weights_it_gave_without_work_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = [{SITE: x * 5} for x in batches(6)]
    made = []
    original = SAE.new_workspace
    monkeypatch.setattr(SAE, "new_workspace", lambda sae, batch: made.append(original(sae, batch)) or made[-1])
    with_buffers = train_saes({"sae": topk_config()}, data, config(6), tmp_path / "a", progress=False)
    assert len(made) == 1 and made[0] is not None
    monkeypatch.setattr(SAE, "new_workspace", lambda sae, batch: None)
    without = train_saes({"sae": topk_config()}, data, config(6), tmp_path / "b", progress=False)
    a, b = load_sae(with_buffers[0].paths.directory), load_sae(without[0].paths.directory)
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name


def test_a_workspace_for_another_batch_size_is_refused() -> None:
    sae = SAE(topk_config())
    with pytest.raises(ValueError, match=r"workspace .* \(32, 64\)"):
        sae(torch.randn(BATCH, D_IN), None, sae.new_workspace(BATCH // 2))


def test_architectures_without_a_workspace_get_none() -> None:
    sae = SAE(SAEConfig(architecture="relu_l1", d_in=D_IN, d_sae=D_SAE))
    assert sae.new_workspace(BATCH) is None


@pytest.mark.parametrize("chunk_latents", [1, 3, 64, 1000])
def test_latent_major_sum_into_out_in_chunks_equals_one_call(
    chunk_latents: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saelab.sae import functional

    generator = torch.Generator().manual_seed(1)
    indices = torch.stack([torch.randperm(D_SAE, generator=generator)[:K] for _ in range(BATCH)])
    indices[:, 0] = 5  # one latent in every input; others in none
    weights, rows = torch.randn(BATCH, K, generator=generator), torch.randn(BATCH, D_IN, generator=generator)
    expected = functional.latent_major_sum(indices, weights, rows, D_SAE)
    monkeypatch.setattr(functional, "CHUNK_BYTES", chunk_latents * D_IN * 4)
    out = torch.full((D_IN, D_SAE), float("nan")).t()  # a transposed layout, as W_enc's gradient uses
    assert functional.latent_major_sum(indices, weights, rows, D_SAE, out) is out
    assert torch.equal(out, expected)
