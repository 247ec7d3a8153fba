"""Sparse autoencoders: configs, a registry of architectures, losses, integer codes, save/load.

from saelab.sae import SAE, SAEConfig
sae = SAE(SAEConfig(architecture="topk", d_in=768, d_sae=16 * 768, k=32))
out = sae(x)                       # SAEOutput
loss = sae.loss(x, out)            # LossOutput(total, parts)
"""

# Importing the architecture modules registers them.
from saelab.sae import batchtopk, gated, jumprelu, relu_l1, topk, vq  # noqa: F401
from saelab.sae.batchtopk import batchtopk_to_jumprelu, estimate_batchtopk_threshold
from saelab.sae.codes import NO_CODE, argmax_codes, codes_from_latents, topk_codes
from saelab.sae.config import SAEConfig
from saelab.sae.functional import (
    dense_latents,
    fraction_of_variance_unexplained,
    latent_fire_counts,
    mean_l0,
    mse_loss,
)
from saelab.sae.io import (
    SAEPaths,
    export_saelens,
    import_saelens,
    load_sae,
    sae_paths,
    saelens_paths,
    save_sae,
)
from saelab.sae.model import SAE, fold_input_scale
from saelab.sae.registry import ARCHITECTURES, get_architecture, register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput
from saelab.sae.vq import replace_dead_codes_, vq_codes

__all__ = [
    "ARCHITECTURES",
    "NO_CODE",
    "SAE",
    "Architecture",
    "InitialState",
    "LossCoefficients",
    "LossOutput",
    "SAEConfig",
    "SAEOutput",
    "SAEPaths",
    "argmax_codes",
    "batchtopk_to_jumprelu",
    "codes_from_latents",
    "dense_latents",
    "estimate_batchtopk_threshold",
    "export_saelens",
    "fold_input_scale",
    "fraction_of_variance_unexplained",
    "get_architecture",
    "import_saelens",
    "latent_fire_counts",
    "load_sae",
    "mean_l0",
    "mse_loss",
    "register_architecture",
    "replace_dead_codes_",
    "sae_paths",
    "saelens_paths",
    "save_sae",
    "topk_codes",
    "vq_codes",
]
