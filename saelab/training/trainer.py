"""Train several SAEs on one stream of activation batches (many hook sites, many configs, one pass).

The trainer is handed its data iterator (site text -> Float[Tensor, "batch d_in"]), a metrics sink and a
checkpoint directory, so a test can feed it a list of tensors. Each SAE has its own Adam optimiser, reads
the site named by its config's `hook_site`, reconstructs the one named by its `target_site` (the same site for
an SAE, another one for a transcoder), and ends up saved (input and target scales folded in) under
output_dir / sae_id.
"""

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from saelab.errors import SaelabError
from saelab.sae import (
    LossCoefficients,
    SAEConfig,
    SAEPaths,
    fold_input_scale,
    fraction_of_variance_unexplained,
    get_architecture,
    latent_fire_counts,
    mean_l0,
    sae_paths,
    save_sae,
)
from saelab.training.checkpoint import load_checkpoint, save_checkpoint
from saelab.training.config import TrainerConfig
from saelab.training.data import Batch, DataFeed
from saelab.training.dead import dead_latents, update_tokens_since_fired_
from saelab.training.distributed import (
    SINGLE_PROCESS,
    RankSlice,
    World,
    average_gradients_,
    barrier,
    broadcast_module_and_optimizer_,
    current_world,
    local_batch_size,
    mean_over_ranks,
    sum_over_ranks,
)
from saelab.training.normalization import estimate_input_mean, estimate_input_scale
from saelab.training.schedule import lr_multiplier, sparsity_multiplier
from saelab.training.state import (
    Member,
    RunState,
    checkpoint_state,
    new_member,
    restore_checkpoint,
    run_signature,
)

logger = logging.getLogger(__name__)

MetricsSink = Callable[[list[dict[str, Any]]], None]


class TrainingDivergedError(SaelabError, FloatingPointError):
    """An SAE's loss became NaN or infinite; the last good checkpoint is kept."""


class TrainedSAE(NamedTuple):
    """One SAE a run produced."""

    sae_id: str
    paths: SAEPaths
    input_scale: float
    steps: int
    tokens: int
    output_scale: float | None = None
    """The target's scale of a transcoder (None: an SAE, whose target is its input)."""


def train_step(
    member: Member, x: Float[Tensor, "batch d_in"], step: int, config: TrainerConfig, log: bool,
    world: World = SINGLE_PROCESS, target: Float[Tensor, "batch d_target"] | None = None,
) -> dict[str, Any] | None:
    """One optimiser step of one SAE on one (already scaled) batch, this rank's slice of the global batch
    when training is distributed; a metrics row (this rank's numbers) if `log`. `target`: what a transcoder
    reconstructs (scaled like x; None: x itself)."""
    sae = member.sae
    target = x if target is None else target
    dead = dead_latents(member.tokens_since_fired, config.dead_window_tokens)
    auxk_window = config.auxk_window_tokens
    idle = dead if auxk_window is None else dead_latents(member.tokens_since_fired, auxk_window)
    out = sae(x, idle, member.work)
    coefficients = LossCoefficients(sparsity_multiplier(step, config.sparsity_warmup_steps))
    loss = sae.loss(x, out, coefficients, target=target)
    # every rank learns that one diverged (the others would wait in the next all-reduce until gloo's timeout)
    diverged = int(sum_over_ranks(torch.tensor([float(not bool(torch.isfinite(loss.total)))]), world).item())
    if diverged:
        ranks = f" on {diverged} of {world.size} ranks" if world.distributed else ""
        raise TrainingDivergedError(
            f"SAE {member.sae_id!r} has loss {float(loss.total.detach())} at step {step + 1}{ranks}"
        )
    lr = config.peak_lr(member.sae_id) * lr_multiplier(
        step, config.total_steps, config.lr_warmup_steps, config.lr_decay_steps
    )
    for group in member.optimizer.param_groups:
        group["lr"] = lr
    # with a workspace the gradients stay allocated: autograd adds the workspace's weight gradients into them
    member.optimizer.zero_grad(set_to_none=member.work is None)
    loss.total.backward()
    average_gradients_(sae, world)
    member.optimizer.step()
    sae.post_step_(out)
    fired = sum_over_ranks(latent_fire_counts(out, sae.cfg.d_sae), world)
    update_tokens_since_fired_(member.tokens_since_fired, fired, config.batch_size)
    if not log:
        return None
    row = {"sae_id": member.sae_id, "step": step + 1, "tokens": (step + 1) * config.batch_size, "lr": lr}
    row["loss"] = float(loss.total.detach())
    row.update({f"loss_{name}": float(value.detach()) for name, value in loss.parts.items()})
    row["mse"] = row["loss_mse"]
    row["fvu"] = float(fraction_of_variance_unexplained(out.x_hat.detach(), target))
    row["l0"] = float(mean_l0(out))
    row["dead_fraction"] = float(dead.float().mean())
    return row


# ---------------------------------------------------------------- inputs


def site_widths(cfg: SAEConfig) -> dict[str, int]:
    """The sites a dictionary reads (its input, and a transcoder's target) and their widths."""
    return {cfg.hook_site: cfg.d_in, cfg.target_site: cfg.d_target}


def check_batch(batch: Batch, saes: Mapping[str, SAEConfig], batch_size: int) -> None:
    """Every SAE's input site (and a transcoder's target site) is in the batch with shape (batch_size, width)."""
    for sae_id, cfg in saes.items():
        for site, width in site_widths(cfg).items():
            if site not in batch:
                raise ValueError(
                    f"SAE {sae_id!r} reads site {site!r}, absent from the batch (sites: {sorted(batch)})"
                )
            shape = tuple(batch[site].shape)
            if shape != (batch_size, width):
                raise ValueError(
                    f"site {site!r} batch has shape {shape}; SAE {sae_id!r} expects {(batch_size, width)}"
                )


def estimate_input_scales(
    feed: DataFeed, saes: Mapping[str, SAEConfig], config: TrainerConfig, world: World = SINGLE_PROCESS
) -> dict[str, float]:
    """Per site read (inputs and transcoders' targets), the scale giving mean norm sqrt(width) over the first
    (global) batches (1.0 where no SAE normalises)."""
    first = feed.look_ahead(config.normalization_batches)
    if not first:
        raise ValueError("the data iterator yielded no batch")
    for batch in first:
        check_batch(batch, saes, local_batch_size(config.batch_size, world))
    widths = {site: width for cfg in saes.values() for site, width in site_widths(cfg).items()}
    sites = sorted({site for cfg in saes.values() if cfg.normalize_activations for site in site_widths(cfg)})
    # every rank holds as many rows, so the global mean norm is the mean of the ranks' mean norms
    norms = [widths[site] ** 0.5 / _site_scale(site, [batch[site] for batch in first]) for site in sites]
    scales = {site: widths[site] ** 0.5 / norm for site, norm in zip(sites, mean_over_ranks(norms, world), strict=True)}
    return {site: scales.get(site, 1.0) for site in widths}


@torch.no_grad()
def start_decoder_biases_at_mean_(
    feed: DataFeed, members: Mapping[str, Member], scales: dict[str, float], config: TrainerConfig,
    world: World = SINGLE_PROCESS,
) -> None:
    """Set each fresh SAE's b_dec to the mean of its (scaled) target (its input, or a transcoder's output site)
    over the first (global) batches."""
    first = feed.look_ahead(config.normalization_batches)
    means = {}
    for site in sorted({m.sae.cfg.target_site for m in members.values()}):
        try:
            local = estimate_input_mean([batch[site] for batch in first])
        except ValueError as exc:
            raise ValueError(f"site {site}: {exc}") from None
        means[site] = sum_over_ranks(local, world) / world.size
    for m in members.values():
        cfg = m.sae.cfg
        scale = scales[cfg.target_site] if cfg.normalize_activations else 1.0
        m.sae.b_dec.copy_(means[cfg.target_site] * scale)


def _site_scale(site: str, rows: list[Float[Tensor, "batch d_in"]]) -> float:
    try:
        return estimate_input_scale(rows)
    except ValueError as exc:
        raise ValueError(f"site {site}: {exc}") from None


class ScaledBatch(NamedTuple):
    """Each SAE's input and target (the same tensor for an SAE), on the device, scaled if it normalises."""

    inputs: dict[str, Float[Tensor, "batch d_in"]]
    targets: dict[str, Float[Tensor, "batch d_target"]]


def scaled_batch(
    batch: Batch, saes: Mapping[str, SAEConfig], scales: dict[str, float], device: torch.device
) -> ScaledBatch:
    """Each SAE's input site's batch and target site's batch on the device, each times its own site's scale
    if the SAE normalises (one tensor per site, dtype and scaling, shared by every SAE that reads it)."""
    tensors: dict[tuple[str, bool, torch.dtype], Tensor] = {}

    def scaled(site: str, cfg: SAEConfig) -> Tensor:
        key = (site, cfg.normalize_activations, cfg.torch_dtype)
        if key not in tensors:
            x = batch[site].to(device=device, dtype=cfg.torch_dtype)
            tensors[key] = x * scales[site] if cfg.normalize_activations else x
        return tensors[key]

    return ScaledBatch({sae_id: scaled(cfg.hook_site, cfg) for sae_id, cfg in saes.items()},
                       {sae_id: scaled(cfg.target_site, cfg) for sae_id, cfg in saes.items()})


# ---------------------------------------------------------------- the run


def _check_sae_ids(saes: Mapping[str, SAEConfig]) -> None:
    if not saes:
        raise ValueError("no SAE to train; pass at least one {sae_id: SAEConfig}")
    for sae_id in saes:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sae_id):
            raise ValueError(
                f"SAE id {sae_id!r} must be letters, digits, '.', '_' or '-' (it names a directory)"
            )


def resample_if_due(
    members: Mapping[str, Member], scaled: ScaledBatch, step: int, config: TrainerConfig,
    world: World = SINGLE_PROCESS,
) -> None:
    """Every dead window, resample the dead latents of architectures that do so (not near the end);
    distributed, every rank then takes rank 0's resampled SAE."""
    tokens, window = (step + 1) * config.batch_size, config.dead_window_tokens
    crossed = tokens // window > (tokens - config.batch_size) // window
    if not (config.resample_dead and crossed and config.total_tokens - tokens >= window):
        return
    for sae_id, m in members.items():
        resampler = m.sae.architecture.resample_dead_
        dead = dead_latents(m.tokens_since_fired, window)
        if resampler is not None and bool(dead.any()):
            count = resampler(m.sae, m.optimizer, dead, scaled.inputs[sae_id], m.generator, scaled.targets[sae_id])
            broadcast_module_and_optimizer_(m.sae, m.optimizer, world)
            m.tokens_since_fired[dead] = 0
            logger.info("step %d: resampled %d dead latents of %s", step + 1, count, sae_id)


def _postfix(rows: list[dict[str, Any]]) -> dict[str, str]:
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {
        "loss": f"{mean('loss'):.4g}",
        "L0": f"{mean('l0'):.1f}",
        "dead": f"{100 * max(r['dead_fraction'] for r in rows):.0f}%",
    }


def _checkpoint_due(step: int, config: TrainerConfig) -> bool:
    every = config.checkpoint_every_tokens
    if every is None:
        return False
    tokens = (step + 1) * config.batch_size
    return tokens // every > (tokens - config.batch_size) // every


def save_trained(
    members: Mapping[str, Member], run: RunState, output_dir: Path, config: TrainerConfig,
    world: World = SINGLE_PROCESS,
) -> list[TrainedSAE]:
    """Save every SAE (input and target scales folded in) under output_dir / sae_id (rank 0 writes; all
    return)."""
    trained = []
    for sae_id, m in members.items():
        cfg = m.sae.cfg
        scale, output_scale = (
            (run.input_scales[cfg.hook_site], run.input_scales[cfg.target_site]) if cfg.normalize_activations
            else (1.0, 1.0)
        )
        if world.is_main:
            paths = save_sae(fold_input_scale(m.sae, scale, output_scale), output_dir / sae_id)
        else:
            paths = sae_paths(output_dir / sae_id)
        trained.append(TrainedSAE(sae_id, paths, scale, run.step, run.step * config.batch_size,
                                  output_scale if cfg.is_transcoder else None))
    barrier(world)
    return trained


class RunContext(NamedTuple):
    """What the steps of a run share (fixed for the run)."""

    saes: Mapping[str, SAEConfig]
    config: TrainerConfig
    members: dict[str, Member]
    feed: DataFeed
    checkpoint_dir: Path | None
    metrics_sink: MetricsSink | None
    signature: dict[str, Any]
    device: torch.device
    world: World


def _diverged(error: TrainingDivergedError, ctx: RunContext, run: RunState) -> TrainingDivergedError:
    if run.last_checkpoint_step is None:
        kept = "no checkpoint had been written"
    else:
        kept = f"the last good checkpoint (step {run.last_checkpoint_step}) is kept in {ctx.checkpoint_dir}"
    return TrainingDivergedError(f"{error}; training stopped and {kept}; lower lr or check the activations")


def _save_checkpoint(ctx: RunContext, run: RunState) -> None:
    if ctx.checkpoint_dir is not None and ctx.world.is_main:
        save_checkpoint(ctx.checkpoint_dir, checkpoint_state(ctx.members, run, ctx.feed, ctx.signature))
        run.last_checkpoint_step = run.step


def run_one_batch(ctx: RunContext, run: RunState, batch: Batch) -> list[dict[str, Any]]:
    """Train every SAE on one batch; metrics rows on logging steps."""
    config, world = ctx.config, ctx.world
    check_batch(batch, ctx.saes, local_batch_size(config.batch_size, world))
    scaled = scaled_batch(batch, ctx.saes, run.input_scales, ctx.device)
    log = (run.step + 1) % config.log_every_steps == 0 or run.step + 1 == config.total_steps
    try:
        rows = [train_step(m, scaled.inputs[sae_id], run.step, config, log, world, scaled.targets[sae_id])
                for sae_id, m in ctx.members.items()]
    except TrainingDivergedError as error:
        raise _diverged(error, ctx, run) from None
    resample_if_due(ctx.members, scaled, run.step, config, world)
    run.step += 1
    return [average_row(row, world) for row in rows if row is not None]


def average_row(row: dict[str, Any], world: World) -> dict[str, Any]:
    """A metrics row with its measured values averaged over ranks (ids, step, tokens and lr are shared)."""
    if not world.distributed:
        return row
    keys = [key for key in row if key not in ("sae_id", "step", "tokens", "lr")]
    return row | dict(zip(keys, mean_over_ranks([float(row[key]) for key in keys], world), strict=True))


def run_steps(ctx: RunContext, run: RunState, progress: bool) -> None:
    """The training loop, from run.step to the end of the run (or of the data)."""
    config = ctx.config
    tokens_per_step = config.batch_size
    bar = tqdm(
        total=config.total_steps * tokens_per_step,
        initial=run.step * tokens_per_step,
        unit="tok",
        unit_scale=True,
        desc="training SAEs",
        disable=not progress,
    )
    with bar:
        while run.step < config.total_steps:
            batch = ctx.feed.next()
            if batch is None:
                logger.warning("the data ran out after %d of %d steps", run.step, config.total_steps)
                break
            rows = run_one_batch(ctx, run, batch)
            if rows:
                if ctx.metrics_sink is not None and ctx.world.is_main:
                    ctx.metrics_sink(rows)
                bar.set_postfix(_postfix(rows))
            bar.update(tokens_per_step)
            if _checkpoint_due(run.step - 1, config):
                _save_checkpoint(ctx, run)


def train_saes(
    saes: Mapping[str, SAEConfig],
    batches: Iterable[Batch],
    config: TrainerConfig,
    output_dir: str | os.PathLike[str],
    checkpoint_dir: str | os.PathLike[str] | None = None,
    metrics_sink: MetricsSink | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_start: Callable[[], None] | None = None,
) -> list[TrainedSAE]:
    """Train every SAE in `saes` (sae_id -> config) on `batches`, resuming from `checkpoint_dir` if it
    holds a checkpoint of the same run; save them under output_dir / sae_id and return where.
    `on_start` is called (on rank 0) once the run is set up and its first batches passed their checks,
    before the first step: a caller records the run there, so that bad data is refused without a trace.

    Inside an initialised process group (`torchrun`, see saelab.training.distributed) every rank passes the
    same global batches of `config.batch_size` rows and trains on its own slice of each, data-parallel."""
    _check_sae_ids(saes)
    unknown = sorted({sae_id for sae_id, _ in config.sae_lrs} - set(saes))
    if unknown:
        raise ValueError(f"sae_lrs names SAEs not in this run: {unknown}; the run trains {sorted(saes)}")
    device = torch.device(device)
    world = current_world()
    local_batch_size(config.batch_size, world)
    _check_data_parallel(saes, world)
    members = {sae_id: new_member(sae_id, cfg, config, device) for sae_id, cfg in saes.items()}
    feed = DataFeed(RankSlice(batches, world) if world.distributed else batches)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ctx = RunContext(
        saes, config, members, feed, checkpoint_dir, metrics_sink, run_signature(saes, config), device, world
    )
    saved = load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    run = restore_checkpoint(saved, members, feed, ctx.signature) if saved is not None else RunState()
    for member in members.values():
        broadcast_module_and_optimizer_(member.sae, member.optimizer, world)  # every rank starts from rank 0's
        member.work = member.sae.new_workspace(local_batch_size(config.batch_size, world))
    if run.input_scales is None:  # a fresh run (a resumed one restored both from its checkpoint)
        run.input_scales = estimate_input_scales(feed, saes, config, world)
        if config.init_b_dec_to_mean:
            start_decoder_biases_at_mean_(feed, members, run.input_scales, config, world)
    if on_start is not None and world.is_main:
        on_start()
    run_steps(ctx, run, progress and world.is_main)
    if run.last_checkpoint_step != run.step:
        _save_checkpoint(ctx, run)
    return save_trained(members, run, Path(output_dir), config, world)


def _check_data_parallel(saes: Mapping[str, SAEConfig], world: World) -> None:
    """Refuse, under more than one process, architectures whose step selects over the whole batch."""
    if not world.distributed:
        return
    batch_level = sorted(i for i, cfg in saes.items() if get_architecture(cfg.architecture).selects_over_batch)
    if batch_level:
        raise ValueError(
            f"SAEs {batch_level} select latents over the whole batch, which {world.size} data-parallel processes "
            "would each do over their own slice; train them in one process (without torchrun)"
        )


def save_checkpointed(
    checkpoint_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> list[TrainedSAE]:
    """Save every SAE of the checkpoint in `checkpoint_dir` (input and target scales folded in) under
    output_dir / sae_id, as the run would save them had it stopped at the checkpoint's step: what a run that
    cannot finish (killed, out of time) has trained so far."""
    state = load_checkpoint(checkpoint_dir)
    if state is None:
        raise ValueError(f"no checkpoint in {checkpoint_dir}; train with a checkpoint directory first")
    config = TrainerConfig(**{**state["signature"]["trainer"], "adam_betas": tuple(
        state["signature"]["trainer"]["adam_betas"]), "sae_lrs": tuple(
        tuple(pair) for pair in state["signature"]["trainer"]["sae_lrs"])})
    members = {}
    for sae_id, fields in state["signature"]["saes"].items():
        members[sae_id] = new_member(sae_id, SAEConfig(**fields), config, torch.device(device))
        members[sae_id].sae.load_state_dict(state["members"][sae_id]["sae"])
    run = RunState(step=state["step"], input_scales=state["input_scales"])
    return save_trained(members, run, Path(output_dir), config)
