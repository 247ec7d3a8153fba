"""Run by tests/test_training_distributed.py, once plainly and once under torchrun: trains two SAEs on the
same global batches and writes them (and rank 0's metric rows) under the output directory."""

import json
import sys
from pathlib import Path

import torch

from saelab.cli.main import run_process
from saelab.sae import SAEConfig
from saelab.sae.synthetic import random_dictionary, sparse_feature_batch
from saelab.training import TrainerConfig, TrainingDivergedError, train_saes
from saelab.training.distributed import current_world, init_from_env

GLOBAL_BATCH, STEPS, D_IN = 64, 24, 16


def global_batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    dictionary = random_dictionary(48, D_IN, generator)
    return [{"0.resid_post": sparse_feature_batch(dictionary, GLOBAL_BATCH, 3.0, generator).x * 5.0,
             "1.resid_post": sparse_feature_batch(dictionary, GLOBAL_BATCH, 3.0, generator).x}
            for _ in range(STEPS)]


def main(out: Path, nan_from_step: int | None = None) -> None:
    torch.set_num_threads(1)
    world = init_from_env()
    saes = {
        "topk": SAEConfig(architecture="topk", d_in=D_IN, d_sae=64, k=4, hook_site="0.resid_post", seed=1),
        "jumprelu": SAEConfig(architecture="jumprelu", d_in=D_IN, d_sae=32, l0_coefficient=0.5,
                              hook_site="1.resid_post", seed=2),
    }
    config = TrainerConfig(total_tokens=GLOBAL_BATCH * STEPS, batch_size=GLOBAL_BATCH, lr=3e-3,
                           log_every_steps=8, checkpoint_every_tokens=GLOBAL_BATCH * 10)
    rows = []
    batches = global_batches()
    if nan_from_step is not None:  # NaN in the second half of the rows: rank 1's slice when there are two
        for batch in batches[nan_from_step:]:
            batch["1.resid_post"][GLOBAL_BATCH // 2:] = float("nan")
        try:
            train_saes(saes, batches, config, out / "saes", out / "checkpoint", progress=False)
        except TrainingDivergedError as error:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"rank{world.rank}.json").write_text(json.dumps({"diverged": str(error)}))
        return
    trained = train_saes(saes, batches, config, out / "saes", out / "checkpoint",
                         metrics_sink=rows.extend, progress=False)
    (out / f"rank{world.rank}.json").write_text(json.dumps(
        {"world": list(current_world()), "rows": rows, "trained": [t.sae_id for t in trained]}))


if __name__ == "__main__":  # ends as `saelab` does under torchrun: its exit path is the one tested
    nan_from = int(sys.argv[2]) if len(sys.argv) > 2 else None
    sys.exit(run_process(lambda: main(Path(sys.argv[1]), nan_from) or 0))
