"""The registry of bundled models: names that `load_model` resolves without a network."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class BundledModel:
    """A model that ships with saelab (weights in `data/models/` or built from a config)."""

    name: str
    """The name users pass to `load_model` and `--model`."""
    description: str
    """One line: architecture and size."""
    trained_on: str
    """What it was trained on ("random initialisation" for untrained models)."""
    build: Callable[[], HookedTransformer] | None = None
    """Builds the model from code; used when `directory` is None."""
    directory: Path | None = None
    """A saved saelab model directory (config.json, model.safetensors, tokenizer.json)."""

    def __post_init__(self) -> None:
        if (self.build is None) == (self.directory is None):
            raise ValueError(f"bundled model {self.name!r} needs exactly one of build= or directory=")

    @property
    def available(self) -> bool:
        return self.directory is None or (self.directory / "config.json").exists()


_REGISTRY: dict[str, BundledModel] = {}


def register_model(model: BundledModel) -> BundledModel:
    """Add a bundled model; a name registered twice is an error."""
    if model.name in _REGISTRY:
        raise ValueError(f"bundled model {model.name!r} is already registered")
    _REGISTRY[model.name] = model
    return model


def bundled_models() -> list[BundledModel]:
    return list(_REGISTRY.values())


def get_bundled(name: str) -> BundledModel | None:
    return _REGISTRY.get(name)
