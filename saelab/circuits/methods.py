"""The built-in circuit methods, registered under their names."""

from saelab.circuits.acdc import ACDCConfig, run_acdc
from saelab.circuits.eap import EAPConfig, EAPIGConfig, run_eap, run_eap_ig
from saelab.circuits.patching import PatchingConfig, run_patching
from saelab.circuits.registry import METHODS, CircuitMethod, register_method
from saelab.circuits.sae_codes import SAECodesConfig, run_sae_codes

BUILTIN_METHODS = (
    CircuitMethod(
        "sae_codes",
        run_sae_codes,
        SAECodesConfig,
        "discrete-SAE codes (O'Neill & Bui 2024): argmax latent of a shared ReLU+L1 SAE",
        "heads",
    ),
    CircuitMethod(
        "sae_codes_topk",
        run_sae_codes,
        SAECodesConfig,
        "discrete-SAE codes with the top-k latents as one code",
        "heads",
        {"codes": "topk"},
    ),
    CircuitMethod(
        "sae_codes_vq",
        run_sae_codes,
        SAECodesConfig,
        "discrete-SAE codes from a vector-quantised codebook SAE",
        "heads",
        {"codes": "vq", "k": 1},
    ),
    CircuitMethod(
        "patching",
        run_patching,
        PatchingConfig,
        "activation patching per node, resample ablation (the exact reference)",
        "none",
    ),
    CircuitMethod(
        "patching_mean",
        run_patching,
        PatchingConfig,
        "activation patching per node, mean ablation",
        "none",
        {"ablation": "mean"},
    ),
    CircuitMethod("eap", run_eap, EAPConfig, "edge attribution patching (Syed et al. 2023)", "all"),
    CircuitMethod(
        "eap_ig", run_eap_ig, EAPIGConfig, "EAP with integrated gradients (Hanna et al. 2024)", "all"
    ),
    CircuitMethod("acdc", run_acdc, ACDCConfig, "ACDC greedy edge pruning over a threshold sweep", "all"),
)


def register_builtin_methods() -> None:
    for method in BUILTIN_METHODS:
        if method.name not in METHODS:
            register_method(method)
