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
    """A sparse autoencoder, or a transcoder (cfg.is_transcoder: it reads one site and reconstructs another).
    Parameters follow SAELens' names and shapes: W_enc (d_in, d_sae), W_dec (d_sae, d_target), b_enc (d_sae),
    b_dec (d_target), W_skip (d_in, d_target) with cfg.skip_connection; architectures add their own (e.g.
    threshold)."""

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

    @property
    def subtracts_b_dec(self) -> bool:
        """Whether the encoder reads x - b_dec: for SAEs of architectures that do (apply_b_dec_to_input). Never
        for a transcoder, whose b_dec lives in the output space: its encoder reads x, as SAELens' Transcoder."""
        return self.architecture.apply_b_dec_to_input and not self.cfg.is_transcoder

    def encoder_input(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_in"]:
        """What W_enc multiplies: x - b_dec or x (see `subtracts_b_dec`)."""
        return x - self.b_dec if self.subtracts_b_dec else x

    def decode(self, latents: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_target"]:
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
        self, x: Float[Tensor, "batch d_in"], out: SAEOutput, coefficients: LossCoefficients = NO_SCALING,
        target: Float[Tensor, "batch d_target"] | None = None,
    ) -> LossOutput:
        """The architecture's training loss of a forward output of `x`: how well out.x_hat reconstructs
        `target` (the activation at cfg.target_site; None: x itself, which only an SAE may omit)."""
        if target is None and self.cfg.is_transcoder:
            raise ValueError(f"a transcoder ({self.cfg.hook_site} -> {self.cfg.output_site}) needs the target "
                             "activation: pass target=")
        x = x.to(self.cfg.torch_dtype)
        target = x if target is None else target.to(self.cfg.torch_dtype)
        return self.architecture.loss(self, x, target, out, coefficients)

    @torch.no_grad()
    def post_step_(self, out: SAEOutput) -> None:
        """In-place update after an optimiser step (e.g. re-project decoder rows to unit norm)."""
        self.architecture.post_step_(self, out)


@torch.no_grad()
def fold_input_scale(sae: SAE, scale: float, output_scale: float | None = None) -> SAE:
    """A dictionary for raw activations, made from one trained on x * scale with target y * output_scale
    (None: `scale`, an SAE's target being its input).

    Every architecture reads its input only through W_enc (after subtracting b_dec, if it does) and writes
    its reconstruction through W_dec, b_dec and W_skip, so W_enc *= scale, W_dec /= output_scale,
    b_dec /= output_scale and W_skip *= scale / output_scale give the same latents for x as the trained one
    gives for x * scale, and reconstructions of y itself.
    """
    output_scale = scale if output_scale is None else output_scale
    for name, value in (("input scale", scale), ("output scale", output_scale)):
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"{name} must be a positive finite number, got {value}")
    parameters = {name: tensor.detach().clone() for name, tensor in sae.named_parameters()}
    buffers = {name: tensor.detach().clone() for name, tensor in sae.named_buffers()}
    if "W_enc" in parameters:
        parameters["W_enc"].mul_(scale)
    parameters["W_dec"].div_(output_scale)
    parameters["b_dec"].div_(output_scale)
    if "W_skip" in parameters:
        parameters["W_skip"].mul_(scale / output_scale)
    folded = SAE(sae.cfg, InitialState(parameters, buffers))
    return folded.to(sae.W_dec.device)
