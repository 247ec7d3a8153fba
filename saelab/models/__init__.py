"""Model loading: one function returns a TransformerLens `HookedTransformer` for a bundled name, a saved
saelab model directory, or a Hugging Face model name that TransformerLens supports."""

import contextlib
import io
import logging
from pathlib import Path

from transformer_lens import HookedTransformer

from saelab.data.sources import hub_reachable
from saelab.errors import ModelNotAvailableError
from saelab.models.builtin import register_builtin_models
from saelab.models.io import ModelFiles, load_model_dir, model_files, read_model_card, save_model
from saelab.models.registry import BundledModel, bundled_models, get_bundled, register_model

__all__ = [
    "BundledModel",
    "ModelFiles",
    "bundled_models",
    "get_default_model_name",
    "load_model",
    "model_files",
    "read_model_card",
    "register_model",
    "save_model",
]

log = logging.getLogger(__name__)
register_builtin_models()


def get_default_model_name() -> str:
    """The bundled model `saelab demo` uses: saelab-tiny once trained, else the random plumbing model."""
    tiny = get_bundled("saelab-tiny")
    return tiny.name if tiny is not None and tiny.available else "saelab-random"


def load_model(name_or_path: str, device: str = "cpu") -> HookedTransformer:
    """A `HookedTransformer` in eval mode on `device` for a bundled name, a directory, or a HF name."""
    bundled = get_bundled(name_or_path)
    if bundled is not None:
        return _load_bundled(bundled, device)
    if Path(name_or_path).is_dir():
        return load_model_dir(Path(name_or_path), device)
    return _load_hugging_face(name_or_path, device)


def _load_bundled(bundled: BundledModel, device: str) -> HookedTransformer:
    if bundled.directory is not None:
        if not bundled.available:
            raise ModelNotAvailableError(
                f"bundled model {bundled.name!r} has no weights at {bundled.directory}; train it with "
                "`python training/train_lm.py` or pick another from `saelab models`"
            )
        return load_model_dir(bundled.directory, device)
    return (
        bundled.build().to(device, print_details=False).eval()
    )  # TransformerLens prints every move otherwise


def _load_hugging_face(name: str, device: str) -> HookedTransformer:
    """Load through TransformerLens; works where the hub or a local HF cache has the weights."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    known = ", ".join(m.name for m in bundled_models())
    try:
        official = get_official_model_name(name)
    except ValueError:
        raise ModelNotAvailableError(
            f"unknown model {name!r}: not a bundled model ({known}), not a saved model directory, and not a "
            "model name TransformerLens supports"
        ) from None
    if not hub_reachable() and not _in_local_cache(official):
        raise ModelNotAvailableError(
            f"model {name!r} is not available offline: the Hugging Face hub is not reachable and it is not "
            "in "
            "the local HF cache; save it once where it is reachable with saelab.models.save_model(model, "
            "DIR) "
            "and pass DIR instead"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:  # TransformerLens prints as it loads
            model = HookedTransformer.from_pretrained(official, device=device)
        log.debug("TransformerLens: %s", printed.getvalue().strip())
    except Exception as exc:  # noqa: BLE001 - any hub/cache failure means "not available here"
        log.debug("loading %s failed", official, exc_info=True)
        raise ModelNotAvailableError(
            f"model {name!r} could not be loaded ({type(exc).__name__}): the Hugging Face hub is not "
            "reachable "
            "and it is not in the local HF cache; save it once where it is reachable with "
            "saelab.models.save_model(model, DIR) and pass DIR instead"
        ) from None
    return model.eval()


def _in_local_cache(official_name: str) -> bool:
    """Whether the HF cache already holds the model's config (then loading may work offline)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(official_name, "config.json"), str)
