"""Calibrated confidence: the fit, the figures, and every reading path giving the same number."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import captcha_predict
import captcha_test
from captchakit import api, calibrate
from captchakit.checkpoint import read_checkpoint, write_checkpoint
from captchakit.codec import LabelCodec
from captchakit.data.sets import load_labelled
from captchakit.settings import Settings

CODEC = LabelCodec(Settings(charset="0123456789", length=4))


def labels_drawn_at(temperature: float, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4*10) logits and whether each argmax reading is right, with the truth drawn from
    softmax(logits / temperature): at that temperature the confidence is exactly calibrated."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, 10, generator=g) * 3
    truth = torch.multinomial((logits / temperature).softmax(-1).view(-1, 10), 1, generator=g).view(n, 4)
    right = (logits.argmax(-1) == truth).all(1)
    return logits.view(n, -1), right


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_fit_finds_the_temperature_the_truth_was_drawn_at(temperature):
    logits, right = labels_drawn_at(temperature, 4000)
    fitted = calibrate.fit_temperature(logits, right, CODEC)
    assert fitted == pytest.approx(temperature, rel=0.1)
    # the coarse pass and the fine one around it find the whole grid's best step
    costs = [calibrate.log_loss(CODEC.confidences(logits, math.exp(g)), right) for g in calibrate.LOG_T_GRID]
    assert fitted == pytest.approx(math.exp(calibrate.LOG_T_GRID[int(np.argmin(costs))]))
    assert calibrate.ece(CODEC.confidences(logits, fitted), right) < 0.03
    assert calibrate.ece(CODEC.confidences(logits, 1.0), right) > 0.05  # the raw confidence was off


def test_a_small_set_read_all_right_does_not_push_confidence_to_one():
    logits, _ = labels_drawn_at(1.0, 20)
    fitted = calibrate.fit_temperature(logits, torch.ones(20, dtype=torch.bool), CODEC)
    assert fitted < 1.0  # sharper, as the readings say
    # but not sure of everything: 20 right of 20 suggests about 41/42, not certainty
    assert 0.7 < CODEC.confidences(logits, fitted).mean() < 0.99


def test_ece_coverage_and_bins_on_known_values():
    conf = np.array([0.95] * 10 + [0.55] * 10)
    right = np.array([True] * 9 + [False] + [True] * 5 + [False] * 5)
    assert calibrate.ece(conf, right) == pytest.approx((10 * 0.05 + 10 * 0.05) / 20)
    bins = calibrate.reliability(conf, right)
    assert [(b["low"], b["n"], b["accuracy"]) for b in bins] == [(0.5, 10, 0.5), (0.9, 10, 0.9)]
    rows = {r["threshold"]: r for r in calibrate.coverage(conf, right)}
    assert rows[0.5]["answered"] == 1.0 and rows[0.5]["accuracy"] == pytest.approx(0.7)
    assert rows[0.9]["answered"] == 0.5 and rows[0.9]["accuracy"] == pytest.approx(0.9)
    assert rows[0.99]["answered"] == 0.0 and rows[0.99]["accuracy"] is None
    assert calibrate.ece(np.array([1.0]), np.array([True])) == 0.0  # confidence 1 falls in the last bin


def test_training_stores_a_temperature_fitted_on_its_validation_images(tiny_model):
    stored = calibrate.Calibration.from_dict(read_checkpoint(tiny_model).get("calibration"))
    assert stored.calibrated and stored.images == 60  # tiny_model's --val-dir holds 60
    # It reads none of the 60 right: the softened targets put the confidence near 0.5/61, not 0.
    assert 0.05 <= stored.temperature <= 5.0 and stored.ece_after < 0.03
    assert stored.views == calibrate.VIEWS and "and 8 augmented views of each" in stored.describe()  # 60 are few


def test_few_validation_images_are_fitted_with_augmented_views_of_each(tiny_model, tiny_data, monkeypatch):
    model = api.load_model(tiny_model, "cpu").model
    data = load_labelled(tiny_data / "test", model.codec)
    plain, right = calibrate.readings(model, data, "cpu")
    pooled, pooled_right = calibrate.readings(model, data, "cpu", views=2)
    assert pooled.shape == (3 * len(data), *plain.shape[1:]) and len(pooled_right) == 3 * len(data)
    assert torch.equal(pooled[: len(data)], plain) and torch.equal(pooled_right[: len(data)], right)
    assert not torch.allclose(pooled[len(data) : 2 * len(data)], plain)  # a view is another image
    assert torch.equal(calibrate.readings(model, data, "cpu", views=2)[0], pooled)  # seeded: the same views again
    few = calibrate.calibrate(model, data, "cpu")
    monkeypatch.setattr(calibrate, "FEW_TO_FIT_ALONE", len(data))
    alone = calibrate.calibrate(model, data, "cpu")
    assert (few.views, alone.views) == (calibrate.VIEWS, 0) and few.images == alone.images == len(data)
    assert alone.temperature == calibrate.fit_temperature(plain, right, model.codec)
    assert calibrate.Calibration.from_dict(few.to_dict()) == few


@pytest.fixture
def sharp_model(tiny_model, tmp_path):
    """tiny_model with a stored temperature far from 1, as a well-trained model gets."""
    path = tmp_path / "sharp.pkl"
    ckpt = read_checkpoint(tiny_model)
    write_checkpoint(path, {**ckpt, "calibration": calibrate.Calibration(0.25, 500, 0.3, 0.01).to_dict()})
    return path


def test_the_temperature_changes_the_confidence_not_the_text(sharp_model, tiny_model, tiny_data):
    images = sorted((tiny_data / "predict").glob("*.png"))[:8]
    sharp, plain = api.load_model(sharp_model, "cpu"), api.load_model(tiny_model, "cpu")
    got, base = sharp.predict_batch(images), plain.predict_batch(images)
    assert [p.text for p in got] == [p.text for p in base]
    logits = sharp.logits(np.stack([sharp.prepare(i) for i in images]))
    want = sharp.codec.confidences(logits, 0.25).tolist()
    assert [p.confidence for p in got] == pytest.approx(want, rel=1e-4)
    assert [p.confidence for p in got] != pytest.approx([p.confidence for p in base], rel=1e-2)


def test_onnx_gives_the_calibrated_confidence_too(sharp_model, tiny_data, tmp_path, cli):
    pytest.importorskip("onnxruntime", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
    import captcha_export

    onnx_path = tmp_path / "sharp.onnx"
    assert captcha_export.main(["--model", str(sharp_model), "--onnx", str(onnx_path)]) == 0
    images = sorted((tiny_data / "predict").glob("*.png"))[:8]
    want = api.load_model(sharp_model, "cpu").predict_batch(images)
    got = api.load_model(onnx_path, "cpu")
    assert got.calibration.temperature == 0.25
    found = got.predict_batch(images)
    assert [p.text for p in found] == [p.text for p in want]
    assert [p.confidence for p in found] == pytest.approx([p.confidence for p in want], rel=1e-3, abs=1e-6)


def test_a_model_saved_before_calibration_reads_as_before_and_says_so(tiny_model, tiny_data, tmp_path, cli):
    old = tmp_path / "old.pkl"
    ckpt = read_checkpoint(tiny_model)
    write_checkpoint(old, {k: v for k, v in ckpt.items() if k != "calibration"})
    model = api.load_model(old, "cpu")
    assert not model.calibration.calibrated and model.codec.temperature == 1.0
    image = sorted((tiny_data / "predict").glob("*.png"))[0]
    raw = model.logits(model.prepare(image)[None])
    probs = raw.view(1, 4, -1).softmax(-1).amax(-1).prod().item()
    assert model.predict(image).confidence == pytest.approx(probs, rel=1e-5)
    code, _, err = cli(captcha_predict.main, image, "--model", old)
    assert code == 0 and "uncalibrated" in err
    code, out, _ = cli(captcha_test.main, "--model", old, "--data", tiny_data / "test")
    assert code == 0 and "the model is uncalibrated" in out


def test_predict_min_confidence_adds_a_sure_or_unsure_column(sharp_model, tiny_data, cli):
    images = sorted((tiny_data / "predict").glob("*.png"))[:6]
    confidences = [p.confidence for p in api.load_model(sharp_model, "cpu").predict_batch(images)]
    cut = sorted(confidences)[3]
    code, out, err = cli(captcha_predict.main, *images, "--model", sharp_model, "--min-confidence", cut)
    assert code == 0, err
    marks = [line.split("\t")[3] for line in out.splitlines()]
    assert marks == ["unsure" if c < cut else "sure" for c in confidences]
    assert f"unsure: {marks.count('unsure')} of 6 readings" in err and marks.count("unsure") == 3


@pytest.mark.parametrize("value", ["1.5", "-0.1", "high"])
def test_min_confidence_outside_zero_to_one_is_refused(value, tiny_data, cli):
    code, _, err = cli(captcha_predict.main, tiny_data / "predict", "--min-confidence", value)
    assert code == 2 and "--min-confidence" in err and len(err.strip().splitlines()) == 1


def test_the_test_report_states_the_calibration_error_of_what_it_printed(sharp_model, tiny_data, tmp_path, cli):
    code, out, _ = cli(captcha_test.main, "--model", sharp_model, "--data", tiny_data / "test", "--json", tmp_path / "m.json")
    assert code == 0
    m = json.loads((tmp_path / "m.json").read_text())["confidence"]
    assert m["calibrated"] is True and sum(b["n"] for b in m["bins"]) == 60
    assert f"expected calibration error {100 * m['ece']:.2f}%" in out
    assert [r["threshold"] for r in m["coverage"]] == list(calibrate.THRESHOLDS)
    assert math.isclose(m["ece"], sum(b["n"] * abs(b["confidence"] - b["accuracy"]) for b in m["bins"]) / 60)


def test_export_calibrates_an_older_model_on_a_labelled_folder(tiny_model, tiny_data, tmp_path, cli):
    import captcha_export

    old, new = tmp_path / "old.pkl", tmp_path / "new.pkl"
    write_checkpoint(old, {k: v for k, v in read_checkpoint(tiny_model).items() if k != "calibration"})
    code, out, err = cli(captcha_export.main, "--model", old, "--slim", new, "--confidence-from", tiny_data / "test")
    assert code == 0, err
    stored = calibrate.Calibration.from_dict(read_checkpoint(new).get("calibration"))
    assert stored.calibrated and stored.images == 60 and "confidence calibrated on 60 images" in out
    assert api.load_model(new, "cpu").codec.temperature == stored.temperature
    code, _, err = cli(captcha_export.main, "--model", old, "--slim", new, "--confidence-from", tmp_path / "nowhere")
    assert code == 2 and "--confidence-from" in err and len(err.strip().splitlines()) == 1


def test_export_recalibrates_on_the_validation_share_the_model_recorded(tiny_model, tmp_path, cli):
    from owndata_data import draw

    import captcha_export
    import captcha_train

    own, model, out_path = tmp_path / "own", tmp_path / "m.pkl", tmp_path / "again.pkl"
    draw(own, 40, seed=6)
    assert captcha_train.main(["--train-dir", str(own), "--model", str(model), "--epochs", "1", "--batch-size", "16"]) == 0
    val = read_checkpoint(model)["meta"]["split"]["val"]
    code, out, err = cli(captcha_export.main, "--model", model, "--slim", out_path, "--confidence-from", "validation")
    assert code == 0, err
    assert calibrate.Calibration.from_dict(read_checkpoint(out_path)["calibration"]).images == len(val) == 8
    code, _, err = cli(captcha_export.main, "--model", tiny_model, "--slim", out_path, "--confidence-from", "validation")
    assert code == 2 and "holds no validation share" in err


def test_predict_reads_only_the_charset_it_is_told(tiny_model, tiny_data, cli):
    images = sorted((tiny_data / "predict").glob("*.png"))[:6]
    code, out, err = cli(captcha_predict.main, *images, "--model", tiny_model, "--charset", "0123A")
    assert code == 0, err
    texts = [line.split("\t")[1] for line in out.splitlines()]
    assert len(texts) == 6 and all(len(t) == 4 and set(t) <= set("0123A") for t in texts)
    code, out, err = cli(captcha_predict.main, *images, "--model", tiny_model, "--charset", "0a", "--ignore-case")
    assert code == 0 and all(set(line.split("\t")[1]) <= {"0", "A"} for line in out.splitlines())
    code, _, err = cli(captcha_predict.main, *images, "--model", tiny_model, "--charset", "xyz")
    assert code == 2 and "has learned none of these characters" in err
    code, _, err = cli(captcha_predict.main, *images, "--model", tiny_model, "--ignore-case")
    assert code == 2 and "--ignore-case goes with --charset" in err
