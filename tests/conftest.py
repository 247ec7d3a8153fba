"""Shared fixtures and hooks. Tests run offline on CPU.

While tests run, the jaxtyping annotations (shapes, dtypes) and plain type hints of every saelab module are
checked at every call, with beartype. The hook is installed here, before any test module imports saelab
(Protocols used as annotations are `runtime_checkable` for it). A test that hands the library a bad value to
see its ValueError may see the annotation's TypeError first; such tests accept either.

Under `CI=true` (set by GitHub Actions and by .ci/run) a skipped test or test module fails the run instead:
CI has chromium and chromedriver, selenium, sae-lens and the bundled models, and a run that skipped the tests
needing them says nothing about them. Expected failures (xfail) are left alone, and so are tests marked
`skip_allowed_in_ci` (what CI is not meant to have: a CUDA device, an opt-in screenshot workspace).
"""

import os
import warnings

import pytest
from jaxtyping import install_import_hook

# PEP 484's numeric tower: an int is accepted where a float is annotated (beartype is stricter by default).
install_import_hook("saelab", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread per process: tests are tiny, and on a loaded 2-core machine two spinning threads per process
# made small ops 20x slower. Subprocesses the tests start inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*HookedTransformer is deprecated.*")

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def fail_skips_in_ci(report, in_ci: bool = IN_CI, allowed: bool = False) -> None:
    """Turn a skipped report into a failure naming the skip's reason, under CI only (unless `allowed`: the test
    is marked `skip_allowed_in_ci`)."""
    if in_ci and report.skipped and not allowed and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = (f"skipped under CI=true, which fails the run: {reason}\n"
                           "CI must have what this test needs (see .ci/run); unset CI to allow skips locally")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    fail_skips_in_ci(outcome.get_result(), allowed=item.get_closest_marker("skip_allowed_in_ci") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    fail_skips_in_ci(outcome.get_result())


@pytest.fixture(scope="session")
def random_model():
    """saelab-random: the small randomly initialised bundled model (read-only: do not modify)."""
    from saelab.models import load_model

    return load_model("saelab-random")


@pytest.fixture(scope="module")
def random_tokens(random_model):
    """Four 16-token contexts of random ids of saelab-random (never BOS or the last id), BOS first; seed 0."""
    import torch

    t = torch.randint(1, random_model.cfg.d_vocab - 1, (4, 16), generator=torch.Generator().manual_seed(0))
    t[:, 0] = random_model.tokenizer.bos_token_id
    return t


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny
    tensors gain nothing from a second thread but hand-off costs, and spin on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def random_problem(random_model):
    """Three random prompt pairs for saelab-random (positions 2-3 corrupted); metric: logit 65 − logit 66."""
    import torch

    from saelab.circuits.problem import PromptBatch, make_problem

    torch.manual_seed(0)
    clean = torch.randint(3, 250, (3, 7))
    corrupted = clean.clone()
    corrupted[:, 2:4] = torch.randint(3, 250, (3, 2))
    end = torch.tensor([6, 5, 6])
    batch = PromptBatch(clean, corrupted, end, lambda logits: logits[:, 65] - logits[:, 66])
    return make_problem("random", [batch])
