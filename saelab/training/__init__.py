"""Training SAEs: many SAEs (sites x configs) on one stream of activation batches.

from saelab.training import TrainerConfig, train_saes
trained = train_saes({"l2-topk32": sae_cfg}, batches, TrainerConfig(total_tokens=..., batch_size=4096),
                     output_dir="saes", checkpoint_dir="checkpoints/run1", metrics_sink=store.add_rows)
"""

from saelab.training.allocator import reuse_freed_memory
from saelab.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from saelab.training.config import TrainerConfig
from saelab.training.normalization import estimate_input_scale
from saelab.training.schedule import lr_multiplier, sparsity_multiplier
from saelab.training.trainer import (
    MetricsSink,
    TrainedSAE,
    TrainingDivergedError,
    save_checkpointed,
    train_saes,
)

__all__ = [
    "MetricsSink",
    "TrainedSAE",
    "TrainerConfig",
    "TrainingDivergedError",
    "checkpoint_path",
    "estimate_input_scale",
    "load_checkpoint",
    "lr_multiplier",
    "reuse_freed_memory",
    "save_checkpoint",
    "sparsity_multiplier",
    "save_checkpointed",
    "train_saes",
]
