"""The generic registry, and adding an SAE architecture by registering it in one place (here, in this file)."""

import pytest
import torch

from saelab.evals.storage import sae_row
from saelab.registry import Registry
from saelab.sae import ARCHITECTURES, SAE, SAEConfig, fraction_of_variance_unexplained, load_sae
from saelab.sae.functional import dense_output, mse_loss, tied_init, unit_norm_decoder_
from saelab.sae.registry import register_architecture
from saelab.sae.synthetic import random_dictionary, sparse_feature_batch
from saelab.sae.types import Architecture, InitialState, LossOutput
from saelab.training import TrainerConfig, train_saes


def test_registry_refuses_duplicates_lists_names_and_names_an_unknown_one():
    colours: Registry[int] = Registry("colour")
    assert colours.register("red", 1) == 1 and colours.register("blue", 2) == 2
    with pytest.raises(ValueError, match="colour 'red' is already registered"):
        colours.register("red", 3)
    assert colours["red"] == 1 and list(colours) == ["red", "blue"] and colours.names() == ["blue", "red"]
    assert "red" in colours and "green" not in colours and len(colours) == 2 and colours.get("green") is None
    with pytest.raises(ValueError) as error:
        colours.lookup("green")
    assert str(error.value) == "unknown colour 'green'; choose one of: blue, red"
    with pytest.raises(KeyError):
        colours["green"]


# ---------------------------------------------------------------- a toy architecture: ReLU, no sparsity penalty


def _toy_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    return InitialState(tied_init(cfg.d_in, cfg.d_sae, generator), {})


def _toy_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    return (x @ sae.W_enc + sae.b_enc).relu()


def _toy_forward(sae: SAE, x: torch.Tensor, dead_mask, work=None):
    pre = x @ sae.W_enc + sae.b_enc
    return dense_output(sae, x, pre, pre.relu())


def _toy_loss(sae: SAE, x: torch.Tensor, target: torch.Tensor, out, coef) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    return LossOutput(mse, {"mse": mse})


TOY = Architecture(name="toy_relu", init=_toy_init, encode=_toy_encode, forward=_toy_forward, loss=_toy_loss,
                   post_step_=unit_norm_decoder_, apply_b_dec_to_input=False, unit_norm_decoder=True)


@pytest.fixture
def toy_registered():
    register_architecture(TOY)
    yield TOY
    ARCHITECTURES._entries.pop(TOY.name)  # leave the registry as the other tests expect it


def test_a_registered_toy_architecture_trains_saves_loads_and_encodes(toy_registered, tmp_path):
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    dictionary = random_dictionary(32, 16, generator)
    batches = [{"0.resid_post": sparse_feature_batch(dictionary, 64, 3.0, generator).x} for _ in range(150)]
    cfg = SAEConfig(architecture="toy_relu", d_in=16, d_sae=64, hook_site="0.resid_post")
    config = TrainerConfig(total_tokens=150 * 64, batch_size=64, lr=3e-3, log_every_steps=1, normalization_batches=2)
    rows: list[dict] = []
    [trained] = train_saes({"toy": cfg}, batches, config, tmp_path, metrics_sink=rows.extend, progress=False)
    fvu = [row["fvu"] for row in rows]
    assert max(fvu[-10:]) < 0.5 * fvu[0], fvu
    sae = load_sae(trained.paths.directory)
    assert sae.cfg.architecture == "toy_relu" and sae.architecture is TOY
    x = batches[0]["0.resid_post"]
    with torch.no_grad():
        latents = sae.encode(x)
        assert latents.shape == (64, 64) and bool((latents >= 0).all())
        assert float(fraction_of_variance_unexplained(sae.decode(latents), x)) < 0.5
    assert sae_row(sae.cfg, "toy", "saes/toy", None)["k"] is None  # uses_k=False: no k in its store row
