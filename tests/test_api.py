"""The Python API: load_model(...).predict / predict_batch take every image kind, for .pkl and .onnx alike."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import captcha_export
from captchakit import api
from captchakit.api import load_model
from captchakit.data.images import ImageError
from captchakit.recognizer import Prediction


@pytest.fixture(scope="module", params=["pkl", "onnx"])
def model_file(request, tiny_model, tmp_path_factory):
    if request.param == "pkl":
        return tiny_model
    pytest.importorskip("onnxruntime", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
    path = tmp_path_factory.mktemp("api") / "model.onnx"
    captcha_export.main(["--model", str(tiny_model), "--onnx", str(path)])
    return path


def image_kinds(path):
    """The same captcha as a path, str, bytes, PIL image, RGB array and grey array."""
    pil = Image.open(path)
    pil.load()
    return {
        "path": path,
        "str": str(path),
        "bytes": path.read_bytes(),
        "pil": pil,
        "rgb array": np.asarray(pil.convert("RGB")),
        "grey array": np.asarray(pil.convert("L")),
    }


def test_every_input_kind_gives_the_same_prediction(model_file, tiny_data):
    model = load_model(model_file, "cpu")
    path = sorted((tiny_data / "predict").iterdir())[0]
    want = model.predict(path)
    assert isinstance(want, Prediction) and len(want.text) == 4 and 0.0 <= want.confidence <= 1.0
    assert set(want.text) <= set(model.settings.charset)
    for kind, image in image_kinds(path).items():
        got = model.predict(image)
        assert got.text == want.text, kind
        assert got.confidence == pytest.approx(want.confidence, rel=1e-4, abs=1e-7), kind


def same(got: list[Prediction], want: list[Prediction]) -> bool:
    """Same texts, confidences equal up to float rounding (batch kernels sum in another order)."""
    return [p.text for p in got] == [p.text for p in want] and all(
        g.confidence == pytest.approx(w.confidence, rel=1e-4, abs=1e-7) for g, w in zip(got, want, strict=True)
    )


def test_predict_batch_takes_mixed_kinds_and_any_iterable(model_file, tiny_data):
    model = load_model(model_file, "cpu")
    paths = sorted((tiny_data / "predict").iterdir())[:6]
    want = [model.predict(p) for p in paths]
    mixed = [p.read_bytes() if i % 2 else Image.open(p) for i, p in enumerate(paths)]
    assert same(model.predict_batch(mixed), want)
    assert same(model.predict_batch(p for p in paths), want)  # a generator works too
    assert same(model.predict_batch(paths, batch_size=4), want)  # across batch boundaries
    assert model.predict_batch([]) == []


def test_pkl_and_onnx_agree_through_the_api(model_file, tiny_model, tiny_data):
    paths = sorted((tiny_data / "predict").iterdir())
    texts = [p.text for p in load_model(model_file, "cpu").predict_batch(paths)]
    assert texts == [p.text for p in load_model(tiny_model, "cpu").predict_batch(paths)]


def test_a_bad_image_raises_image_error(model_file):
    model = load_model(model_file, "cpu")
    with pytest.raises(ImageError):
        model.predict(b"these bytes are not an image")


def test_module_level_predict_is_the_same_call(tiny_model, tiny_data):
    model = load_model(tiny_model, "cpu")
    path = sorted((tiny_data / "predict").iterdir())[0]
    assert api.predict(model, path) == model.predict(path)


def test_the_fast_inference_copy_computes_what_the_model_computes(tiny_model, tiny_data):
    import torch

    from captchakit.data.images import to_tensor

    model = load_model(tiny_model, "cpu")
    assert model.fast is not model.model  # BatchNorm folded into a copy; the original stays for evaluate()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.fast.modules())
    arrays = np.stack([model.prepare(p) for p in sorted((tiny_data / "predict").iterdir())])
    with torch.inference_mode():
        want = model.model(to_tensor(arrays))
        assert torch.allclose(model.logits(arrays), want, atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.model.modules())


PACKAGE_API = """
import sys
import captchakit
assert "torch" not in sys.modules, "import captchakit alone loaded torch"
from captchakit import Prediction, Recognizer, load_model, predict
from captchakit import api, recognizer
assert (load_model, predict) == (api.load_model, api.predict)
assert (Recognizer, Prediction) == (recognizer.Recognizer, recognizer.Prediction)
assert sorted(captchakit.__all__) == ["Prediction", "Recognizer", "load_model", "predict"]
assert not hasattr(captchakit, "no_such_name")
"""


def test_the_package_offers_the_api_and_loads_torch_only_when_it_is_used():
    result = subprocess.run([sys.executable, "-c", PACKAGE_API], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
