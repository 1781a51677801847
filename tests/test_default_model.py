"""The shipped default model and general reader: their accuracy holds in CI, and the scripts fall back to it when model.pkl is missing."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import captcha_export
import captcha_predict
import captcha_test
from captchakit import shipped as captcha_default
from captchakit.api import load_model
from captchakit.checkpoint import read_checkpoint


@pytest.mark.parametrize("name", ["default", "general"])
def test_shipped_model_keeps_its_recorded_accuracy_on_fresh_captchas(name):
    path = captcha_default.DEFAULT_MODEL if name == "default" else captcha_default.GENERAL_MODEL
    info = json.loads(path.with_suffix(".json").read_text())
    model_bytes = path.read_bytes()
    assert len(model_bytes) < 10_000_000, "the shipped model must stay a few MB"
    assert hashlib.sha256(model_bytes).hexdigest() == info["sha256"], f"{path.with_suffix('.json').name} describes another file"
    assert "train_state" not in read_checkpoint(path)
    assert info["command"] and info["data"] and 0 < info["test"]["accuracy"] <= 1
    check = info["generated_check"]
    assert check.get("style", "captcha") == ("captcha" if name == "default" else "varied")
    model = load_model(path, "cpu")
    accuracy = captcha_default.generated_check(model, check["count"], check["seed"], check.get("style", "captcha"))
    assert abs(accuracy - check["accuracy"]) <= 0.01, f"{accuracy:.2%} now, {check['accuracy']:.2%} recorded"


@pytest.fixture
def shipped(tiny_model, tiny_data, tmp_path, monkeypatch):
    """A default model shipped into a temporary models/ folder (the tiny one), with a short check."""
    monkeypatch.setattr(captcha_default, "CHECK_COUNT", 40)
    out = tmp_path / "models" / "default.pkl"
    command = "python captcha_train.py --epochs 2"
    args = ["--model", tiny_model, "--ship", out, "--command", command, "--test-dir", tiny_data / "test"]
    assert captcha_export.main([str(a) for a in args]) == 0
    monkeypatch.setattr(captcha_default, "DEFAULT_MODEL", out)
    return out


def test_ship_writes_a_weights_only_model_and_its_record(shipped, tiny_model):
    info = json.loads(shipped.with_suffix(".json").read_text())
    # The tiny model was saved reading three views; what ships reads once.
    assert tuple(read_checkpoint(tiny_model)["model_config"]["test_shifts"]) == (-3, 0, 3)
    assert tuple(info["model_config"]["test_shifts"]) == (0,) == tuple(read_checkpoint(shipped)["model_config"]["test_shifts"])
    assert info["model"] == "default.pkl" and info["command"] == "python captcha_train.py --epochs 2"
    assert info["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest() and info["bytes"] == shipped.stat().st_size
    assert info["data"] == f"300 images from {read_checkpoint(tiny_model)['meta']['train_dir']}"
    assert info["test"]["n"] == 60 and info["training"]["epochs"] == 2
    assert "train_state" not in read_checkpoint(shipped)
    # The recorded check is what the CI test measures again, to the last captcha.
    check = info["generated_check"]
    assert check["count"] == 40
    assert captcha_default.generated_check(load_model(shipped, "cpu"), 40, check["seed"]) == check["accuracy"]


def test_shipped_float16_weights_take_half_the_bytes_and_read_captchas_the_same(shipped, tiny_model, tiny_data, tmp_path):
    slim = tmp_path / "slim.pkl"  # the same weights in float32
    assert captcha_export.main(["--model", str(tiny_model), "--slim", str(slim)]) == 0
    assert shipped.stat().st_size < 0.55 * slim.stat().st_size
    stored = torch.load(shipped, weights_only=True)["state_dict"]
    floats = [k for k, v in stored.items() if v.is_floating_point()]
    assert floats and {stored[k].dtype for k in floats} == {torch.float16}
    assert {read_checkpoint(shipped)["state_dict"][k].dtype for k in floats} == {torch.float32}  # upcast on loading
    full, half = load_model(slim, "cpu", test_shifts=0), load_model(shipped, "cpu")  # both read once, as shipped
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}
    files = sorted((tiny_data / "train").glob("*.png")) + sorted((tiny_data / "test").glob("*.png"))
    arrays = np.stack([full.prepare(f) for f in files])  # 360 generated captchas
    assert torch.allclose(full.logits(arrays), half.logits(arrays), atol=0.05)
    # The tiny model's logits are near ties, which float16 rounding may flip in a rare character.
    same = sum(a.text == b.text for a, b in zip(full.predict_arrays(arrays), half.predict_arrays(arrays), strict=True))
    assert same >= 0.97 * len(arrays)


def test_predict_and_test_fall_back_to_the_shipped_model_and_say_so(shipped, tiny_data, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)  # no model.pkl here
    code, out, err = cli(captcha_predict.main, tiny_data / "predict")
    assert code == 0 and len(out.splitlines()) == 20
    assert err.splitlines()[0] == f"no model.pkl here: using the shipped default model {shipped.relative_to(tmp_path)}"
    code, out, err = cli(captcha_test.main, "--data", tiny_data / "test")
    assert code == 0 and out.startswith("test: 60 captchas, ")
    assert err.startswith("no model.pkl here: using the shipped default model ")


def test_an_existing_model_pkl_or_an_explicit_other_model_wins(shipped, tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert captcha_default.resolve_model("model.pkl") == shipped
    assert captcha_default.resolve_model("other.pkl") == "other.pkl"
    (tmp_path / "model.pkl").write_bytes(tiny_model.read_bytes())
    assert captcha_default.resolve_model("model.pkl") == "model.pkl"


def test_ship_refuses_without_the_training_command(tiny_model, tiny_data, tmp_path, cli):
    code, _, err = cli(captcha_export.main, "--model", tiny_model, "--ship", tmp_path / "d.pkl", "--test-dir", tiny_data / "test")
    assert code == 2 and err.endswith(': error: --ship: say how the model was trained with --command "python captcha_train.py ..."\n')
    assert not list(tmp_path.iterdir())
