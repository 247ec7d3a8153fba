"""One model per process: `saelab demo` loads its model once and hands it to every step, and loading a model
prints nothing (TransformerLens' "Moving model to device" is noise between the demo's own lines)."""

from pathlib import Path

import pytest

import saelab.models
from saelab.cli import main
from saelab.models import load_model, save_model
from saelab.workflows.demo import DemoConfig


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the models loaded while the test runs, from every way `load_model` resolves a name (a load
    that goes through another of these ways, a bundled model read from its directory, counts once)."""
    loads: list[str] = []
    depth = [0]
    for name in ("_load_bundled", "load_model_dir", "_load_hugging_face"):
        original = getattr(saelab.models, name)

        def counted(target, *args, _original=original, **kwargs):
            if depth[0] == 0:
                loads.append(str(getattr(target, "name", target)))
            depth[0] += 1
            try:
                return _original(target, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(saelab.models, name, counted)
    return loads


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--quick` at a few thousand tokens per step: every step still runs (cache, train, eval with dashboards,
    circuits), in seconds rather than minutes."""
    sizes = {"cache_tokens": 4096, "train_tokens": 4096, "batch_size": 512, "eval_tokens": 1024,
             "dashboard_tokens": 1024}
    for name, tokens in sizes.items():
        monkeypatch.setattr(DemoConfig, name, property(lambda self, tokens=tokens: tokens))


def test_quick_demo_loads_its_model_once_and_prints_no_device_moves(
    tmp_path: Path, model_loads: list[str], tiny_demo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["demo", "--quick", "--model", "saelab-random", "--workspace", str(tmp_path / "ws"), "--no-app"])
    out = capsys.readouterr().out
    assert status == 0
    assert "recorded in" in out and "✓ circuits" in out  # every step ran
    # each once; the SIIT models for their known circuits
    assert model_loads == ["saelab-random", "saelab-ioi-siit", "saelab-ioi-siit-copies"]
    assert "Moving model to device" not in out
    assert "by construction" in out and "output_change" in out  # the by-construction column, with baselines


def test_loading_a_model_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = load_model("saelab-random")
    save_model(model, tmp_path / "model")
    load_model(str(tmp_path / "model"))
    assert capsys.readouterr().out == ""
