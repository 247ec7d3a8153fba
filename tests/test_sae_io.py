"""Save/load round trips, input-scale folding, and the SAELens on-disk format."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from saelab.sae import (
    ARCHITECTURES,
    SAE,
    SAEConfig,
    batchtopk_to_jumprelu,
    export_saelens,
    fold_input_scale,
    import_saelens,
    load_sae,
    sae_paths,
    save_sae,
)

D_IN, D_SAE = 8, 24


def _perturbed_sae(architecture: str, seed: int = 0) -> SAE:
    """An SAE whose every tensor differs from its initial value (as after training)."""
    cfg = SAEConfig(
        architecture=architecture,
        d_in=D_IN,
        d_sae=D_SAE,
        k=3 if architecture != "vq" else 1,
        hook_site="1.resid_post",
        hook_name="blocks.1.hook_resid_post",
        model_name="saelab-random",
        seed=seed,
    )
    sae = SAE(cfg)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for tensor in list(sae.parameters()) + list(sae.buffers()):
            tensor.add_(0.1 * torch.rand(tensor.shape, generator=generator))
    return sae


def _x(n: int = 32, seed: int = 0) -> Tensor:
    return 3 * torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_save_load_round_trip(architecture: str, tmp_path: Path) -> None:
    sae = _perturbed_sae(architecture)
    paths = save_sae(sae, tmp_path / "sae")
    assert paths == sae_paths(tmp_path / "sae")
    assert paths.cfg.is_file() and paths.weights.is_file()
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg == sae.cfg
    assert loaded.cfg.hook_site == "1.resid_post" and loaded.cfg.model_name == "saelab-random"
    original, restored = sae.state_dict(), loaded.state_dict()
    assert set(original) == set(restored)
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    x = _x()
    assert torch.equal(sae.encode(x), loaded.encode(x))
    assert torch.equal(sae(x).x_hat, loaded(x).x_hat)


def test_load_refuses_missing_or_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no SAE config"):
        load_sae(tmp_path / "nowhere")
    paths = save_sae(_perturbed_sae("topk"), tmp_path / "sae")
    fields = json.loads(paths.cfg.read_text())
    paths.cfg.write_text(json.dumps({**fields, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_sae(tmp_path / "sae")
    paths.cfg.write_text(json.dumps({**fields, "architecture": "nonsense"}))
    with pytest.raises(ValueError, match="'nonsense'"):
        load_sae(tmp_path / "sae")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_fold_input_scale_makes_the_sae_take_raw_activations(architecture: str) -> None:
    sae = _perturbed_sae(architecture, seed=1)
    scale = 2.5
    x = _x(seed=1)
    folded = fold_input_scale(sae, scale)
    torch.testing.assert_close(folded.encode(x), sae.encode(x * scale), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded(x).x_hat, sae(x * scale).x_hat / scale, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="-1"):
        fold_input_scale(sae, -1.0)


def _saelens_reconstruction(directory: Path, x: Tensor) -> Tensor:
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(directory), device="cpu")
    with torch.no_grad():
        return theirs.decode(theirs.encode(x))


EXPORTABLE = ["relu_l1", "relu_l1_anthropic", "topk", "jumprelu", "gated", "batchtopk"]


@pytest.mark.parametrize("architecture", EXPORTABLE)
def test_saelens_loads_our_export_with_the_same_reconstruction(architecture: str, tmp_path: Path) -> None:
    sae = _perturbed_sae(architecture, seed=2)
    x = _x(seed=2)
    reference = batchtopk_to_jumprelu(sae) if architecture == "batchtopk" else sae
    ours = reference.decode(reference.encode(x)).detach()
    paths = export_saelens(sae, tmp_path / "lens")
    assert paths.weights.name == "sae_weights.safetensors"
    fields = json.loads(paths.cfg.read_text())
    assert fields["hook_name"] == "blocks.1.hook_resid_post" and fields["model_name"] == "saelab-random"
    torch.testing.assert_close(_saelens_reconstruction(paths.directory, x), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", EXPORTABLE)
def test_saelens_export_import_round_trip(architecture: str, tmp_path: Path) -> None:
    sae = _perturbed_sae(architecture, seed=3)
    reference = batchtopk_to_jumprelu(sae) if architecture == "batchtopk" else sae
    back = import_saelens(export_saelens(sae, tmp_path / "lens").directory)
    assert back.cfg.architecture == reference.cfg.architecture
    assert back.cfg.hook_name == sae.cfg.hook_name and back.cfg.hook_site == sae.cfg.hook_site
    x = _x(seed=3)
    torch.testing.assert_close(back.encode(x), reference.encode(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(back.decode(back.encode(x)), reference.decode(reference.encode(x)))


def test_import_of_a_native_saelens_jumprelu_that_subtracts_b_dec(tmp_path: Path) -> None:
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig

    theirs = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=True))
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 0.5)
    theirs.save_model(tmp_path / "native")
    ours = import_saelens(tmp_path / "native")
    x = _x(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)))
    assert sae_lens is not None


def test_vq_has_no_saelens_export(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'vq'"):
        export_saelens(_perturbed_sae("vq"), tmp_path / "lens")


def test_batchtopk_export_needs_a_threshold(tmp_path: Path) -> None:
    sae = SAE(SAEConfig(architecture="batchtopk", d_in=D_IN, d_sae=D_SAE, k=2))
    with pytest.raises(ValueError, match="threshold"):
        export_saelens(sae, tmp_path / "lens")
    converted = batchtopk_to_jumprelu(sae, threshold=0.5)
    assert converted.cfg == dataclasses.replace(sae.cfg, architecture="jumprelu")
    assert torch.equal(converted.threshold, torch.full((D_SAE,), 0.5))
