"""TrainerConfig validation and the schedules."""

import pytest

from saelab.training import TrainerConfig, lr_multiplier, sparsity_multiplier


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"total_tokens": 0}, "total_tokens"),
        ({"batch_size": -4}, "-4"),
        ({"total_tokens": 10, "batch_size": 64}, "10"),
        ({"lr": 0.0}, "lr"),
        ({"lr_warmup_steps": -1}, "lr_warmup_steps"),
        ({"dead_window_tokens": 0}, "dead_window_tokens"),
        ({"checkpoint_every_tokens": 0}, "checkpoint_every_tokens"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
        ({"log_every_steps": 0}, "log_every_steps"),
        ({"auxk_window_tokens": 0}, "auxk_window_tokens"),
        ({"sae_lrs": (("a", 1e-3), ("b-topk", -1.0))}, "lr of 'b-topk'.*-1.0"),
    ],
)
def test_invalid_trainer_config_names_the_value(fields: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TrainerConfig(**{"total_tokens": 1024, "batch_size": 64, **fields})


def test_peak_lr_is_the_sae_own_else_the_run_lr() -> None:
    config = TrainerConfig(total_tokens=1024, batch_size=64, lr=3e-4, sae_lrs=(("fast", 2e-3),))
    assert (config.peak_lr("fast"), config.peak_lr("other")) == (2e-3, 3e-4)


def test_workflow_lr_comes_from_the_sae_then_the_run_then_the_architecture() -> None:
    from saelab.sae import get_architecture
    from saelab.workflows.train import SAESpec, TrainSpec, peak_lrs

    saes = (SAESpec("1.resid_post", "topk"), SAESpec("1.resid_post", "relu_l1"),
            SAESpec("1.resid_post", "jumprelu", lr=7e-5))
    defaults = list(peak_lrs(TrainSpec(model="m", saes=saes)).values())
    assert defaults == [get_architecture("topk").default_lr, get_architecture("relu_l1").default_lr, 7e-5]
    assert defaults[0] > defaults[1]  # TopK-style SAEs have their own, higher default
    assert list(peak_lrs(TrainSpec(model="m", saes=saes, lr=1e-3)).values()) == [1e-3, 1e-3, 7e-5]
    with pytest.raises(ValueError, match="lr of the topk SAE on 1.resid_post must be positive"):
        SAESpec("1.resid_post", lr=0.0)


def test_total_steps() -> None:
    assert TrainerConfig(total_tokens=1000, batch_size=64).total_steps == 15


def test_lr_schedule_warms_up_holds_and_decays_to_zero() -> None:
    values = [lr_multiplier(step, 10, warmup_steps=2, decay_steps=4) for step in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2:6] == [1.0] * 4
    assert values[6:] == [1.0, 0.75, 0.5, 0.25]
    assert [lr_multiplier(step, 5, 0, 0) for step in range(5)] == [1.0] * 5


def test_sparsity_warmup() -> None:
    assert [sparsity_multiplier(step, 4) for step in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert sparsity_multiplier(0, 0) == 1.0
