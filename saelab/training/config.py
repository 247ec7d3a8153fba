"""Configuration of a training run (shared by every SAE trained in it)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainerConfig:
    """How long and how to train. Never mutated after construction."""

    total_tokens: int
    """Activation rows to train on (the run takes total_tokens // batch_size steps)."""

    batch_size: int
    """Rows per batch; every batch the data iterator yields must have exactly this many."""

    lr: float = 3e-4
    """Peak Adam learning rate (of every SAE not named in `sae_lrs`)."""

    sae_lrs: tuple[tuple[str, float], ...] = ()
    """(sae_id, peak lr) of SAEs that train at their own learning rate; the schedule is shared."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""

    lr_warmup_steps: int = 0
    """Steps over which the learning rate rises linearly from 0 to `lr`."""

    lr_decay_steps: int = 0
    """Final steps over which the learning rate falls linearly to 0."""

    sparsity_warmup_steps: int = 0
    """Steps over which the sparsity penalty (L1 / L0) rises linearly from 0 to its coefficient."""

    dead_window_tokens: int = 1_000_000
    """A latent that has not fired for this many tokens is dead (the metrics' dead fraction): ReLU/L1 SAEs
    resample it (every window) while enough training remains, and AuxK reconstructs with it."""

    auxk_window_tokens: int | None = None
    """AuxK's own, usually shorter, window: it trains latents idle this long on the residual (a gradient, not
    a reset, so it can start early); None: `dead_window_tokens`."""

    resample_dead: bool = True
    """Resample dead latents of architectures that use resampling (relu_l1, relu_l1_anthropic, vq)."""

    normalization_batches: int = 8
    """Batches used to estimate each site's input scale (mean norm sqrt(d_in)) and mean; they are trained on
    too."""

    init_b_dec_to_mean: bool = True
    """Start each SAE's decoder bias at the mean of its (scaled) input over the normalisation batches, so that
    the latents begin by coding deviations from the mean rather than the mean itself; False: start at zero."""

    checkpoint_every_tokens: int | None = None
    """Write a checkpoint whenever this many more tokens are trained; None: only a final checkpoint."""

    log_every_steps: int = 100
    """Metrics rows (and the progress bar's numbers) every this many steps."""

    seed: int = 0
    """Seed of everything random in training itself (resampling); each SAE's init uses its own cfg.seed."""

    def __post_init__(self) -> None:
        for name in (
            "total_tokens",
            "batch_size",
            "dead_window_tokens",
            "normalization_batches",
            "log_every_steps",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr_warmup_steps", "lr_decay_steps", "sparsity_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.total_tokens < self.batch_size:
            raise ValueError(f"total_tokens {self.total_tokens} is less than one batch of {self.batch_size}")
        for sae_id, lr in ((None, self.lr), *self.sae_lrs):
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
                raise ValueError(
                    f"lr{'' if sae_id is None else f' of {sae_id!r}'} must be positive, got {lr!r}"
                )
        if not all(0 <= beta < 1 for beta in self.adam_betas):
            raise ValueError(f"adam_betas must lie in [0, 1), got {self.adam_betas}")
        if self.auxk_window_tokens is not None and self.auxk_window_tokens <= 0:
            raise ValueError(f"auxk_window_tokens must be positive or None, got {self.auxk_window_tokens}")
        if self.checkpoint_every_tokens is not None and self.checkpoint_every_tokens <= 0:
            raise ValueError(
                f"checkpoint_every_tokens must be positive or None, got {self.checkpoint_every_tokens}"
            )

    @property
    def total_steps(self) -> int:
        return self.total_tokens // self.batch_size

    def peak_lr(self, sae_id: str) -> float:
        """The peak learning rate of one SAE."""
        return dict(self.sae_lrs).get(sae_id, self.lr)
