"""Data-parallel training under torchrun (2 CPU processes, gloo) takes the same steps as one process with
the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saelab.sae import SAEConfig, load_sae
from saelab.training.distributed import RankSlice, World, local_batch_size
from saelab.training.trainer import _check_data_parallel

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(out: Path, processes: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
    ]
    command = [*(launcher if processes > 1 else [sys.executable]), str(WORKER), str(out), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    run_worker(tmp_path / "one", 1)
    run_worker(tmp_path / "two", 2)
    for sae_id in ("topk", "jumprelu"):
        single = load_sae(tmp_path / "one" / "saes" / sae_id)
        parallel = load_sae(tmp_path / "two" / "saes" / sae_id)
        for name, weight in single.state_dict().items():
            torch.testing.assert_close(parallel.state_dict()[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [[0, 2], [1, 2]]
    assert ranks[1]["rows"] == []  # only rank 0 writes metric rows
    one = json.loads((tmp_path / "one" / "rank0.json").read_text())["rows"]
    assert [(r["sae_id"], r["step"], r["tokens"]) for r in ranks[0]["rows"]] == \
        [(r["sae_id"], r["step"], r["tokens"]) for r in one]
    for mine, theirs in zip(ranks[0]["rows"], one, strict=True):
        assert mine["mse"] == pytest.approx(theirs["mse"], rel=1e-3)  # averaged over ranks = global mean
    for sae_id in ("topk", "jumprelu"):  # it trained: the loss fell
        mse = [r["mse"] for r in one if r["sae_id"] == sae_id]
        assert mse[-1] < 0.8 * mse[0]
    assert (tmp_path / "two" / "checkpoint" / "trainer_state.pt").is_file()


@pytest.mark.slow
def test_a_loss_that_diverges_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    run_worker(tmp_path, 2, "20")  # NaN rows in rank 1's slice from step 21 on; it returns, or times out
    messages = [json.loads((tmp_path / f"rank{r}.json").read_text())["diverged"] for r in (0, 1)]
    for message in messages:
        assert "SAE 'jumprelu' has loss" in message and "at step 21 on 1 of 2 ranks" in message, message
    assert "nan" in messages[1] and "nan" not in messages[0].split(" at step")[0]  # rank 0's loss was fine


def test_rank_slices_are_disjoint_and_cover_the_global_batch() -> None:
    batches = [{"s": torch.arange(12.0).reshape(6, 2) + 100 * i} for i in range(3)]
    slices = [list(RankSlice(batches, World(rank, 3))) for rank in range(3)]
    for step, batch in enumerate(batches):
        torch.testing.assert_close(torch.cat([s[step]["s"] for s in slices]), batch["s"])


def test_a_global_batch_that_does_not_split_evenly_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size 10 does not split evenly over 3 processes"):
        local_batch_size(10, World(0, 3))


def test_batchtopk_is_refused_under_data_parallelism_and_trains_in_one_process() -> None:
    saes = {"b": SAEConfig(architecture="batchtopk", d_in=8, d_sae=16, k=2, hook_site="0.resid_post"),
            "t": SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2, hook_site="0.resid_post")}
    refusal = r"SAEs \['b'\] select latents over the whole batch, which 2 data-parallel processes"
    with pytest.raises(ValueError, match=refusal):
        _check_data_parallel(saes, World(1, 2))
    _check_data_parallel(saes, World(0, 1))  # one process: allowed
    _check_data_parallel({"t": saes["t"]}, World(0, 2))  # per-row selection splits over ranks
