"""ONNX export: a checked file with the settings inside, and the same answers as PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
onnx = pytest.importorskip("onnx", reason='ONNX is an optional extra: pip install -e ".[onnx]"')

from conftest import ROOT  # noqa: E402

import captcha_export  # noqa: E402
import captcha_predict  # noqa: E402
from captchakit import api  # noqa: E402
from captchakit.checkpoint import read_checkpoint  # noqa: E402
from captchakit.data.synth import draw  # noqa: E402
from captchakit.export import onnx as captcha_onnx  # noqa: E402
from captchakit.shipped import DEFAULT_MODEL  # noqa: E402


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert captcha_export.main(["--model", str(tiny_model), "--onnx", str(path)]) == 0
    return path


def generated_arrays(settings, count: int, seed: int) -> np.ndarray:
    """(count, H, W) uint8: seeded captchas drawn in memory, read by load_image."""
    return draw(settings, count, seed, "tests")[0]


def test_export_is_a_checked_onnx_file_with_settings_and_a_free_batch_size(tiny_onnx, tiny_model):
    proto = onnx.load(tiny_onnx)
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    ckpt = read_checkpoint(tiny_model)
    assert props["format"] == "captcha-toolkit-onnx/1"
    assert json.loads(props["settings"]) == ckpt["settings"]
    assert props["charset"] == ckpt["settings"]["charset"]
    assert json.loads(props["model_config"]) == json.loads(json.dumps(ckpt["model_config"]))
    assert json.loads(props["meta"])["train_images"] == ckpt["meta"]["train_images"]
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 60, 160]


def test_onnx_and_torch_agree_on_generated_captchas(tiny_onnx, tiny_model):
    torch_model = api.load_model(tiny_model, "cpu")
    onnx_model = api.load_model(tiny_onnx, "cpu")
    arrays = generated_arrays(torch_model.settings, 200, seed=11)
    with torch.inference_mode():
        want = torch_model.logits(arrays)
    got = onnx_model.logits(arrays)
    assert got.shape == want.shape == (200, 4 * 36)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), float((got - want).abs().max())
    texts = [p.text for p in onnx_model.predict_arrays(arrays)]
    assert texts == [p.text for p in torch_model.predict_arrays(arrays)]
    # The logits follow the image, so agreeing on them is no accident of a constant output (the tiny
    # model's texts may all be one string after 2 epochs on 300 images).
    assert float(want.std(dim=0).max()) > 1e-3, float(want.std(dim=0).max())


def test_predict_prints_the_same_lines_with_onnx_as_with_the_pkl(tiny_onnx, tiny_model, tiny_data, cli):
    code, from_pkl, err_pkl = cli(captcha_predict.main, "--model", tiny_model, tiny_data / "predict")
    assert code == 0
    code, from_onnx, err_onnx = cli(captcha_predict.main, "--model", tiny_onnx, tiny_data / "predict")
    assert code == 0
    assert from_onnx == from_pkl and len(from_onnx.splitlines()) == 20
    assert err_onnx == err_pkl


def test_slim_copy_has_no_training_state_and_predicts_the_same(tiny_model, tiny_data, tmp_path, cli):
    slim = tmp_path / "slim.pkl"
    code, out, _ = cli(captcha_export.main, "--model", tiny_model, "--slim", slim)
    assert code == 0 and out.startswith(f"wrote {slim} (")
    assert "train_state" in read_checkpoint(tiny_model) and "train_state" not in read_checkpoint(slim)
    assert slim.stat().st_size < tiny_model.stat().st_size / 2
    images = sorted((tiny_data / "predict").iterdir())[:5]
    want = api.load_model(tiny_model, "cpu").predict_batch(images)
    assert api.load_model(slim, "cpu").predict_batch(images) == want


def test_without_onnxruntime_predict_says_how_to_install_it(tiny_onnx, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    code, out, err = cli(captcha_predict.main, "--model", tiny_onnx, "x.png")
    assert code == 2 and out == ""
    assert err.endswith(f": error: --model {tiny_onnx}: needs the optional package onnxruntime; {captcha_onnx.INSTALL}\n")


def test_failed_export_leaves_the_old_file_and_no_temporary(tiny_model, tmp_path, monkeypatch, cli):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    monkeypatch.setattr(captcha_onnx, "compare_with_torch", lambda model, path: 0.5)  # a graph that disagrees
    code, _, err = cli(captcha_export.main, "--model", tiny_model, "--onnx", out)
    assert code == 2 and err.endswith(f"--onnx {out}: onnxruntime's logits differ from PyTorch's by 0.5; try another --opset\n")
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_export_without_onnx_says_how_to_install_it(tiny_model, tmp_path, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "m.onnx"
    code, _, err = cli(captcha_export.main, "--model", tiny_model, "--onnx", out)
    assert code == 2 and err.endswith(f"--onnx {out}: needs the optional package onnx; {captcha_onnx.INSTALL}\n")
    assert not list(tmp_path.iterdir())


def test_onnx_files_that_are_not_ours_get_one_line(tmp_path, cli):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    code, _, err = cli(captcha_predict.main, "--model", junk, "x.png")
    assert code == 2 and f"--model {junk}: not a readable ONNX model (" in err and err.count("\n") == 1
    plain = tmp_path / "plain.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(plain), dynamo=False)
    code, _, err = cli(captcha_predict.main, "--model", plain, "x.png")
    assert code == 2 and err.endswith(f"--model {plain}: an ONNX file without captcha-toolkit metadata; export it with captcha_export.py\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to do: give --onnx OUT, --slim OUT, --ship OUT or --ship-general OUT"),
        (["--onnx", "m.onnx", "--opset", "5"], "--opset 5: the exporter writes opsets 9 to 20; use 17 unless a runtime needs another"),
        (["--ship", "d.pkl", "--ship-general", "g.pkl"], "--ship and --ship-general: one shipped model at a time; give one of them"),
        (["--slim", "s.pkl", "--int8"], "--int8 and --calibration quantize an ONNX export: add --onnx OUT"),
        (["--onnx", "m.onnx", "--int8", "--calibration", "no/dir"], "--calibration no/dir: not a folder; give a folder of captcha images"),
    ],
)
def test_export_flag_errors(args, message, tiny_model, cli):
    code, _, err = cli(captcha_export.main, "--model", tiny_model, *args)
    assert code == 2 and err.endswith(f": error: {message}\n")


def test_infer_speed_bench_prints_its_json_line(tiny_model):
    args = ["--model", tiny_model, "--calls", "5", "--seconds", "0.2", "--images", "4", "--batch", "8"]
    proc = subprocess.run([sys.executable, "bench/infer_speed.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = proc.stdout.splitlines()
    record = json.loads(line)
    for key in ("torch_latency_ms", "torch_img_per_s", "onnx_latency_ms", "onnx_img_per_s", "onnx_int8_latency_ms", "onnx_int8_img_per_s"):
        assert record[key] > 0, key
    assert record["batch"] == 8 and record["model"] == str(tiny_model)


def test_int8_export_of_the_shipped_model_reads_like_the_float_one(tmp_path, cli):
    out = tmp_path / "int8.onnx"
    code, printed, _ = cli(captcha_export.main, "--model", DEFAULT_MODEL, "--onnx", out, "--int8")
    assert code == 0 and printed.startswith(f"wrote {out} (") and "int8" in printed and "(512 generated captchas)" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]  # no float export or temporary left beside it
    int8 = api.load_model(out, "cpu")
    assert int8.metadata["precision"] == "int8" and json.loads(int8.metadata["settings"])["length"] == 4
    floats = api.load_model(DEFAULT_MODEL, "cpu")
    arrays = generated_arrays(floats.settings, 200, seed=5)
    want = [p.text for p in floats.predict_arrays(arrays)]
    got = [p.text for p in int8.predict_arrays(arrays)]
    # Quantization may flip a near-tie; more than a few in 200 would mean broken ranges (as full
    # 8-bit weights gave on AVX2: 0.25% accuracy).
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= 194


def test_int8_calibrates_on_a_folder_of_the_users_captchas(tiny_model, tiny_data, tmp_path, cli):
    out = tmp_path / "tiny8.onnx"
    folder = tiny_data / "test"
    code, printed, _ = cli(captcha_export.main, "--model", tiny_model, "--onnx", out, "--int8", "--calibration", folder)
    assert code == 0 and printed.rstrip().endswith(f"calibration images ({folder})")
    assert len(api.load_model(out, "cpu").predict_batch(sorted(folder.glob("*.png"))[:3])) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(captcha_export.main, "--model", tiny_model, "--onnx", out, "--int8", "--calibration", empty)
    assert code == 2 and err.endswith(f"--calibration {empty}: no images there; point it at a folder of your captchas\n")
