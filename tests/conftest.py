"""Shared fixtures. Tests run offline on CPU; jaxtyping shape annotations are checked while they run."""

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")


@pytest.fixture(scope="session")
def random_model():
    """saelab-random: the small randomly initialised bundled model (read-only: do not modify)."""
    from saelab.models import load_model

    return load_model("saelab-random")
