"""Dead latents: tracking which latents have not fired over a token window. What an architecture does about
them is its `Architecture.resample_dead_` (see `saelab.sae.dead`)."""

from jaxtyping import Bool, Int64
from torch import Tensor


def update_tokens_since_fired_(
    tokens_since_fired: Int64[Tensor, " d_sae"], fire_counts: Int64[Tensor, " d_sae"], batch_tokens: int
) -> None:
    """Advance every latent's count by the batch and reset the ones that fired in it, in place."""
    tokens_since_fired.add_(batch_tokens)
    tokens_since_fired[fire_counts > 0] = 0


def dead_latents(tokens_since_fired: Int64[Tensor, " d_sae"], window_tokens: int) -> Bool[Tensor, " d_sae"]:
    """Latents that have not fired in the last `window_tokens` tokens."""
    return tokens_since_fired >= window_tokens
