"""Train a sweep of SAEs in a workspace: data from the workspace's cached activations when they are there,
else streamed from the model; metrics into the store; SAEs under `saes/`; re-running resumes or reuses."""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from saelab.activations import BatchConfig, parse_sites, store_paths
from saelab.activations.batches import store_batches, stream_batches
from saelab.activations.sites import parse_site_pair
from saelab.capacity import require_memory
from saelab.db import ResultsStore
from saelab.sae import SAEConfig, get_architecture, sae_paths
from saelab.workflows.storage import sae_row
from saelab.workspace import Workspace

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from torch import Tensor
    from transformer_lens import HookedTransformer

    from saelab.activations.sites import HookSite
    from saelab.training import TrainerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SAESpec:
    """One SAE of a sweep, as a user writes it."""

    site: str
    """Hook site text, e.g. "2.resid_post"."""
    architecture: str = "topk"
    """A registered architecture (saelab.sae.ARCHITECTURES)."""
    width: int = 4096
    """Number of latents."""
    k: int = 32
    """Active latents (topk, batchtopk) or codes per input (vq)."""
    l1_coefficient: float = 5.0
    """L1 weight (relu_l1, relu_l1_anthropic, gated)."""
    l0_coefficient: float = 1.0
    """L0 weight (jumprelu)."""
    lr: float | None = None
    """Peak learning rate of this SAE; None: the run's `lr`, or else its architecture's `default_lr`."""
    output_site: str = ""
    """Site a transcoder reconstructs (e.g. "1.mlp_out" for `site` "1.resid_mid"); "": an SAE of `site`."""
    skip_connection: bool = False
    """A skip-transcoder: add a linear skip term x @ W_skip (Paulo et al. 2025); needs `output_site`."""

    def __post_init__(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr of the {self.architecture} SAE on {self.site} must be positive, got {self.lr}")
        if self.skip_connection and not self.output_site:
            raise ValueError(f"skip_connection needs a transcoder: give the {self.architecture} dictionary on "
                             f"{self.site} an output_site")


TRANSCODER_ARCHS: dict[str, tuple[str, bool]] = {"transcoder": ("topk", False), "skip_transcoder": ("topk", True)}
"""`saelab train --arch` names that are dictionaries rather than architectures: name -> (architecture, skip term).
They take IN:OUT site pairs; any architecture that can be a transcoder also takes pairs."""


def _hashed(entry: "SAESpec") -> dict:
    """The fields of an entry that identify it; the transcoder fields only when set, so that an SAE keeps the
    id (and its run the hash) it had before transcoders existed."""
    fields = asdict(entry)
    for name, default in (("output_site", ""), ("skip_connection", False)):
        if fields[name] == default:
            del fields[name]
    return fields


@dataclass(frozen=True)
class TrainSpec:
    """A training run: one model, one pass over the data, many SAEs."""

    model: str
    """Model name or directory."""
    saes: tuple[SAESpec, ...]
    """The SAEs to train on each batch."""
    tokens: int = 2_000_000
    """Activation rows each SAE trains on."""
    batch_size: int = 4096
    """Rows per step."""
    lr: float | None = None
    """Peak Adam learning rate of every SAE that sets none; None: each architecture's `default_lr`
    (TopK-style SAEs train well at a higher rate than L1/L0-penalised ones, see BENCHMARKS.md)."""
    seed: int = 0
    """Seed of SAE initialisation and batch order."""
    source: str = "bundled"
    """Token source when activations are streamed (see `saelab cache --source`)."""
    context_len: int = 128
    """Tokens per context when streaming."""
    checkpoint_every_tokens: int | None = 500_000
    """Atomic checkpoint interval; a killed run resumes from the last one."""
    log_every_steps: int = 10
    """Metric rows every this many steps."""
    extra: dict = field(default_factory=dict, compare=False)
    """Free-form notes stored with the run."""

    def __post_init__(self) -> None:
        if not self.saes:
            raise ValueError("a training run needs at least one SAE")
        if self.tokens <= 0 or self.batch_size <= 0:
            raise ValueError(f"tokens ({self.tokens}) and batch_size ({self.batch_size}) must be positive")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    @property
    def run_hash(self) -> str:
        """Identifies the run: the same spec resumes the same checkpoint."""
        payload = {k: v for k, v in asdict(self).items() if k != "extra"}
        payload["saes"] = [_hashed(entry) for entry in self.saes]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


class TrainResult(NamedTuple):
    run_id: str
    sae_ids: list[str]
    paths: dict[str, Path]
    reused: bool
    """True when every SAE was already in the workspace and nothing was trained."""


def sae_id_of(spec: SAESpec, run_hash: str) -> str:
    """A readable, unique id: site (IN-to-OUT for a transcoder), architecture ("-skip" for a skip-transcoder),
    width, k (only for architectures that use k), and a hash of the SAE and its training run."""
    digest = hashlib.sha256(json.dumps([_hashed(spec), run_hash], sort_keys=True).encode()).hexdigest()[:6]
    k = f"-k{spec.k}" if get_architecture(spec.architecture).uses_k else ""
    sites = f"{spec.site}-to-{spec.output_site}" if spec.output_site else spec.site
    skip = "-skip" if spec.skip_connection else ""
    return f"{sites}-{spec.architecture}{skip}-w{spec.width}{k}-{digest}"


def build_sae_configs(spec: TrainSpec, model_cfg) -> dict[str, SAEConfig]:
    """SAE configs for every entry of the sweep (validates sites, widths, k, architectures)."""
    configs = {}
    for entry in spec.saes:
        text = f"{entry.site}:{entry.output_site}" if entry.output_site else entry.site
        site, output = (s.validate(model_cfg) if s is not None else None for s in parse_site_pair(text))
        configs[sae_id_of(entry, spec.run_hash)] = SAEConfig(
            architecture=entry.architecture, d_in=site.width(model_cfg), d_sae=entry.width, k=entry.k,
            l1_coefficient=entry.l1_coefficient, l0_coefficient=entry.l0_coefficient,
            hook_site=str(site), hook_name=site.hook_name, model_name=spec.model, seed=spec.seed,
            output_site=str(output) if output is not None else "",
            d_out=output.width(model_cfg) if output is not None else None, skip_connection=entry.skip_connection,
        )
    return configs


def existing_saes(workspace: Workspace, sae_ids: list[str]) -> dict[str, Path] | None:
    """Paths of the SAEs if every one is already saved in the workspace, else None."""
    found = {}
    for sae_id in sae_ids:
        directory = workspace.saes_dir / sae_id
        if not sae_paths(directory).weights.exists():
            return None
        found[sae_id] = directory
    return found


def scheduled_trainer_config(tokens: int, batch_size: int, **fields) -> "TrainerConfig":
    """The schedule `saelab train` gives a run of `tokens` rows: lr warm-up over min(100, steps/10) steps, linear
    decay over the last 20%, sparsity warm-up over the first 10%; latents idle for a quarter of the run (at most
    1M tokens) are dead, and AuxK starts on those idle for a sixteenth. `fields` sets the rest of TrainerConfig."""
    from saelab.training import TrainerConfig

    steps = tokens // batch_size
    return TrainerConfig(
        total_tokens=tokens, batch_size=batch_size, lr_warmup_steps=min(100, steps // 10), lr_decay_steps=steps // 5,
        sparsity_warmup_steps=steps // 10, dead_window_tokens=min(1_000_000, max(tokens // 4, batch_size)),
        auxk_window_tokens=min(1_000_000, max(tokens // 16, batch_size)), **fields,
    )


def peak_lrs(spec: TrainSpec) -> dict[str, float]:
    """Each SAE's peak learning rate: its own, else the run's, else its architecture's default."""
    from saelab.sae import get_architecture

    lrs = {}
    for entry in spec.saes:
        lr = entry.lr if entry.lr is not None else spec.lr
        lrs[sae_id_of(entry, spec.run_hash)] = lr if lr is not None else get_architecture(entry.architecture).default_lr
    return lrs


def training_batches(workspace: Workspace, spec: TrainSpec, model, configs: dict[str, SAEConfig]):
    """Batches from the workspace's cached activations of every site, else streamed from the model."""
    from saelab.data.sources import checked_source
    from saelab.training.trainer import site_widths

    widths = {site: width for cfg in configs.values() for site, width in site_widths(cfg).items()}
    sites = parse_sites(sorted(widths))  # the configs' site texts, parsed once
    batch_config = BatchConfig(batch_size=spec.batch_size, buffer_tokens=max(spec.batch_size, min(262144, spec.tokens)),
                               seed=spec.seed)
    cached = workspace.activations_for(spec.model)
    if all(store_paths(cached, site).manifest.exists() for site in sites):
        return store_batches(cached, sites, batch_config, expect_d=widths), f"cached activations in {cached}"
    source = checked_source(spec.source)
    batches = stream_batches(model, sites, source, batch_config, context_len=spec.context_len, source_seed=spec.seed)
    return batches, f"streamed from {spec.model}"


def metrics_sink(store: ResultsStore, run_id: str):
    """The trainer's rows (one dict per SAE and logged step) as long-format metric rows in the store."""
    skip = {"sae_id", "step", "tokens"}

    def sink(rows: list[dict]) -> None:
        store.insert("training_metrics", [
            {"run_id": run_id, "sae_id": row["sae_id"], "step": row["step"], "tokens": row["tokens"],
             "metric": name, "value": float(value)}
            for row in rows for name, value in row.items() if name not in skip
        ])

    return sink


def train_in_workspace(workspace: Workspace, spec: TrainSpec, progress: bool = True, model=None) -> TrainResult:
    """Validate the spec, then train (or resume, or reuse) its SAEs and record everything in the store.
    One process at a time trains a run: another one started on the same run stops with a one-line error naming
    the holder. Under `torchrun` the processes train data-parallel and rank 0 alone writes the store. `model`:
    spec.model already loaded (a caller that holds it passes it on instead of loading it again)."""
    from saelab.models import load_model
    from saelab.training.distributed import init_from_env

    model = model if model is not None else load_model(spec.model)
    configs = build_sae_configs(spec, model.cfg)
    require_memory(training_bytes(configs.values(), spec.batch_size), f"training {len(configs)} SAE(s)")
    run_id = f"train-{spec.run_hash}"
    if not init_from_env().is_main:  # the other ranks only train; rank 0 holds the lock and writes the store
        return _train_run(workspace, spec, model, configs, run_id, progress)
    with workspace.lock(run_id):
        return _train_run(workspace, spec, model, configs, run_id, progress)


def training_bytes(configs, batch_size: int) -> int:
    """Memory a run's SAEs need while training: parameters, gradients and Adam's two moments (4 copies), and a
    batch's latent pre-activations and activations."""
    from saelab.sae.io import sae_bytes

    return sum(4 * sae_bytes(cfg) + 2 * batch_size * cfg.d_sae * cfg.torch_dtype.itemsize for cfg in configs)


def _train_run(workspace: Workspace, spec: TrainSpec, model, configs: dict[str, SAEConfig], run_id: str,
               progress: bool) -> TrainResult:
    from saelab.training import load_checkpoint, train_saes
    from saelab.training.distributed import current_world

    done = _recorded_done(workspace, run_id)  # before any work: a damaged store fails here
    found = existing_saes(workspace, list(configs))
    if found is not None and done:
        return TrainResult(run_id, list(configs), found, reused=True)
    checkpoint_dir = workspace.checkpoints_dir / run_id
    _check_checkpoint(checkpoint_dir)
    batches, data_note = training_batches(workspace, spec, model, configs)  # checks stored widths
    lrs = peak_lrs(spec)
    trainer_config = scheduled_trainer_config(
        spec.tokens, spec.batch_size, lr=next(iter(lrs.values())), sae_lrs=tuple(lrs.items()), seed=spec.seed,
        checkpoint_every_tokens=spec.checkpoint_every_tokens, log_every_steps=spec.log_every_steps,
    )
    if not current_world().is_main:
        trained = train_saes(configs, batches, trainer_config, workspace.saes_dir, checkpoint_dir, progress=False)
        return TrainResult(run_id, [t.sae_id for t in trained], {t.sae_id: t.paths.directory for t in trained}, False)
    store = ResultsStore(workspace.create().db_path).initialize()
    started = []  # the run is recorded once its first batches passed the trainer's checks

    def begin() -> None:
        _begin_run(store, run_id, spec, data_note, load_checkpoint(checkpoint_dir), lrs)
        started.append(True)

    try:
        trained = train_saes(configs, batches, trainer_config, workspace.saes_dir, checkpoint_dir,
                             metrics_sink(store, run_id), progress=progress, on_start=begin)
    except Exception as exc:
        if started:
            store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    # replace, not insert: a run killed after recording its SAEs but before finishing records them again
    store.replace_rows("saes", {"run_id": run_id},
                       [sae_row(configs[t.sae_id], t.sae_id, workspace.relative(t.paths.directory), run_id)
                        for t in trained])
    store.finish_run(run_id, "done", f"{len(trained)} SAEs, {trained[0].tokens} tokens each; data: {data_note}")
    return TrainResult(run_id, [t.sae_id for t in trained], {t.sae_id: t.paths.directory for t in trained}, False)


def _check_checkpoint(checkpoint_dir: Path) -> None:
    """A run's checkpoint that cannot be read is a one-line SaelabError (before anything is written)."""
    import pickle
    import zipfile

    from saelab.errors import SaelabError
    from saelab.training import load_checkpoint
    from saelab.training.checkpoint import checkpoint_path

    try:
        load_checkpoint(checkpoint_dir)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SaelabError(f"{checkpoint_path(checkpoint_dir)} is not a readable checkpoint ({message}); delete "
                          "it to train the run from the start") from None


def _recorded_done(workspace: Workspace, run_id: str) -> bool:
    """Whether the store records the run as finished (a run killed while saving its SAEs is not). Reads the
    whole (small) runs table: an index lookup alone can miss a truncated file."""
    if not workspace.db_path.is_file():
        return False
    runs = ResultsStore(workspace.db_path).runs()
    return bool(((runs["run_id"] == run_id) & (runs["status"] == "done")).any())


def _begin_run(store: ResultsStore, run_id: str, spec: TrainSpec, data_note: str, checkpoint: dict | None,
               lrs: dict[str, float]) -> None:
    """Insert the run (its config with each SAE's resolved peak lr), or mark a resumed one running again and
    drop metric rows past its checkpoint."""
    store.interrupt_stale_runs("train")
    if store.select("runs", where={"run_id": run_id}).empty:
        config = {**asdict(spec), "data": data_note, "peak_lr": lrs}
        store.insert("runs", [{"run_id": run_id, "kind": "train", "name": spec.model, "config": config,
                               "status": "running", "pid": os.getpid()}])
        return
    resumed_step = int(checkpoint["step"]) if checkpoint is not None else 0
    store.delete_training_metrics_after(run_id, resumed_step)
    store.resume_run(run_id, f"resumed at step {resumed_step}")


def siit_batches(model: "HookedTransformer", sites: "Sequence[HookSite]", batch_size: int,
                 seed: int, task: str = "ioi") -> "Iterator[dict[str, Tensor]]":
    """Endless shuffled batches ({site text: [batch_size, width]}) of `model`'s activations on the prompts the
    SIIT model of `task` was trained on, every position from the first token after BOS to END — a distribution
    the bundled corpus is not. IOI: the SIIT IOI generator's prompts, half IOI, half ABC; another SIIT entry
    (`saelab.circuits.siit.siit_task`, e.g. "docstring"): its task rows (`pair_specs` "task" bases) from its
    training split."""
    import random

    import torch

    from saelab.activations.collect import forward_sites
    from saelab.circuits.siit import TRAIN_SPLIT, encode_specs, sample_spec, siit_task

    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    entry = None if task == "ioi" else siit_task(task)
    split = None if entry is None else entry.train_split(frozenset())

    def prompts():
        if entry is None:
            return encode_specs(model.tokenizer, [
                sample_spec(rng, TRAIN_SPLIT, rng.choice(TRAIN_SPLIT.templates), abc=rng.random() < 0.5)
                for _ in range(256)])
        return entry.encode(model.tokenizer, [entry.pair_specs(rng, split, "task", entry.source_share)[0]
                                              for _ in range(256)])

    while True:
        pending: dict[str, list] = {str(site): [] for site in sites}
        rows = 0
        while rows < 8 * batch_size:
            drawn = prompts()
            position = torch.arange(drawn.tokens.shape[1])[None]
            keep = (position >= 1) & (position <= drawn.end[:, None])
            with torch.no_grad():
                acts = forward_sites(model, drawn.tokens, sites)
            for site, act in acts.items():
                pending[str(site)].append(act.reshape(*act.shape[:2], -1)[keep].float())
            rows += int(keep.sum())
        order = torch.randperm(rows, generator=generator)
        data = {site: torch.cat(parts)[order] for site, parts in pending.items()}
        for start in range(0, rows - batch_size + 1, batch_size):
            yield {site: values[start:start + batch_size] for site, values in data.items()}


def train_on_siit(model: "HookedTransformer", spec: TrainSpec, root: Path, task: str = "ioi") -> dict[str, Path]:
    """`spec`'s SAEs with `saelab train`'s schedule, trained on `siit_batches` of `task` instead of the corpus
    (no workspace, no store); returns sae_id -> the SAE's directory under `root`."""
    from saelab.activations.sites import HookSite
    from saelab.training import train_saes

    configs = build_sae_configs(spec, model.cfg)
    lrs = peak_lrs(spec)
    trainer = scheduled_trainer_config(spec.tokens, spec.batch_size, lr=next(iter(lrs.values())),
                                       sae_lrs=tuple(lrs.items()), seed=spec.seed, log_every_steps=10**9)
    sites = sorted({HookSite.parse(c.hook_site).validate(model.cfg) for c in configs.values()}, key=str)
    trained = train_saes(configs, siit_batches(model, sites, spec.batch_size, spec.seed, task), trainer, root,
                         progress=False)
    return {t.sae_id: t.paths.directory for t in trained}
