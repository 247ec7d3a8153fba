"""The models that ship with saelab."""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.models.registry import BundledModel, get_bundled, register_model
from saelab.models.tokenizer import byte_level_tokenizer, wrap_tokenizer
from saelab.paths import data_dir

RANDOM_MODEL_CONFIG = dict(
    n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_ctx=128, d_vocab=257,
    act_fn="gelu", normalization_type="LN", positional_embedding_type="standard",
    default_prepend_bos=True, seed=0,
)


TRACR_MODELS = {
    "tracr-reverse": "tracr-compiled reverse (ACDC): 4 layers, d_model 41, 1 head, d_mlp 30, bidirectional",
    "tracr-frac-prevs": "tracr-compiled frac_prevs (ACDC): 2 layers, d_model 14, 1 head, d_mlp 1, bidirectional",
}
"""The tracr programs' models (their circuits are known by construction)."""


def build_random_model() -> HookedTransformer:
    """A small GPT-2-style model with fixed random weights (seed 0) and a byte-level tokenizer."""
    torch.manual_seed(RANDOM_MODEL_CONFIG["seed"])
    cfg = HookedTransformerConfig(**RANDOM_MODEL_CONFIG)
    tokenizer = wrap_tokenizer(byte_level_tokenizer(), name="saelab-random")
    return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)


def register_builtin_models() -> None:
    if get_bundled("saelab-random") is not None:
        return
    register_model(BundledModel(
        name="saelab-random",
        description="2 layers, d_model 64, 4 heads, d_mlp 256, byte tokenizer (≈0.1M params)",
        trained_on="random initialisation (seed 0): for tests and plumbing",
        build=build_random_model,
    ))
    models_dir = data_dir() / "models"
    register_model(BundledModel(
        name="saelab-tiny",
        description="4 layers, d_model 256, 8 heads, d_mlp 1024, own BPE tokenizer",
        trained_on="Python standard library source + IOI, greater-than and docstring text",
        directory=models_dir / "saelab-tiny",
    ))
    register_model(BundledModel(
        name="saelab-tiny-attn",
        description="attention-only, 4 layers, d_model 256, 8 heads, own BPE tokenizer",
        trained_on="Python standard library source + IOI, greater-than and docstring text",
        directory=models_dir / "saelab-tiny-attn",
    ))
    for name, description in TRACR_MODELS.items():
        register_model(BundledModel(
            name=name,
            description=description,
            trained_on="not trained: compiled by tracr from a RASP program (training/compile_tracr.py)",
            directory=models_dir / name,
        ))
    register_model(BundledModel(
        name="saelab-ioi-siit",
        description="3 layers, d_model 64, 4 heads, d_mlp 128, saelab-tiny tokenizer; IOI circuit known by construction",
        trained_on="IOI prompts (saelab's generator) with SIIT losses (training/train_siit.py; see its model card)",
        directory=models_dir / "saelab-ioi-siit",
    ))
    register_model(BundledModel(
        name="saelab-ioi-siit-copies",
        description="3 layers, d_model 64, 4 heads, d_mlp 128, saelab-tiny tokenizer; IOI circuit known by "
                    "construction, with S-inhibition and name copies as stages (ours; stated head edges >= 0.91 of the gap)",
        trained_on="IOI prompts (saelab's generator) with SIIT losses (training/train_siit.py --task ioi-copies; "
                   "see its model card)",
        directory=models_dir / "saelab-ioi-siit-copies",
    ))
    register_model(BundledModel(
        name="saelab-ioi-siit-even-norms",
        description="3 layers, d_model 64, 4 heads, d_mlp 128, saelab-tiny tokenizer; saelab-ioi-siit's IOI circuit "
                    "known by construction, with the heads' OV norms evened out (ours: weight_norm ranks its "
                    "circuit heads at node AUC 0.741, not 1.000)",
        trained_on="saelab-ioi-siit's weights trained on with SIIT losses, every head's OV norm held equal after "
                   "each step (training/train_siit.py --task ioi-even-norms --even-head-norms, saved with "
                   "--balance-vo; see its model card)",
        directory=models_dir / "saelab-ioi-siit-even-norms",
    ))
    register_model(BundledModel(
        name="saelab-docstring-siit",
        description="3 layers, d_model 64, 4 heads, d_mlp 128, saelab-tiny tokenizer; docstring circuit known by "
                    "construction",
        trained_on="docstring prompts (saelab's prompt builder, held-out layouts and words excluded) with SIIT "
                   "losses (training/train_siit.py --task docstring-self-fallback), then a refit of head 2.0's query/key "
                   "and a weight edit of mlp2 (see its model card)",
        directory=models_dir / "saelab-docstring-siit",
    ))
