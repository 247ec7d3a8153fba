"""The SAE module: a config, its architecture's functions and its tensors (composition, no subclasses)."""

from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from saelab.sae.config import SAEConfig
from saelab.sae.registry import get_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput

NO_SCALING = LossCoefficients()
"""Loss coefficients outside any warm-up."""


class SAE(nn.Module):
    """A sparse autoencoder. Parameters follow SAELens' names and shapes: W_enc (d_in, d_sae),
    W_dec (d_sae, d_in), b_enc (d_sae), b_dec (d_in); architectures add their own (e.g. threshold)."""

    def __init__(self, cfg: SAEConfig, state: InitialState | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.architecture: Architecture = get_architecture(cfg.architecture)
        if state is None:
            state = self.architecture.init(cfg, torch.Generator().manual_seed(cfg.seed))
        for name, tensor in state.parameters.items():
            self.register_parameter(name, nn.Parameter(tensor.to(cfg.torch_dtype)))
        for name, tensor in state.buffers.items():
            self.register_buffer(name, tensor.to(cfg.torch_dtype))

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Dense latent activations (inference; deterministic per input)."""
        return self.architecture.encode(self, x.to(self.cfg.torch_dtype))

    def decode(self, latents: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_in"]:
        """Reconstruction from dense latent activations."""
        return latents.to(self.cfg.torch_dtype) @ self.W_dec + self.b_dec

    def skip(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"] | float:
        """The skip term x @ W_skip of a skip-transcoder (cfg.skip_connection); 0.0 for every other dictionary."""
        W_skip = getattr(self, "W_skip", None)
        return 0.0 if W_skip is None else x.to(self.cfg.torch_dtype) @ W_skip

    def reconstruct(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        """Inference reconstruction of the target (the input itself for an SAE; the output site for a
        transcoder): decode(encode(x)) + skip(x)."""
        return self.decode(self.encode(x)) + self.skip(x)

    def forward(
        self, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None = None, work: Any = None
    ) -> SAEOutput:
        """Training forward pass. `dead_mask` marks latents the trainer considers dead (for AuxK). `work`, from
        `new_workspace`, is overwritten instead of allocating (the output is valid until its next use).
        No other side effects."""
        return self.architecture.forward(self, x.to(self.cfg.torch_dtype), dead_mask, work)

    def new_workspace(self, batch: int) -> Any:
        """Reusable work tensors of `forward` and its backward pass on batches of `batch` rows, on this SAE's
        device and in its parameters' layout (None if the architecture uses none). Build it after moving the SAE."""
        make = self.architecture.workspace
        return None if make is None else make(self, batch)

    def loss(
        self, x: Float[Tensor, "batch d_in"], out: SAEOutput, coefficients: LossCoefficients = NO_SCALING
    ) -> LossOutput:
        """The architecture's training loss of a forward output."""
        return self.architecture.loss(self, x.to(self.cfg.torch_dtype), out, coefficients)

    @torch.no_grad()
    def post_step_(self, out: SAEOutput) -> None:
        """In-place update after an optimiser step (e.g. re-project decoder rows to unit norm)."""
        self.architecture.post_step_(self, out)


@torch.no_grad()
def fold_input_scale(sae: SAE, scale: float) -> SAE:
    """An SAE for raw activations x, made from one trained on x * scale.

    Every architecture reads its input only through W_enc (after subtracting b_dec, if it does) and writes
    its reconstruction through W_dec and b_dec, so W_enc *= scale, W_dec /= scale and b_dec /= scale give
    the same latents for x as the trained SAE gives for x * scale, and reconstructions of x itself.
    """
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"input scale must be a positive finite number, got {scale}")
    parameters = {name: tensor.detach().clone() for name, tensor in sae.named_parameters()}
    buffers = {name: tensor.detach().clone() for name, tensor in sae.named_buffers()}
    if "W_enc" in parameters:
        parameters["W_enc"].mul_(scale)
    parameters["W_dec"].div_(scale)
    parameters["b_dec"].div_(scale)
    folded = SAE(sae.cfg, InitialState(parameters, buffers))
    return folded.to(sae.W_dec.device)
