"""Named types shared by the SAE architectures."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor

if TYPE_CHECKING:
    from saelab.sae.config import SAEConfig
    from saelab.sae.model import SAE


class SAEOutput(NamedTuple):
    """What `SAE.forward` returns: the reconstruction, the active latents and what the losses need.

    Latent activations are stored sparsely as (`acts`, `indices`) column pairs: column j of row b says that
    latent `indices[b, j]` has activation `acts[b, j]`. TopK-style architectures list their k selected
    latents; dense architectures list all d_sae latents (`indices` is then a broadcast `arange`).
    """

    x_hat: Float[Tensor, "batch d_target"]
    """Reconstruction of the target (the input itself for an SAE, the output site's activation for a
    transcoder), skip term included."""

    acts: Float[Tensor, "batch n_active"]
    """Activations of the latents named in `indices` (zero where a listed latent is inactive)."""

    indices: Int64[Tensor, "batch n_active"]
    """Latent ids of the columns of `acts`."""

    pre_acts: Float[Tensor, "batch d_sae"]
    """Pre-activations (the gate pre-activations for "gated", similarities for "vq"); no gradient for
    "topk", whose encoder keeps its backward sparse."""

    aux_acts: Float[Tensor, "batch n_aux"]
    """AuxK: activations of the top dead latents (n_aux = 0 when no dead mask was given or none is dead)."""

    aux_indices: Int64[Tensor, "batch n_aux"]
    """AuxK: ids of those dead latents."""


class LossCoefficients(NamedTuple):
    """Per-step multipliers the trainer passes to a loss (the coefficients themselves live in SAEConfig)."""

    sparsity_scale: float = 1.0
    """Multiplier of the sparsity penalty (L1 / L0), ramped from 0 to 1 during the sparsity warm-up."""


class LossOutput(NamedTuple):
    """A loss: the total to differentiate and its named parts (always including "mse")."""

    total: Float[Tensor, ""]
    parts: dict[str, Float[Tensor, ""]]


class InitialState(NamedTuple):
    """Freshly initialised tensors of an architecture."""

    parameters: dict[str, Tensor]
    buffers: dict[str, Tensor]


InitFn = Callable[["SAEConfig", torch.Generator], InitialState]
EncodeFn = Callable[["SAE", Float[Tensor, "batch d_in"]], Float[Tensor, "batch d_sae"]]
ForwardFn = Callable[["SAE", Float[Tensor, "batch d_in"], Bool[Tensor, " d_sae"] | None, Any], SAEOutput]
WorkspaceFn = Callable[["SAE", int], Any]
LossFn = Callable[
    ["SAE", Float[Tensor, "batch d_in"], Float[Tensor, "batch d_target"], SAEOutput, LossCoefficients], LossOutput
]
PostStepFn = Callable[["SAE", SAEOutput], None]
ResampleFn = Callable[["SAE", torch.optim.Optimizer, Bool[Tensor, " d_sae"], Float[Tensor, "batch d_in"],
                       torch.Generator, Float[Tensor, "batch d_target"] | None], int]
"""(sae, optimiser, dead mask, scaled inputs, generator, scaled targets or None) -> how many were resampled."""


@dataclass(frozen=True)
class Architecture:
    """One SAE architecture: pure functions over an `SAE` module's tensors."""

    name: str
    """Registry key."""

    init: InitFn
    """Builds the parameters and buffers from a config and a seeded generator."""

    encode: EncodeFn
    """Dense latent activations for inference."""

    forward: ForwardFn
    """Training forward pass; the optional dead-latent mask feeds AuxK; the last argument is a workspace made
    by `workspace` (or None: the pass allocates what it needs)."""

    loss: LossFn
    """Training loss of a forward output of x, whose reconstruction should match the target (x itself for an
    SAE): loss(sae, x, target, out, coefficients)."""

    post_step_: PostStepFn
    """In-place update after each optimiser step (unit-norm decoder, threshold estimates); may do nothing."""

    apply_b_dec_to_input: bool
    """Whether the encoder reads x - b_dec (SAELens' field of the same name)."""

    unit_norm_decoder: bool
    """Whether training keeps the decoder rows at unit norm."""

    transcoder: bool = True
    """Whether it can be a transcoder (target at another site than the input; encoder reads x, not x - b_dec)."""

    affine_when_active: bool = True
    """Whether an active latent's activation is its affine pre-activation x·W_enc + b_enc (what attribution
    graphs need: a latent's incoming edges then sum to its activation); False where a separate path sets the
    magnitude (gated's exp(r_mag) and b_mag) or the code is a discrete choice (VQ)."""
    uses_k: bool = False
    """Whether SAEConfig.k matters (and so must lie between 1 and d_sae)."""

    uses_l1: bool = False
    """Whether SAEConfig.l1_coefficient matters (an L1 sparsity penalty)."""

    selects_over_batch: bool = False
    """Whether a training step selects latents over the whole batch (BatchTopK's top k·B and the threshold it
    tracks): data-parallel ranks would each select over their own slice and drift apart, so it trains in one
    process."""

    saelens_name: str | None = None
    """SAELens' name of the same architecture ("standard", "topk", "jumprelu", "gated"), used to export and
    import SAELens files; None: SAELens has no equivalent. Several entries may share a name when
    `apply_b_dec_to_input` tells them apart."""

    workspace: WorkspaceFn | None = None
    """Builds the tensors `forward` (and its backward pass) may write into instead of allocating, for an SAE and
    a batch size, so that a trainer can reuse them step after step; None: the architecture uses none."""

    resample_dead_: ResampleFn | None = None
    """Dead-latent policy: what training does, every dead window, with latents that have not fired in it
    (re-initialise them and their optimiser state in place, returning how many); None: nothing (TopK-style
    SAEs train dead latents through the AuxK loss of `forward` instead)."""

    default_lr: float = 4e-4
    """Peak Adam learning rate `saelab train` uses for this architecture when none is given (inputs normalised
    to mean norm sqrt(d_in)); see BENCHMARKS.md for the sweep behind the TopK-style values."""
