"""The trainer on lists of synthetic batches: quality, multi-SAE independence, normalisation, errors, resume."""

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from saelab.sae import SAEConfig, fraction_of_variance_unexplained, load_sae
from saelab.sae.synthetic import random_dictionary, sparse_feature_batch
from saelab.training import TrainerConfig, TrainingDivergedError, load_checkpoint, train_saes

D_IN, D_SAE, BATCH = 32, 128, 128
SITE_A, SITE_B = "0.resid_post", "1.mlp_out"


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_batches(n: int, seed: int = 0, scale: float = 7.0) -> list[dict[str, torch.Tensor]]:
    """Two sites of activations made from known sparse dictionaries, deliberately not at unit scale."""
    generator = torch.Generator().manual_seed(seed)
    dictionaries = {
        SITE_A: random_dictionary(64, D_IN, generator),
        SITE_B: random_dictionary(48, D_IN, generator),
    }
    return [
        {site: sparse_feature_batch(d, BATCH, 4.0, generator).x * scale for site, d in dictionaries.items()}
        for _ in range(n)
    ]


def sweep() -> dict[str, SAEConfig]:
    """A small sweep over sites, architectures and sparsity settings."""
    return {
        "a-topk4": SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=4, hook_site=SITE_A, seed=1),
        "a-relu": SAEConfig(
            architecture="relu_l1", d_in=D_IN, d_sae=D_SAE, l1_coefficient=2.0, hook_site=SITE_A
        ),
        "b-batchtopk8": SAEConfig(
            architecture="batchtopk", d_in=D_IN, d_sae=64, k=8, hook_site=SITE_B, seed=2
        ),
        "b-vq": SAEConfig(architecture="vq", d_in=D_IN, d_sae=64, k=1, hook_site=SITE_B, seed=3),
    }


def trainer_config(steps: int, **fields: Any) -> TrainerConfig:
    defaults = {
        "lr": 3e-3,
        "dead_window_tokens": 10 * BATCH,
        "log_every_steps": 10,
        "normalization_batches": 4,
    }
    return TrainerConfig(total_tokens=steps * BATCH, batch_size=BATCH, **{**defaults, **fields})


def saved_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return dict(load_sae(directory).state_dict())


def test_trainer_drives_fvu_down_and_saves_saes_for_raw_activations(tmp_path: Path) -> None:
    rows: list[dict] = []
    batches = synthetic_batches(200)
    cfg = {"topk": SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=4, hook_site=SITE_A)}
    config = trainer_config(200, log_every_steps=1)
    trained = train_saes(cfg, batches, config, tmp_path / "out", metrics_sink=rows.extend, progress=False)
    fvu = [row["fvu"] for row in rows]
    assert rows[0]["step"] == 1 and rows[-1]["step"] == 200 and rows[-1]["tokens"] == 200 * BATCH
    assert {"sae_id", "loss", "loss_mse", "loss_auxk", "mse", "fvu", "l0", "dead_fraction", "lr"} <= set(
        rows[0]
    )
    assert max(fvu[-10:]) < min(0.5 * fvu[0], 0.3), fvu
    # the input scale (mean norm sqrt(d_in) over the first batches) is folded into the saved weights
    first = torch.cat([b[SITE_A] for b in batches[:4]])
    assert trained[0].input_scale == pytest.approx(
        math.sqrt(D_IN) / float(first.norm(dim=-1).mean()), rel=1e-6
    )
    sae = load_sae(trained[0].paths.directory)
    x = batches[-1][SITE_A]
    with torch.no_grad():
        assert float(fraction_of_variance_unexplained(sae(x).x_hat, x)) < 0.3


@pytest.mark.parametrize("at_mean", [True, False])
def test_decoder_bias_starts_at_the_input_mean_unless_told_otherwise(tmp_path: Path, at_mean: bool) -> None:
    offset = torch.linspace(-3.0, 5.0, D_IN)  # a mean far from zero, different in every feature
    batches = [{site: x + offset for site, x in batch.items()} for batch in synthetic_batches(4, seed=5)]
    cfg = {
        "topk": SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=4, hook_site=SITE_A),
        "raw": SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=D_SAE, hook_site=SITE_B,
                         normalize_activations=False),
    }
    # one step at a vanishing lr: the saved b_dec (input scale folded back in) is where training started
    config = trainer_config(1, lr=1e-12, init_b_dec_to_mean=at_mean)
    train_saes(cfg, batches, config, tmp_path / "out", progress=False)
    for sae_id, site in (("topk", SITE_A), ("raw", SITE_B)):
        expected = torch.cat([b[site] for b in batches]).mean(0) if at_mean else torch.zeros(D_IN)
        torch.testing.assert_close(load_sae(tmp_path / "out" / sae_id).b_dec, expected, atol=1e-4, rtol=1e-4)


def test_training_several_saes_together_equals_training_each_alone(tmp_path: Path) -> None:
    batches = synthetic_batches(40, seed=1)
    config = trainer_config(40, dead_window_tokens=5 * BATCH)  # short window: AuxK and resampling happen
    together = train_saes(sweep(), batches, config, tmp_path / "together", progress=False)
    assert [t.sae_id for t in together] == list(sweep())
    for sae_id, cfg in sweep().items():
        alone = train_saes({sae_id: cfg}, batches, config, tmp_path / "alone", progress=False)[0]
        mine, theirs = saved_tensors(alone.paths.directory), saved_tensors(tmp_path / "together" / sae_id)
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), f"{sae_id}.{name}"


def test_auxk_starts_on_latents_idle_for_its_own_shorter_window(tmp_path: Path) -> None:
    batches = synthetic_batches(8, seed=4)
    cfg = {"topk": SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=4, hook_site=SITE_A)}
    auxk = {}
    for window in (None, 2 * BATCH):
        rows: list[dict] = []
        config = trainer_config(8, dead_window_tokens=100 * BATCH, auxk_window_tokens=window, log_every_steps=1)
        train_saes(cfg, batches, config, tmp_path / str(window), metrics_sink=rows.extend, progress=False)
        auxk[window] = [row["loss_auxk"] for row in rows]
        assert all(row["dead_fraction"] == 0 for row in rows)  # the metric keeps the (long) dead window
    assert auxk[None] == [0.0] * 8
    assert auxk[2 * BATCH][:2] == [0.0, 0.0] and all(loss > 0 for loss in auxk[2 * BATCH][2:]), auxk


def test_an_sae_with_its_own_lr_trains_as_it_would_alone_at_that_lr(tmp_path: Path) -> None:
    batches = synthetic_batches(12, seed=3)
    cfgs = {sae_id: cfg for sae_id, cfg in sweep().items() if sae_id in ("a-topk4", "a-relu")}
    rows: list[dict] = []
    config = trainer_config(12, lr=1e-3, sae_lrs=(("a-topk4", 4e-3),), log_every_steps=12)
    train_saes(cfgs, batches, config, tmp_path / "together", metrics_sink=rows.extend, progress=False)
    assert {row["sae_id"]: row["lr"] for row in rows} == pytest.approx({"a-topk4": 4e-3, "a-relu": 1e-3})
    for sae_id, lr in (("a-topk4", 4e-3), ("a-relu", 1e-3)):
        alone = train_saes({sae_id: cfgs[sae_id]}, batches, trainer_config(12, lr=lr), tmp_path / sae_id,
                           progress=False)[0]
        mine, theirs = saved_tensors(alone.paths.directory), saved_tensors(tmp_path / "together" / sae_id)
        assert all(torch.equal(mine[name], theirs[name]) for name in mine), sae_id
    with pytest.raises(ValueError, match=r"sae_lrs names SAEs not in this run: \['a-topk'\]"):
        train_saes(cfgs, batches, trainer_config(12, sae_lrs=(("a-topk", 1e-3),)), tmp_path / "x", progress=False)


def test_non_finite_loss_stops_with_the_sae_and_step_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    batches = synthetic_batches(20, seed=2)
    batches[12][SITE_B] = batches[12][SITE_B].clone()
    batches[12][SITE_B][3, 5] = float("nan")
    config = trainer_config(20, checkpoint_every_tokens=5 * BATCH)
    with pytest.raises(TrainingDivergedError, match=r"'b-batchtopk8'.*step 13.*step 10"):
        train_saes(sweep(), batches, config, tmp_path / "out", tmp_path / "ckpt", progress=False)
    assert load_checkpoint(tmp_path / "ckpt")["step"] == 10
    assert not (tmp_path / "out").exists()


def test_bad_batches_and_ids_are_refused(tmp_path: Path) -> None:
    cfg = {"a": SAEConfig(architecture="topk", d_in=D_IN, d_sae=D_SAE, k=4, hook_site="5.attn_z")}
    with pytest.raises(ValueError, match="'5.attn_z'"):
        train_saes(
            cfg, synthetic_batches(3), trainer_config(3, normalization_batches=1), tmp_path, progress=False
        )
    wide = {"a": SAEConfig(architecture="topk", d_in=D_IN + 1, d_sae=D_SAE, k=4, hook_site=SITE_A)}
    with pytest.raises(ValueError, match=r"\(128, 32\)"):
        train_saes(
            wide, synthetic_batches(3), trainer_config(3, normalization_batches=1), tmp_path, progress=False
        )
    with pytest.raises(ValueError, match="'a/b'"):
        train_saes(
            {"a/b": sweep()["a-topk4"]}, synthetic_batches(3), trainer_config(3), tmp_path, progress=False
        )


class CrashingBatches:
    """A stateful batch iterator (state_dict / load_state_dict, like saelab.activations') that can crash."""

    def __init__(self, batches: list, crash_at: int | None = None) -> None:
        self.batches, self.crash_at, self.position = batches, crash_at, 0

    def __iter__(self) -> "CrashingBatches":
        return self

    def __next__(self) -> dict:
        if self.position == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        if self.position >= len(self.batches):
            raise StopIteration
        self.position += 1
        return self.batches[self.position - 1]

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]


def test_resume_from_a_stateful_iterator_after_a_crash_is_exact(tmp_path: Path) -> None:
    batches = synthetic_batches(30, seed=3)
    config = trainer_config(30, checkpoint_every_tokens=4 * BATCH, dead_window_tokens=5 * BATCH)
    train_saes(sweep(), CrashingBatches(batches), config, tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_saes(
            sweep(),
            CrashingBatches(batches, 19),
            config,
            tmp_path / "resumed",
            tmp_path / "ck",
            progress=False,
        )
    assert load_checkpoint(tmp_path / "ck")["step"] == 16
    train_saes(
        sweep(), CrashingBatches(batches), config, tmp_path / "resumed", tmp_path / "ck", progress=False
    )
    for sae_id in sweep():
        straight, resumed = (
            saved_tensors(tmp_path / "straight" / sae_id),
            saved_tensors(tmp_path / "resumed" / sae_id),
        )
        for name in straight:
            assert torch.equal(straight[name], resumed[name]), f"{sae_id}.{name}"


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path: Path) -> None:
    batches = synthetic_batches(6, seed=4)
    train_saes(sweep(), batches, trainer_config(6), tmp_path / "out", tmp_path / "ck", progress=False)
    with pytest.raises(ValueError, match="different SAE or trainer settings"):
        train_saes(
            sweep(), batches, trainer_config(6, lr=1e-3), tmp_path / "out", tmp_path / "ck", progress=False
        )


RUN_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_training_trainer import BATCH, synthetic_batches, sweep, trainer_config
from saelab.training import train_saes

out, checkpoints, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])

def sink(rows):
    print("step", rows[0]["step"], flush=True)
    time.sleep(pause)  # a slow sink, so that the kill lands mid-run

config = trainer_config(60, checkpoint_every_tokens=3 * BATCH, dead_window_tokens=5 * BATCH, log_every_steps=1)
train_saes(sweep(), synthetic_batches(60, seed=5), config, out, None if checkpoints == "-" else checkpoints,
           metrics_sink=sink, progress=False)
"""


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_ends_bit_identical(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(tests=str(Path(__file__).parent)))
    repo = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    run = lambda *args: [sys.executable, str(script), *map(str, args)]  # noqa: E731
    subprocess.run(run(tmp_path / "straight", "-", 0), check=True, env=env, cwd=repo, capture_output=True)

    kill_step = random.randint(5, 50)
    victim = subprocess.Popen(
        run(tmp_path / "killed", tmp_path / "ck", 0.03), stdout=subprocess.PIPE, text=True, env=env, cwd=repo
    )
    for line in victim.stdout:
        if line.split() == ["step", str(kill_step)]:
            os.kill(victim.pid, signal.SIGKILL)
            break
    victim.wait()
    victim.stdout.close()
    assert victim.returncode == -signal.SIGKILL, f"the run ended before step {kill_step}"
    assert not (tmp_path / "killed").exists()
    checkpoint_step = load_checkpoint(tmp_path / "ck")["step"]
    assert 0 < checkpoint_step < 60

    subprocess.run(
        run(tmp_path / "killed", tmp_path / "ck", 0), check=True, env=env, cwd=repo, capture_output=True
    )
    for sae_id in sweep():
        straight, resumed = (
            saved_tensors(tmp_path / "straight" / sae_id),
            saved_tensors(tmp_path / "killed" / sae_id),
        )
        for name in straight:
            assert torch.equal(straight[name], resumed[name]), f"{sae_id}.{name} (killed at step {kill_step})"
