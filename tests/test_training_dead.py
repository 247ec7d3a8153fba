"""Dead-latent bookkeeping and resampling."""

import torch

from saelab.sae import SAE, SAEConfig
from saelab.sae.dead import resample_dead_latents_
from saelab.training.dead import dead_latents, update_tokens_since_fired_


def test_tokens_since_fired_and_dead_mask() -> None:
    since = torch.zeros(4, dtype=torch.long)
    update_tokens_since_fired_(since, torch.tensor([1, 0, 0, 2]), 100)
    update_tokens_since_fired_(since, torch.tensor([0, 0, 3, 0]), 100)
    assert since.tolist() == [100, 200, 0, 100]
    assert dead_latents(since, 200).tolist() == [False, True, False, False]


def test_resampling_moves_only_dead_latents_and_resets_their_adam_state() -> None:
    sae = SAE(SAEConfig(architecture="relu_l1", d_in=8, d_sae=16))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    sae.loss(x, sae(x)).total.backward()
    opt.step()
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    dead = torch.zeros(16, dtype=torch.bool)
    dead[[2, 7]] = True
    assert resample_dead_latents_(sae, opt, dead, x, torch.Generator().manual_seed(1)) == 2
    alive = ~dead
    assert torch.equal(sae.W_dec[alive], before["W_dec"][alive])
    assert torch.equal(sae.W_enc[:, alive], before["W_enc"][:, alive])
    assert not torch.equal(sae.W_dec[dead], before["W_dec"][dead])
    torch.testing.assert_close(sae.W_dec[dead].norm(dim=-1), torch.ones(2))
    assert torch.equal(sae.b_enc[dead], torch.zeros(2))
    # each resampled decoder row points along a (centred) input of the batch
    centred = x - sae.b_dec
    cosines = (sae.W_dec[dead] @ (centred / centred.norm(dim=-1, keepdim=True)).t()).max(dim=1).values
    torch.testing.assert_close(cosines, torch.ones(2))
    state = opt.state[sae.W_dec]
    assert bool((state["exp_avg"][dead] == 0).all()) and bool((state["exp_avg"][alive] != 0).any())
    assert bool((opt.state[sae.W_enc]["exp_avg_sq"][:, dead] == 0).all())


def test_each_architecture_carries_its_dead_latent_policy() -> None:
    from saelab.sae import ARCHITECTURES
    from saelab.sae.vq import replace_dead_vq_codes_

    policies = {name: arch.resample_dead_ for name, arch in ARCHITECTURES.items()}
    assert policies == {"relu_l1": resample_dead_latents_, "relu_l1_anthropic": resample_dead_latents_,
                        "vq": replace_dead_vq_codes_, "topk": None, "batchtopk": None, "jumprelu": None,
                        "gated": None}


def test_trainer_resamples_dead_latents_by_the_architecture_policy() -> None:
    from saelab.training import TrainerConfig
    from saelab.training.state import new_member
    from saelab.training.trainer import ScaledBatch, resample_if_due

    config = TrainerConfig(total_tokens=64 * 100, batch_size=64, dead_window_tokens=128)
    members = {
        name: new_member(
            name, SAEConfig(architecture=name, d_in=8, d_sae=16, k=2), config, torch.device("cpu")
        )
        for name in ("relu_l1", "topk")
    }
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    for m in members.values():
        m.tokens_since_fired[:5] = 1000  # latents 0..4 dead for longer than the window
    before = {name: m.sae.W_dec.detach().clone() for name, m in members.items()}
    batch = ScaledBatch({name: x for name in members}, {name: x for name in members})
    resample_if_due(members, batch, step=1, config=config)  # 128 tokens: a window ends
    resampled = (members["relu_l1"].sae.W_dec != before["relu_l1"]).any(dim=1)
    assert resampled.tolist() == [True] * 5 + [False] * 11
    assert int(members["relu_l1"].tokens_since_fired.sum()) == 0
    assert torch.equal(members["topk"].sae.W_dec, before["topk"])  # TopK: AuxK in forward, no resampling
