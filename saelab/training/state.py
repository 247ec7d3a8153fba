"""Run-time state of a training run and its round trip through a checkpoint."""

import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from saelab.sae import SAE, SAEConfig
from saelab.training.config import TrainerConfig
from saelab.training.data import DataFeed


@dataclass
class Member:
    """Run-time state of one SAE in a run (mutable; everything a checkpoint must hold about it)."""

    sae_id: str
    sae: SAE
    optimizer: torch.optim.Adam
    tokens_since_fired: Tensor
    generator: torch.Generator
    work: Any = None
    """The SAE's forward workspace (`SAE.new_workspace`), overwritten every step instead of allocating its
    large temporaries afresh; None: the forward allocates them (architectures without one)."""


@dataclass
class RunState:
    """Run-time state shared by the run."""

    step: int = 0
    input_scales: dict[str, float] | None = None
    last_checkpoint_step: int | None = None


def _member_seed(seed: int, sae_id: str) -> int:
    """Seed of an SAE's training randomness: fixed by the run seed and the SAE's id, not its position."""
    return zlib.crc32(f"{seed}:{sae_id}".encode())


def new_member(sae_id: str, cfg: SAEConfig, config: TrainerConfig, device: torch.device) -> Member:
    sae = SAE(cfg).to(device)
    optimizer = torch.optim.Adam(
        sae.parameters(), lr=config.peak_lr(sae_id), betas=config.adam_betas, fused=True
    )
    tokens_since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    generator = torch.Generator().manual_seed(_member_seed(config.seed, sae_id))
    return Member(sae_id, sae, optimizer, tokens_since_fired, generator)


def run_signature(saes: Mapping[str, SAEConfig], config: TrainerConfig) -> dict[str, Any]:
    return {"trainer": asdict(config), "saes": {sae_id: asdict(cfg) for sae_id, cfg in saes.items()}}


def checkpoint_state(members: Mapping[str, Member], run: RunState, feed: DataFeed, signature: dict) -> dict:
    return {
        "signature": signature,
        "step": run.step,
        "tokens": run.step * signature["trainer"]["batch_size"],
        "input_scales": run.input_scales,
        "data": feed.position(),
        "torch_rng": torch.get_rng_state(),
        "members": {
            sae_id: {
                "sae": m.sae.state_dict(),
                "optimizer": m.optimizer.state_dict(),
                "tokens_since_fired": m.tokens_since_fired,
                "generator": m.generator.get_state(),
            }
            for sae_id, m in members.items()
        },
    }


def restore_checkpoint(
    state: dict, members: Mapping[str, Member], feed: DataFeed, signature: dict
) -> RunState:
    """Put a run back where `state` left it; refuses a checkpoint of different settings."""
    if _comparable(state["signature"]) != _comparable(signature):
        raise ValueError(
            "the checkpoint directory holds a run with different SAE or trainer settings; "
            "use the same settings to resume, or another checkpoint directory"
        )
    for sae_id, saved in state["members"].items():
        member = members[sae_id]
        member.sae.load_state_dict(saved["sae"])
        member.optimizer.load_state_dict(saved["optimizer"])
        member.tokens_since_fired.copy_(saved["tokens_since_fired"])
        member.generator.set_state(saved["generator"])
    torch.set_rng_state(state["torch_rng"])
    feed.restore(state["data"])
    return RunState(
        step=state["step"], input_scales=state["input_scales"], last_checkpoint_step=state["step"]
    )


def _comparable(signature: dict) -> Any:
    """Tuples come back from a checkpoint as lists; compare signatures as plain JSON-like values."""
    return repr(_lists(signature))


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value
