"""Configuration of one sparse autoencoder."""

from dataclasses import dataclass
from typing import Literal

import torch

DTypeName = Literal["float32", "float64", "float16", "bfloat16"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass(frozen=True)
class SAEConfig:
    """Everything needed to build (and rebuild on load) one SAE. Never mutated after construction."""

    architecture: str
    """Key in `saelab.sae.registry.ARCHITECTURES`, e.g. "topk", "relu_l1", "jumprelu", "gated", "vq"."""

    d_in: int
    """Width of the input activations."""

    d_sae: int
    """Number of latents (dictionary size / codebook size)."""

    k: int = 32
    """Active latents per input for "topk", mean active latents per input for "batchtopk", codes per input
    for "vq" (other architectures ignore it)."""

    l1_coefficient: float = 1.0
    """Weight of the L1 sparsity penalty ("relu_l1", "relu_l1_anthropic", "gated")."""

    l0_coefficient: float = 1.0
    """Weight of the L0 sparsity penalty ("jumprelu")."""

    jumprelu_bandwidth: float = 0.05
    """Width of the rectangle kernel of the straight-through estimator for the JumpReLU threshold."""

    jumprelu_init_threshold: float = 0.01
    """Initial JumpReLU threshold of every latent."""

    auxk_k: int | None = None
    """Dead latents used by the AuxK loss ("topk", "batchtopk"); None means d_in // 2 (as in OpenAI's paper)."""

    auxk_coefficient: float = 1 / 32
    """Weight of the AuxK loss."""

    vq_commitment: float = 0.25
    """Weight of the commitment loss of the "vq" architecture."""

    normalize_activations: bool = True
    """Train on inputs scaled so that the mean norm is sqrt(d_in); the scale is folded into the weights on save."""

    hook_site: str = ""
    """Where the input activations come from, as saelab writes a hook site (e.g. "2.resid_post"); the trainer
    picks each dictionary's input batch by this text (and its target by `target_site`). Parsed into a `HookSite`
    at the boundaries that touch the model (saelab.sae imports nothing from saelab.activations)."""

    hook_name: str = ""
    """The TransformerLens hook name of that site (e.g. "blocks.2.hook_resid_post"). Metadata."""

    model_name: str = ""
    """Name of the model whose activations the SAE reads. Metadata."""

    output_site: str = ""
    """Where a transcoder's target is read, as saelab writes a hook site (e.g. "1.mlp_out" for a transcoder
    reading "1.resid_mid"); "" for an SAE, whose target is its own input."""

    d_out: int | None = None
    """Width of the target (W_dec is (d_sae, d_out)); None: d_in (an SAE, or a transcoder between sites of
    one width)."""

    skip_connection: bool = False
    """Add a linear skip term x @ W_skip, W_skip (d_in, d_out), to the reconstruction (a skip-transcoder,
    Paulo et al. 2025)."""

    dtype: DTypeName = "float32"
    """Parameter dtype."""

    seed: int = 0
    """Seed of the parameter initialisation."""

    def __post_init__(self) -> None:
        from saelab.sae.registry import ARCHITECTURES  # the registry imports nothing from here at import time

        architecture = ARCHITECTURES.lookup(self.architecture)
        if self.d_in <= 0:
            raise ValueError(f"d_in must be positive, got {self.d_in}")
        if self.d_sae <= 0:
            raise ValueError(f"d_sae must be positive, got {self.d_sae}")
        if architecture.uses_k and not 1 <= self.k <= self.d_sae:
            raise ValueError(
                f"k must be between 1 and d_sae={self.d_sae} for {self.architecture!r}, got {self.k}"
            )
        if self.d_out is not None and self.d_out <= 0:
            raise ValueError(f"d_out must be positive or None, got {self.d_out}")
        self._check_transcoder(architecture.transcoder)
        if self.auxk_k is not None and self.auxk_k < 1:
            raise ValueError(f"auxk_k must be positive or None, got {self.auxk_k}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        for name in ("l1_coefficient", "l0_coefficient", "auxk_coefficient", "vq_commitment"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("jumprelu_bandwidth", "jumprelu_init_threshold"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def _check_transcoder(self, architecture_can: bool) -> None:
        """A target width, a skip term and a transcoder architecture only where the target is another site."""
        if self.is_transcoder and not architecture_can:
            raise ValueError(f"architecture {self.architecture!r} cannot be a transcoder (output_site "
                             f"{self.output_site!r}); use topk, batchtopk, relu_l1, jumprelu or gated")
        if not self.is_transcoder and self.d_target != self.d_in:
            raise ValueError(f"d_out={self.d_out} differs from d_in={self.d_in} but the target is the input; set "
                             "output_site (and hook_site) to make a transcoder")
        if not self.is_transcoder and self.skip_connection:
            raise ValueError("skip_connection=True needs a transcoder: set output_site to a site other than "
                             f"hook_site {self.hook_site!r}")

    @property
    def is_transcoder(self) -> bool:
        """Whether the target is read somewhere else than the input (a transcoder) rather than being it."""
        return bool(self.output_site) and self.output_site != self.hook_site

    @property
    def target_site(self) -> str:
        """The site whose activation the dictionary reconstructs: output_site for a transcoder, else hook_site."""
        return self.output_site or self.hook_site

    @property
    def d_target(self) -> int:
        """Width of the reconstruction."""
        return self.d_out if self.d_out is not None else self.d_in

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def n_auxk(self) -> int:
        """Number of dead latents the AuxK loss reconstructs the residual with."""
        return min(self.auxk_k if self.auxk_k is not None else max(self.d_in // 2, 1), self.d_sae)
