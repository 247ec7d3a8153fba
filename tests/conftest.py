"""Shared fixtures. Tests run offline on CPU; jaxtyping shape annotations are checked while they run."""

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread per process: tests are tiny, and on a loaded 2-core machine two spinning threads per process
# made small ops 20x slower. Subprocesses the tests start inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")


@pytest.fixture(scope="session")
def random_model():
    """saelab-random: the small randomly initialised bundled model (read-only: do not modify)."""
    from saelab.models import load_model

    return load_model("saelab-random")
