"""SAEConfig validation and the architecture registry."""

import dataclasses

import pytest
import torch

from saelab.sae import ARCHITECTURES, SAE, SAEConfig, register_architecture
from saelab.sae.topk import TOPK

EXPECTED = {"relu_l1", "relu_l1_anthropic", "topk", "batchtopk", "jumprelu", "gated", "vq"}


def test_all_architectures_are_registered() -> None:
    assert EXPECTED <= set(ARCHITECTURES)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"d_sae": 0}, "0"),
        ({"d_sae": -3}, "-3"),
        ({"d_in": 0}, "d_in"),
        ({"k": 65}, "65"),
        ({"k": 0}, "k"),
        ({"architecture": "resnet"}, "'resnet'"),
        ({"l1_coefficient": -1.0}, "l1_coefficient"),
        ({"jumprelu_bandwidth": 0.0}, "jumprelu_bandwidth"),
        ({"auxk_k": 0}, "auxk_k"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_value(fields: dict, named: str) -> None:
    base = {"architecture": "topk", "d_in": 16, "d_sae": 64, "k": 4}
    with pytest.raises(ValueError, match=named):
        SAEConfig(**{**base, **fields})


def test_unknown_dtype_is_refused() -> None:
    # Under jaxtyping's runtime checks the Literal annotation refuses it first, with a TypeError.
    with pytest.raises((ValueError, TypeError), match="float8"):
        SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4, dtype="float8")  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    cfg = SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 5  # type: ignore[misc]


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(TOPK)
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(dataclasses.replace(ARCHITECTURES["gated"], name="topk"))


def test_k_is_checked_only_where_it_matters() -> None:
    SAEConfig(architecture="relu_l1", d_in=8, d_sae=16)  # default k=32 is ignored here
    with pytest.raises(ValueError, match="32"):
        SAEConfig(architecture="vq", d_in=8, d_sae=16)


def test_auxk_default_is_half_of_d_in() -> None:
    assert SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4).n_auxk == 8
    assert SAEConfig(architecture="topk", d_in=16, d_sae=64, k=4, auxk_k=100).n_auxk == 64


@pytest.mark.parametrize("architecture", sorted(EXPECTED))
def test_same_seed_same_weights_other_seed_other_weights(architecture: str) -> None:
    def weights(seed: int) -> torch.Tensor:
        return SAE(SAEConfig(architecture=architecture, d_in=8, d_sae=16, k=2, seed=seed)).W_dec.detach()

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


@pytest.mark.parametrize("architecture", sorted(EXPECTED))
def test_forward_shapes_and_dtypes(architecture: str) -> None:
    sae = SAE(SAEConfig(architecture=architecture, d_in=8, d_sae=16, k=2, dtype="float64"))
    x = torch.randn(5, 8)
    out = sae(x, torch.arange(16) < 4)
    assert out.x_hat.shape == (5, 8) and out.x_hat.dtype == torch.float64
    assert out.indices.dtype == torch.int64 and out.acts.shape == out.indices.shape
    assert out.pre_acts.shape == (5, 16)
    assert sae.encode(x).shape == (5, 16)
    loss = sae.loss(x, out)
    assert "mse" in loss.parts and loss.total.ndim == 0
