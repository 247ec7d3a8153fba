"""`reuse_freed_memory`: after it, a training-sized block freed and allocated again is not faulted in
again."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from saelab.training import reuse_freed_memory

def faults_of_five_steps():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        # a TopK step's pre-activations at d_sae 12288: 200 MB, then freed
        torch.empty(4096, 12288).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_five_steps()
applied = reuse_freed_memory()
faults_of_five_steps()  # the heap grows once
print(default, faults_of_five_steps(), applied)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc malloc setting")
def test_freed_step_sized_blocks_are_reused_instead_of_faulted_in_again() -> None:
    # a fresh process: the setting is process-wide and must not leak into the test session
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    default, reused, applied = done.stdout.split()
    assert applied == "True"
    assert int(default) > 5 * 40_000  # 5 x 200 MB in 4 KiB pages, faulted in every time by default
    assert int(reused) < int(default) / 20, (default, reused)


@pytest.mark.parametrize("argv", [["models"], ["--workspace", "ws", "models"]])
def test_every_saelab_command_applies_it(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import saelab.training.allocator
    from saelab.cli import main

    calls = []
    monkeypatch.setattr(saelab.training.allocator, "reuse_freed_memory", lambda: calls.append(True) or True)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0
    assert calls == [True]
