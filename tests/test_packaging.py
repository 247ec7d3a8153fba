"""The package installs like one: a wheel built from the source tree carries the bundled models, circuits and
the web app, and works from a fresh virtual environment outside the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "saelab-workspace",
    "runs",
)


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only the saelab wheel; its dependencies come from the running interpreter's
    site-packages through a .pth path entry (so the test needs no network and reinstalls no torch)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=SKIP)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
        ],
        cwd=source,
    )
    (wheel,) = (root / "dist").glob("saelab-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=root)
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    Path(purelib.stdout.strip(), "saelab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.rmtree(source)  # nothing may be found through the source tree
    return venv


@pytest.mark.slow
def test_wheel_carries_data_and_app_and_runs_outside_the_checkout(wheel_venv, tmp_path):
    saelab = str(wheel_venv / "bin" / "saelab")
    where = run(
        [
            str(wheel_venv / "bin" / "python"),
            "-c",
            "import saelab, saelab.paths as p; print(saelab.__file__); print(p.data_dir()); "
            "print(p.app_dir())",
        ],
        cwd=tmp_path,
    )
    package, data, app = where.stdout.split()
    assert str(wheel_venv) in package and str(REPO) not in package
    assert Path(data, "models", "saelab-tiny", "model.safetensors").is_file()
    assert Path(data, "circuits", "saelab-tiny", "ioi.json").is_file()
    assert Path(app, "main.py").is_file() and Path(app, "views", "features.py").is_file()

    models = run([saelab, "models"], cwd=tmp_path, env={"COLUMNS": "200"})
    assert (
        "saelab-tiny " in models.stdout
        and "no " not in models.stdout.split("saelab-tiny ")[1].splitlines()[0]
    )

    demo = run([saelab, "--workspace", str(tmp_path / "ws"), "demo", "--quick", "--model", "saelab-random",
                "--no-app"], cwd=tmp_path)
    assert "recorded in" in demo.stdout
    assert (tmp_path / "ws" / "saelab.duckdb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]
