import subprocess
import sys
import time

import pytest
import torch

from saelab.errors import ModelNotAvailableError
from saelab.models import BundledModel, bundled_models, load_model, model_files, register_model, save_model


def test_random_model_is_deterministic(random_model):
    again = load_model("saelab-random")
    tokens = random_model.to_tokens("def f(x):\n    return x")
    assert torch.equal(random_model(tokens), again(tokens))
    assert tokens[0, 0].item() == random_model.tokenizer.bos_token_id


def test_save_load_round_trip_gives_same_logits(random_model, tmp_path):
    save_model(random_model, tmp_path / "m", extra={"description": "test"})
    loaded = load_model(str(tmp_path / "m"))
    tokens = random_model.to_tokens("import os\nprint(os.getcwd())")
    assert torch.equal(random_model(tokens), loaded(tokens))
    assert loaded.to_str_tokens("abc") == random_model.to_str_tokens("abc")
    assert not loaded.training


def test_float16_weights_load_as_float32(random_model, tmp_path):
    files = save_model(random_model, tmp_path / "m16", weights_dtype=torch.float16)
    assert (
        files.weights.stat().st_size < 0.6 * save_model(random_model, tmp_path / "m32").weights.stat().st_size
    )
    loaded = load_model(str(tmp_path / "m16"))
    assert loaded.W_E.dtype == torch.float32
    tokens = random_model.to_tokens("hello")
    torch.testing.assert_close(random_model(tokens), loaded(tokens), atol=2e-2, rtol=0)


def test_directory_missing_files_is_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (model_files(tmp_path / "broken").config).write_text("{}")
    with pytest.raises(ModelNotAvailableError, match="lacks model.safetensors, tokenizer.json"):
        load_model(str(tmp_path / "broken"))


def test_unknown_name_is_clear_error():
    with pytest.raises(ModelNotAvailableError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")


def test_hugging_face_name_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        load_model("gpt2")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'gpt2'" in message and "not available offline" in message and "\n" not in message


def test_registry_refuses_duplicates():
    name = bundled_models()[0].name
    with pytest.raises(ValueError, match="already registered"):
        register_model(BundledModel(name=name, description="", trained_on="", build=lambda: None))


def test_bundled_model_without_weights_says_how_to_train(monkeypatch, tmp_path):
    from saelab.models import registry

    fake = BundledModel(name="fake-untrained", description="", trained_on="", directory=tmp_path / "nothing")
    monkeypatch.setitem(registry._REGISTRY, fake.name, fake)
    with pytest.raises(ModelNotAvailableError, match="train_lm.py"):
        load_model("fake-untrained")


def test_unknown_model_offline_from_cli_exits_nonzero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "saelab", "demo", "--model", "no-such-model",
                             "--workspace", str(tmp_path / "ws")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no-such-model" in result.stderr
