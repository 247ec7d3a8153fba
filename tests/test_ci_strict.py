"""Under CI=true a skip fails the run (tests/conftest.py); without CI it stays a skip.

A small test folder with this project's conftest runs in a child pytest: a skipif mark, a pytest.skip inside
a test, a module skipped by importorskip, and an xfail that must stay an expected failure.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPPING = '''
import pytest

@pytest.mark.skipif(True, reason="no chromedriver here")
def test_marked():
    pass

def test_inside():
    pytest.skip("model saelab-tiny is not available")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
'''

ALLOWED = '''
import pytest

@pytest.mark.skip_allowed_in_ci
@pytest.mark.skipif(True, reason="no CUDA")
def test_on_a_gpu():
    pass
'''

MISSING_IMPORT = '''
import pytest
pytest.importorskip("a_package_that_is_not_installed_anywhere")

def test_never_runs():
    pass
'''


def run_child(folder: Path, ci: str | None, test_file: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", test_file],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ci_strict")
    shutil.copy(Path(__file__).with_name("conftest.py"), root / "conftest.py")
    (root / "test_skipping.py").write_text(SKIPPING)
    (root / "test_missing_import.py").write_text(MISSING_IMPORT)
    (root / "test_allowed.py").write_text(ALLOWED)
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    skip_allowed_in_ci: may skip under CI\n")
    return root


def test_skips_fail_the_run_under_ci(folder):
    result = run_child(folder, "true", "test_skipping.py")
    out, last = result.stdout, result.stdout.splitlines()[-1]
    assert result.returncode == 1, out
    assert out.count("skipped under CI=true") >= 2, out
    assert "no chromedriver here" in out and "saelab-tiny is not available" in out, out
    # a skip in setup (a skipif mark) shows as an error, one in the test body as a failure
    assert (
        "1 failed" in last
        and "1 error" in last
        and "1 passed" in last
        and "1 xfailed" in last
        and "skipped" not in last
    ), out


def test_a_module_skipped_at_import_fails_collection_under_ci(folder):
    result = run_child(folder, "true", "test_missing_import.py")
    assert result.returncode != 0 and "skipped under CI=true" in result.stdout, result.stdout
    assert "a_package_that_is_not_installed_anywhere" in result.stdout


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_skips_stay_skips_outside_ci(folder, ci):
    result = run_child(folder, ci, ".")
    last = result.stdout.splitlines()[-1]
    assert result.returncode == 0, result.stdout
    assert "4 skipped" in last and "1 xfailed" in last and "1 passed" in last, result.stdout


def test_a_test_marked_skip_allowed_in_ci_may_skip_under_ci(folder):
    result = run_child(folder, "true", "test_allowed.py")
    assert result.returncode == 0 and "1 skipped" in result.stdout.splitlines()[-1], result.stdout
