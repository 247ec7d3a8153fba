"""Learning-rate and sparsity-coefficient schedules: pure functions of the step."""


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, decay_steps: int) -> float:
    """Linear warm-up from 0, constant, then linear decay to 0 over the last `decay_steps` steps."""
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    remaining = total_steps - step
    decay = min(1.0, remaining / decay_steps) if decay_steps else 1.0
    return max(0.0, min(warmup, decay))


def sparsity_multiplier(step: int, warmup_steps: int) -> float:
    """Linear warm-up of the sparsity penalty from 0 to 1."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0
