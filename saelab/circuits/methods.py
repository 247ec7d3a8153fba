"""The built-in circuit methods and baselines, registered under their names, with where each default comes
from (a paper, or the prompt split it was chosen on: dev seeds 0-4; tables report test seeds 100+)."""

from saelab.circuits.acdc import ACDCConfig, run_acdc
from saelab.circuits.baselines import (
    LayerOrderConfig,
    OutputChangeConfig,
    RandomConfig,
    WeightNormConfig,
    run_layer_order,
    run_output_change,
    run_random,
    run_weight_norm,
)
from saelab.circuits.eap import EAPConfig, EAPIGConfig, run_eap, run_eap_ig
from saelab.circuits.patching import PatchingConfig, run_patching
from saelab.circuits.registry import METHODS, CircuitMethod, register_method
from saelab.circuits.sae_codes import SAECodesConfig, run_sae_codes
from saelab.feature_circuits.components import FeatureComponentsConfig, run_feature_components

PAPER_SAE_CODES = {"protocol": "paper", "position": "mean", "scale": "none", "steps": 500, "lr": 1e-3,
                   "l1_coefficient": 0.02, "l1_by_task": (("docstring", 0.05),), "train_examples": 10}
"""O'Neill & Bui's settings (experiments/main_results.py of their reference code)."""
SAELAB_DEFAULTS = "ours: position 'end' re-checked on dev seeds 0-4; other settings not tuned"

BUILTIN_METHODS = (
    CircuitMethod(
        "sae_codes",
        run_sae_codes,
        SAECodesConfig,
        "discrete-SAE codes, O'Neill & Bui's protocol (250+250 prompts, SAE on 10, mean over positions)",
        "heads",
        PAPER_SAE_CODES,
        prompt_count="paper_sae_prompts",
        defaults_from="the paper's reference code (not tuned here)",
    ),
    CircuitMethod(
        "sae_codes_saelab",
        run_sae_codes,
        SAECodesConfig,
        "discrete-SAE codes, saelab's variant: 10+10 prompts, answer position, heads rescaled",
        "heads",
        prompt_count="sae_prompts",
        defaults_from=SAELAB_DEFAULTS,
    ),
    CircuitMethod(
        "sae_codes_topk",
        run_sae_codes,
        SAECodesConfig,
        "saelab's discrete-SAE codes with the top-k latents as one code",
        "heads",
        {"codes": "topk"},
        prompt_count="sae_prompts",
        defaults_from=SAELAB_DEFAULTS,
    ),
    CircuitMethod(
        "sae_codes_vq",
        run_sae_codes,
        SAECodesConfig,
        "saelab's discrete-SAE codes from a vector-quantised codebook SAE",
        "heads",
        {"codes": "vq", "k": 1},
        prompt_count="sae_prompts",
        defaults_from=SAELAB_DEFAULTS,
    ),
    CircuitMethod(
        "patching",
        run_patching,
        PatchingConfig,
        "activation patching per node, resample ablation (the exact reference)",
        "none",
        self_scored=True,
    ),
    CircuitMethod(
        "patching_mean",
        run_patching,
        PatchingConfig,
        "activation patching per node, mean ablation",
        "none",
        {"ablation": "mean"},
    ),
    CircuitMethod("eap", run_eap, EAPConfig, "edge attribution patching (Syed et al. 2023)", "all",
                  self_scored=True),
    CircuitMethod(
        "eap_ig", run_eap_ig, EAPIGConfig, "EAP with integrated gradients (Hanna et al. 2024)", "all",
        defaults_from="Hanna et al.'s m = 5 interpolation steps (not tuned here)", self_scored=True,
    ),
    CircuitMethod("acdc", run_acdc, ACDCConfig, "ACDC greedy edge pruning over a threshold sweep", "all",
                  prompt_count="acdc_prompts", defaults_from="a fixed τ sweep 1e-4..0.1 (not tuned here)",
                  self_scored=True),
    CircuitMethod(
        "feature_circuit_components",
        run_feature_components,
        FeatureComponentsConfig,
        "ours: heads/MLPs scored by their latents' share of per-prompt sparse feature circuits (needs SAEs)",
        "none",
        defaults_from="ours: T_N 0.01 chosen from 0.01/0.1/0.5 on dev seeds 0-4 (BENCHMARKS.md)",
        self_scored=True,
    ),
    CircuitMethod("random", run_random, RandomConfig, "baseline: uniform random node and edge scores (seeded)",
                  "all", kind="baseline"),
    CircuitMethod("layer_order", run_layer_order, LayerOrderConfig,
                  "baseline: lower layer first (edges: earlier sender, then earlier receiver)", "all",
                  kind="baseline"),
    CircuitMethod("output_change", run_output_change, OutputChangeConfig,
                  "baseline: mean ‖clean − corrupted output‖ per node, no SAE (edges: product of ends)",
                  "all", kind="baseline"),
    CircuitMethod("weight_norm", run_weight_norm, WeightNormConfig,
                  "baseline (ours): the weights alone, ‖W_V W_O‖ per head, ‖W_in‖·‖W_out‖ per MLP (edges: product "
                  "of ends)", "all", kind="baseline"),
)


def register_builtin_methods() -> None:
    for method in BUILTIN_METHODS:
        if method.name not in METHODS:
            register_method(method)
