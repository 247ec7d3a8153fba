"""Where saelab's bundled data lives."""

from pathlib import Path


def data_dir() -> Path:
    """The repository's `data/` folder (bundled models, tokenizers, circuits)."""
    return Path(__file__).resolve().parents[1] / "data"
