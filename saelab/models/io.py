"""The saved-model format: a directory with config.json, model.safetensors and tokenizer.json."""

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.errors import ModelNotAvailableError
from saelab.models.tokenizer import load_tokenizer

# Config fields that are derived at construction or are not JSON (device, dtype): never saved.
_UNSAVED_FIELDS = {"device", "dtype", "n_params", "n_devices", "tokenizer_prepends_bos"}


class ModelFiles(NamedTuple):
    config: Path
    weights: Path
    tokenizer: Path


def model_files(directory: Path) -> ModelFiles:
    """The one place that names the files of a saved model."""
    directory = Path(directory)
    return ModelFiles(
        directory / "config.json", directory / "model.safetensors", directory / "tokenizer.json"
    )


def config_to_json(cfg: HookedTransformerConfig) -> dict:
    """The constructor arguments of `cfg` that round-trip through JSON."""
    fields = HookedTransformerConfig.__dataclass_fields__
    saved = {}
    for key, value in cfg.to_dict().items():
        if key in fields and fields[key].init and key not in _UNSAVED_FIELDS:
            if value is None or isinstance(value, (bool, int, float, str, list, dict)):
                saved[key] = value
    return saved


def save_model(model: HookedTransformer, directory: str | Path, weights_dtype: torch.dtype = torch.float32,
               extra: dict | None = None) -> ModelFiles:
    """Write `model` (weights, config, tokenizer) so `load_model(directory)` rebuilds it exactly.

    `weights_dtype=torch.float16` halves the file; loading always returns float32. `extra` is stored
    under "saelab" in config.json (e.g. a description for `saelab models`).
    """
    files = model_files(Path(directory))
    files.config.parent.mkdir(parents=True, exist_ok=True)
    if model.tokenizer is None:
        raise ValueError("cannot save a model without a tokenizer: set model.tokenizer first")
    state = {k: _cast_float(v.detach(), weights_dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(files.weights))
    payload = {"hooked_transformer_config": config_to_json(model.cfg), "saelab": extra or {}}
    files.config.write_text(json.dumps(payload, indent=2))
    model.tokenizer.backend_tokenizer.save(str(files.tokenizer))
    return files


def load_model_dir(directory: Path, device: str = "cpu") -> HookedTransformer:
    """Rebuild a model saved by `save_model`."""
    files = model_files(directory)
    missing = [p.name for p in files if not p.exists()]
    if missing:
        raise ModelNotAvailableError(
            f"model directory {str(directory)!r} lacks {', '.join(missing)}; save it with "
            "saelab.models.save_model"
        )
    payload = json.loads(files.config.read_text())
    cfg = HookedTransformerConfig(**payload["hooked_transformer_config"], device=device)
    tokenizer = load_tokenizer(files.tokenizer, name=str(directory))
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    try:
        tensors = load_file(str(files.weights))
    except SafetensorError as exc:
        raise ModelNotAvailableError(
            f"model weights {str(files.weights)!r} are not a readable safetensors file ({exc}); save the "
            "model again"
        ) from None
    state = {k: _cast_float(v, torch.float32) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device, print_details=False).eval()  # TransformerLens prints every move otherwise


def read_model_card(directory: Path) -> dict:
    """The "saelab" section of a saved model's config.json (description, training data)."""
    files = model_files(directory)
    return json.loads(files.config.read_text()).get("saelab", {})


def _cast_float(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast floating-point tensors only; masks and index buffers keep their dtype."""
    return tensor.to(dtype) if tensor.is_floating_point() else tensor
