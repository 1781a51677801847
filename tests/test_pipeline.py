"""Short end-to-end runs: generate, train, test and predict on one model.pkl; resume; the Python API."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import captcha_gen
import captcha_predict
import captcha_test
import captcha_train
from captcha_checkpoint import read_checkpoint
from captcha_dataset import load_labelled
from captcha_predict import load_model, predict

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  loss [\d.]+  val: ([\d,]+) captchas, [\d.]+% exact, [\d.]+% of characters  \d+ s", re.M)


def history(model: Path) -> list[dict]:
    with open(model.with_name(model.stem + "_run") / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_with_other_settings_then_test_and_predict_with_no_flags(tmp_path, monkeypatch, cli):
    """The user's commands in a fresh folder with the default paths: dataset/, model.pkl."""
    monkeypatch.chdir(tmp_path)
    digits6 = ("--charset", "0123456789", "--length", "6")
    code, _, _ = cli(captcha_gen.main, "--train", "96", "--test", "24", "--predict", "6", *digits6, "--seed", "4", "--workers", "2")
    assert code == 0
    code, out, _ = cli(
        captcha_train.main, "--epochs", "3", "--batch-size", "32", "--device", "cpu", "--threads", "1", *digits6, "--target-acc", "0"
    )
    assert code == 0
    assert [m[:3] for m in EPOCH_LINE.findall(out)] == [("1", "3", "24")]  # --target-acc 0 stops after the first epoch
    assert "reached --target-acc 0.00% at epoch 1" in out and "saved to model.pkl" in out
    assert [row["epoch"] for row in history(Path("model.pkl"))] == ["1"]
    ckpt = read_checkpoint("model.pkl")
    assert ckpt["settings"]["charset"] == "0123456789" and ckpt["settings"]["length"] == 6
    assert {"epoch", "best_accuracy", "val_accuracy", "val_char_accuracy"} <= ckpt["meta"].keys()

    # Test and predict take the settings from model.pkl: no flags at all.
    code, out, _ = cli(captcha_test.main, "--json", "figures.json")
    assert code == 0
    meta = ckpt["meta"]
    assert out.startswith(f"test: 24 captchas, {meta['val_accuracy']:.2%} exact, {meta['val_char_accuracy']:.2%} of characters")
    figures = json.loads(Path("figures.json").read_text())
    assert figures["n"] == 24
    assert figures["accuracy"] == meta["val_accuracy"] and figures["char_accuracy"] == meta["val_char_accuracy"]

    code, out, err = cli(captcha_predict.main)
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert sorted(f for f, _, _ in lines) == sorted(str(Path("dataset/predict") / p.name) for p in Path("dataset/predict").iterdir())
    assert all(re.fullmatch(r"\d{6}", text) and 0.0 <= float(conf) <= 1.0 for _, text, conf in lines)
    assert re.search(r"right: \d+ of 6 labelled images", err)


def test_test_measures_the_same_figures_training_saved(tiny_model, tiny_data, cli):
    meta = read_checkpoint(tiny_model)["meta"]
    code, out, _ = cli(captcha_test.main, "--model", tiny_model, "--data", tiny_data / "test", "--device", "cpu")
    assert code == 0
    assert re.match(r"test: 60 captchas, \d+\.\d\d% exact, \d+\.\d\d% of characters", out)
    assert f"{meta['val_accuracy']:.2%} exact, {meta['val_char_accuracy']:.2%} of characters" in out


def test_python_caller_gets_what_the_command_line_prints(tiny_model, tiny_data, cli):
    code, out, _ = cli(captcha_predict.main, "--model", tiny_model, "--device", "cpu", tiny_data / "predict")
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert len(lines) == 20
    model = load_model(tiny_model, device="cpu")
    assert model.settings.length == 4
    for file, text, conf in lines[:4]:
        by_path = predict(model, file)
        assert by_path.text == text and by_path.confidence == pytest.approx(float(conf), abs=2e-4)
        with Image.open(file) as image:
            by_image = predict(model, image)
            bigger = predict(model, image.convert("RGB").resize((320, 120)))  # another size is resized on load
        got_text, got_conf = by_image  # a (text, confidence) pair
        assert got_text == text and got_conf == pytest.approx(by_path.confidence, abs=1e-5)
        assert predict(model, Path(file)) == predict(model, Path(file).read_bytes())
        assert len(bigger.text) == 4 and 0.0 <= bigger.confidence <= 1.0


def test_images_of_another_size_are_resized_on_load(tiny_model, tmp_path, cli):
    code, _, _ = cli(captcha_gen.main, "--train", "0", "--test", "8", "--predict", "0", "--width", "200", "--height", "50",
                     "--seed", "9", "--out", tmp_path)  # fmt: skip
    assert code == 0
    model = load_model(tiny_model, device="cpu")
    data = load_labelled(tmp_path / "test", model.codec, quiet=True)
    assert data.images.shape == (8, 60, 160)
    code, out, _ = cli(captcha_test.main, "--model", tiny_model, "--data", tmp_path / "test", "--device", "cpu")
    assert code == 0 and out.startswith("test: 8 captchas, ")


@pytest.fixture
def small_train(tiny_data, tmp_path) -> Path:
    """64 of tiny_data's training images: two batches of 32 per epoch."""
    folder = tmp_path / "train"
    folder.mkdir()
    for path in sorted((tiny_data / "train").glob("*.png"))[:64]:
        shutil.copy(path, folder)
    return folder


def test_resume_continues_from_the_next_epoch_as_if_never_stopped(small_train, tiny_data, tmp_path, monkeypatch, cli):
    def train(model: Path, *extra):
        flags = ("--train-dir", small_train, "--val-dir", tiny_data / "test", "--batch-size", "32", "--device", "cpu", "--threads", "1")
        return cli(captcha_train.main, *flags, "--epochs", "3", "--model", model, *extra)

    reference = tmp_path / "ref" / "model.pkl"
    assert train(reference)[0] == 0

    # Stop the run while it checks epoch 2, as Ctrl-C or a kill would.
    real_evaluate, calls = captcha_train.evaluate, []

    def evaluate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(captcha_train, "evaluate", evaluate_then_stop)
    run = tmp_path / "run" / "model.pkl"
    code, _, err = train(run)
    assert code == 130 and "interrupted" in err
    last = run.with_name("model_run") / "last.pkl"
    assert read_checkpoint(last)["meta"]["epoch"] == 1 and len(history(run)) == 1
    monkeypatch.setattr(captcha_train, "evaluate", real_evaluate)

    code, out, _ = train(run, "--resume")
    assert code == 0
    assert f"resuming {last} after epoch 1 of 3" in out
    assert [m[0] for m in EPOCH_LINE.findall(out)] == ["2", "3"]
    rows, ref_rows = history(run), history(reference)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    # The same schedule, batches and results as the run that was never stopped.
    for row, ref in zip(rows, ref_rows, strict=True):
        assert row["lr"] == ref["lr"] and row["val_accuracy"] == ref["val_accuracy"]
        assert float(row["train_loss"]) == pytest.approx(float(ref["train_loss"]), abs=1e-3)
    resumed, straight = read_checkpoint(last), read_checkpoint(reference.with_name("model_run") / "last.pkl")
    assert resumed["meta"]["epoch"] == 3
    for name, tensor in straight["state_dict"].items():
        assert torch.allclose(resumed["state_dict"][name].float(), tensor.float(), atol=1e-4), name
    # model.pkl holds the best epoch of the whole run.
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert read_checkpoint(run)["meta"]["epoch"] == int(best["epoch"])
