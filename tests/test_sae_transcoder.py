"""Transcoders and skip-transcoders: a dictionary that reads one site and reconstructs another.

Ground truth of the synthetic tests: x ~ N(0, I) in 16 dimensions; the target is y = relu(x @ E - 1.5) @ G + c
in 12 dimensions, with E's 32 columns and G's 32 rows random unit vectors (about 2 of the 32 features active per
input), and, for the skip-transcoder, a dense linear part x @ M added. So the map x -> y is "linear then sparse",
exactly what a transcoder with k >= the active count can represent, and what the best linear map (the baseline
beside it) cannot.
"""

from pathlib import Path

import pytest
import torch

from saelab.sae import (
    SAE,
    SAEConfig,
    dense_latents,
    fold_input_scale,
    fraction_of_variance_unexplained,
    load_sae,
    save_sae,
)
from saelab.sae.synthetic import random_dictionary
from saelab.training import TrainerConfig, load_checkpoint, train_saes

D_IN, D_OUT, N_FEATURES, BATCH, THRESHOLD = 16, 12, 32, 128, 1.5
IN_SITE, OUT_SITE = "1.resid_mid", "1.mlp_out"
TRANSCODER_ARCHITECTURES = ("topk", "batchtopk", "relu_l1", "relu_l1_anthropic", "jumprelu", "gated")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def transcoder_config(architecture: str = "topk", skip: bool = False, **fields) -> SAEConfig:
    return SAEConfig(architecture=architecture, d_in=D_IN, d_out=D_OUT, d_sae=64, k=4, hook_site=IN_SITE,
                     output_site=OUT_SITE, skip_connection=skip, **fields)


def linear_then_sparse_batches(n: int, seed: int = 0, skip_part: float = 0.0, x_scale: float = 30.0,
                               y_scale: float = 0.02) -> list[dict[str, torch.Tensor]]:
    """Batches of (x at IN_SITE, y at OUT_SITE), see the module docstring; deliberately far from unit scale."""
    generator = torch.Generator().manual_seed(seed)
    E = random_dictionary(N_FEATURES, D_IN, generator).t()
    G = random_dictionary(N_FEATURES, D_OUT, generator)
    M = torch.randn(D_IN, D_OUT, generator=generator) / D_IN**0.5
    c = torch.randn(D_OUT, generator=generator)
    batches = []
    for _ in range(n):
        x = torch.randn(BATCH, D_IN, generator=generator)
        y = (x @ E - THRESHOLD).relu() @ G + skip_part * x @ M + c
        batches.append({IN_SITE: x * x_scale, OUT_SITE: y * y_scale})
    return batches


def trainer_config(steps: int, **fields) -> TrainerConfig:
    defaults = {"lr": 3e-3, "dead_window_tokens": 10 * BATCH, "log_every_steps": 10, "normalization_batches": 4}
    return TrainerConfig(total_tokens=steps * BATCH, batch_size=BATCH, **{**defaults, **fields})


def raw_fvu(directory: Path, batches: list[dict[str, torch.Tensor]]) -> float:
    """FVU of the saved (folded) transcoder on raw held-out activations: reconstruct(x) against y."""
    tc = load_sae(directory)
    x, y = torch.cat([b[IN_SITE] for b in batches]), torch.cat([b[OUT_SITE] for b in batches])
    with torch.no_grad():
        return float(fraction_of_variance_unexplained(tc.reconstruct(x), y))


# ---------------------------------------------------------------- the dictionary's shapes and losses


@pytest.mark.parametrize("architecture", TRANSCODER_ARCHITECTURES)
def test_a_transcoder_has_decoder_and_skip_in_the_output_space(architecture: str) -> None:
    tc = SAE(transcoder_config(architecture, skip=True))
    assert tc.W_enc.shape == (D_IN, 64) and tc.W_dec.shape == (64, D_OUT) and tc.b_dec.shape == (D_OUT,)
    assert tc.W_skip.shape == (D_IN, D_OUT) and not bool(tc.W_skip.any())  # the skip term starts at zero
    assert not tc.subtracts_b_dec
    x = torch.randn(5, D_IN)
    out = tc(x)
    assert out.x_hat.shape == (5, D_OUT)
    with torch.no_grad():
        tc.W_skip.normal_()
        out = tc(x)  # BatchTopK's training forward keeps a batch's top activations, not encode's threshold
        torch.testing.assert_close(out.x_hat, tc.decode(dense_latents(out, 64)) + x @ tc.W_skip)
        torch.testing.assert_close(tc.reconstruct(x), tc.decode(tc.encode(x)) + x @ tc.W_skip)
    assert "W_skip" not in dict(SAE(transcoder_config(architecture)).named_parameters())


def test_the_transcoder_encoder_reads_x_not_x_minus_b_dec() -> None:
    tc = SAE(transcoder_config("topk", skip=False))
    x = torch.randn(6, D_IN)
    with torch.no_grad():
        tc.b_dec.normal_()
        pre = x @ tc.W_enc + tc.b_enc
    top = pre.topk(4, dim=-1)
    expected = torch.zeros_like(pre).scatter_(1, top.indices, top.values.relu())
    torch.testing.assert_close(tc.encode(x), expected)
    torch.testing.assert_close(tc(x).x_hat, expected @ tc.W_dec + tc.b_dec)


@pytest.mark.parametrize("architecture", TRANSCODER_ARCHITECTURES)
def test_the_loss_reconstructs_the_target_not_the_input(architecture: str) -> None:
    """Same widths in and out, so that reconstructing x instead of the target would run but give other numbers."""
    cfg = SAEConfig(architecture=architecture, d_in=D_IN, d_sae=64, k=4, hook_site=IN_SITE, output_site=OUT_SITE)
    tc = SAE(cfg)
    x, y = torch.randn(32, D_IN), torch.randn(32, D_IN) + 3.0
    loss = tc.loss(x, tc(x), target=y)
    out = tc(x)
    torch.testing.assert_close(loss.parts["mse"], (out.x_hat - y).pow(2).sum(-1).mean())
    assert not torch.allclose(loss.parts["mse"], (out.x_hat - x).pow(2).sum(-1).mean())
    with pytest.raises(ValueError, match="needs the target"):
        tc.loss(x, out)


def test_auxk_reconstructs_the_residual_of_the_target() -> None:
    cfg = SAEConfig(architecture="topk", d_in=D_IN, d_sae=64, k=4, auxk_k=8, hook_site=IN_SITE,
                    output_site=OUT_SITE)
    tc = SAE(cfg)
    x, y = torch.randn(32, D_IN), torch.randn(32, D_IN) + 3.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[40:] = True
    out = tc(x, dead)
    aux_hat = torch.zeros_like(y).index_add_(0, torch.arange(32).repeat_interleave(8),
                                             (out.aux_acts.flatten()[:, None] * tc.W_dec[out.aux_indices.flatten()]))
    expected = (aux_hat - (y - out.x_hat)).pow(2).sum(-1).mean()
    torch.testing.assert_close(tc.loss(x, out, target=y).parts["auxk"], expected.detach())


def test_configs_refuse_what_a_transcoder_cannot_be() -> None:
    with pytest.raises(ValueError, match="'vq' cannot be a transcoder"):
        SAEConfig(architecture="vq", d_in=D_IN, d_sae=64, k=1, hook_site=IN_SITE, output_site=OUT_SITE)
    with pytest.raises(ValueError, match="d_out=12 differs from d_in=16"):
        SAEConfig(architecture="topk", d_in=D_IN, d_out=D_OUT, d_sae=64, hook_site=IN_SITE)
    with pytest.raises(ValueError, match="skip_connection=True needs a transcoder"):
        SAEConfig(architecture="topk", d_in=D_IN, d_sae=64, hook_site=IN_SITE, skip_connection=True)


# ---------------------------------------------------------------- folding the input and target scales


@pytest.mark.parametrize("architecture", TRANSCODER_ARCHITECTURES)
def test_a_folded_transcoder_on_raw_data_equals_the_trained_one_on_scaled_data(architecture: str) -> None:
    cfg = transcoder_config(architecture, skip=True, dtype="float64")
    tc = SAE(cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in tc.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    s_in, s_out = 3.7, 0.2
    folded = fold_input_scale(tc, s_in, s_out)
    x = torch.randn(40, D_IN, generator=generator, dtype=torch.float64) / s_in
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x), tc.encode(x * s_in))
        torch.testing.assert_close(folded.reconstruct(x), tc.reconstruct(x * s_in) / s_out)
        torch.testing.assert_close(folded(x).x_hat, tc(x * s_in).x_hat / s_out)


# ---------------------------------------------------------------- training


STEPS = 600


@pytest.mark.parametrize("skip", [False, True])
def test_a_trained_transcoder_learns_a_linear_then_sparse_map(tmp_path: Path, skip: bool) -> None:
    batches = linear_then_sparse_batches(STEPS + 20, seed=0, skip_part=1.0 if skip else 0.0)
    train, held_out = batches[:STEPS], batches[STEPS:]
    rows: list[dict] = []
    train_saes({"tc": transcoder_config("topk", skip=skip)}, train, trainer_config(STEPS, lr=1e-2), tmp_path,
               metrics_sink=rows.extend, progress=False)
    fvu = raw_fvu(tmp_path / "tc", held_out)
    assert fvu < (0.05 if skip else 0.25), fvu  # measured: 0.012 with the skip term, 0.17 without
    # an input-only baseline: y from x by least squares (the best linear map; the sparse part defeats it)
    x, y = torch.cat([b[IN_SITE] for b in train]), torch.cat([b[OUT_SITE] for b in train])
    x1 = torch.cat([x, torch.ones(len(x), 1)], 1)
    solution = torch.linalg.lstsq(x1.double(), y.double()).solution
    xh, yh = torch.cat([b[IN_SITE] for b in held_out]), torch.cat([b[OUT_SITE] for b in held_out])
    linear_fvu = float(fraction_of_variance_unexplained(torch.cat([xh, torch.ones(len(xh), 1)], 1).double()
                                                        @ solution, yh.double()))
    assert fvu < (0.5 if skip else 0.3) * linear_fvu, (fvu, linear_fvu)  # measured: 0.038 and 0.80
    tc = load_sae(tmp_path / "tc")
    assert tc.cfg.is_transcoder and tc.cfg.output_site == OUT_SITE and tc.cfg.skip_connection == skip


def test_the_trainer_starts_b_dec_at_the_target_mean_and_scales_each_site(tmp_path: Path) -> None:
    batches = linear_then_sparse_batches(8, seed=4)
    config = trainer_config(1, normalization_batches=4, lr=1e-12)
    [trained] = train_saes({"tc": transcoder_config()}, batches, config, tmp_path, progress=False)
    first = batches[:4]
    x, y = torch.cat([b[IN_SITE] for b in first]), torch.cat([b[OUT_SITE] for b in first])
    assert trained.input_scale == pytest.approx(D_IN**0.5 / float(x.double().norm(dim=-1).mean()), rel=1e-6)
    assert trained.output_scale == pytest.approx(D_OUT**0.5 / float(y.double().norm(dim=-1).mean()), rel=1e-6)
    # saved folded: b_dec back in raw target units, at the target mean (an lr of 1e-12 leaves it there)
    torch.testing.assert_close(load_sae(tmp_path / "tc").b_dec, y.mean(0), rtol=1e-4, atol=1e-6)


def test_a_resumed_transcoder_run_ends_bit_identical(tmp_path: Path) -> None:
    batches = linear_then_sparse_batches(24, seed=5)
    cfgs = {"tc": transcoder_config("topk", skip=True), "tc-relu": transcoder_config("relu_l1")}
    config = trainer_config(24, checkpoint_every_tokens=5 * BATCH, dead_window_tokens=4 * BATCH)
    train_saes(cfgs, batches, config, tmp_path / "straight", progress=False)
    train_saes(cfgs, batches[:12], config, tmp_path / "partial", tmp_path / "ck", progress=False)
    assert load_checkpoint(tmp_path / "ck")["step"] == 12
    train_saes(cfgs, batches, config, tmp_path / "resumed", tmp_path / "ck", progress=False)
    for sae_id in cfgs:
        straight, resumed = (dict(load_sae(tmp_path / d / sae_id).state_dict()) for d in ("straight", "resumed"))
        for name in straight:
            assert torch.equal(straight[name], resumed[name]), f"{sae_id}.{name}"


def test_a_batch_without_the_target_site_is_refused(tmp_path: Path) -> None:
    batches = [{IN_SITE: b[IN_SITE]} for b in linear_then_sparse_batches(2)]
    with pytest.raises(ValueError, match=r"reads site '1.mlp_out', absent from the batch"):
        train_saes({"tc": transcoder_config()}, batches, trainer_config(2), tmp_path, progress=False)
    wrong = [{IN_SITE: b[IN_SITE], OUT_SITE: b[IN_SITE]} for b in linear_then_sparse_batches(2)]
    with pytest.raises(ValueError, match=r"site '1.mlp_out' batch has shape \(128, 16\).*expects \(128, 12\)"):
        train_saes({"tc": transcoder_config()}, wrong, trainer_config(2), tmp_path, progress=False)


# ---------------------------------------------------------------- saving and loading


def test_save_load_round_trip_keeps_the_transcoder_fields_and_tensors(tmp_path: Path) -> None:
    tc = SAE(transcoder_config("jumprelu", skip=True))
    with torch.no_grad():
        tc.W_skip.normal_()
    save_sae(tc, tmp_path / "tc")
    loaded = load_sae(tmp_path / "tc")
    assert loaded.cfg == tc.cfg and loaded.cfg.d_out == D_OUT and loaded.cfg.skip_connection
    for name, tensor in tc.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_an_sae_saved_before_transcoders_existed_still_loads(tmp_path: Path) -> None:
    import json

    sae = SAE(SAEConfig(architecture="topk", d_in=D_IN, d_sae=64, hook_site="0.resid_post"))
    paths = save_sae(sae, tmp_path / "old")
    fields = json.loads(paths.cfg.read_text())
    for name in ("output_site", "d_out", "skip_connection"):
        fields.pop(name)
    paths.cfg.write_text(json.dumps(fields))
    loaded = load_sae(tmp_path / "old")
    assert loaded.cfg == sae.cfg and not loaded.cfg.is_transcoder


# ---------------------------------------------------------------- SAELens export


def _perturbed(architecture: str, skip: bool) -> SAE:
    tc = SAE(transcoder_config(architecture, skip=skip, hook_name="blocks.1.hook_resid_mid"))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for tensor in list(tc.parameters()) + list(tc.buffers()):
            tensor.add_(0.1 * torch.rand(tensor.shape, generator=generator))
    return tc


@pytest.mark.parametrize("architecture, skip, saelens_class", [
    ("relu_l1", False, "Transcoder"), ("relu_l1_anthropic", True, "SkipTranscoder"),
    ("jumprelu", False, "JumpReLUTranscoder"), ("jumprelu", True, "JumpReLUSkipTranscoder"),
    ("batchtopk", True, "JumpReLUSkipTranscoder"),
])
def test_saelens_loads_an_exported_transcoder_with_the_same_output(tmp_path: Path, architecture, skip, saelens_class):
    sae_lens = pytest.importorskip("sae_lens")
    from saelab.sae import batchtopk_to_jumprelu, export_saelens, import_saelens

    tc = _perturbed(architecture, skip)
    reference = batchtopk_to_jumprelu(tc) if architecture == "batchtopk" else tc
    paths = export_saelens(tc, tmp_path / "lens")
    theirs = sae_lens.SAE.load_from_disk(str(paths.directory), device="cpu")
    assert type(theirs).__name__ == saelens_class and theirs.cfg.d_out == D_OUT
    x = torch.randn(20, D_IN, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        ours = reference.reconstruct(x)
        torch.testing.assert_close(theirs(x), ours, rtol=1e-5, atol=1e-5)
        back = import_saelens(paths.directory)
        assert back.cfg.is_transcoder and back.cfg.output_site == OUT_SITE and back.cfg.skip_connection == skip
        torch.testing.assert_close(back.reconstruct(x), ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["topk", "gated"])
def test_a_transcoder_saelens_cannot_represent_is_refused_before_writing(tmp_path: Path, architecture: str):
    from saelab.sae import export_saelens

    with pytest.raises(ValueError, match=f"SAELens 6 has no '{architecture}' skip-transcoder"):
        export_saelens(_perturbed(architecture, True), tmp_path / "lens")
    assert not (tmp_path / "lens").exists()
