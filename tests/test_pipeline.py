"""Short end-to-end runs: generate, train, test and predict on one model.pkl; resume; the Python API."""

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from owndata_data import draw
from PIL import Image

import captcha_gen
import captcha_predict
import captcha_test
import captcha_train
from captchakit.api import load_model, predict
from captchakit.checkpoint import read_checkpoint
from captchakit.data.labels import write_labels_file
from captchakit.data.sets import load_labelled
from captchakit.train import loop

# "(raw weights ...)" when --ema (the default) checks the moving average.
EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  loss [\d.]+  val: ([\d,]+) captchas, [\d.]+% exact, [\d.]+% of characters(?:  \(raw weights [\d.]+%\))?  \d+ s",
    re.M,
)


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


def interrupted_at_epoch_2(monkeypatch, run, checks_per_epoch: int = 2) -> None:
    """run() (a captcha_train.py command), stopped while it checks epoch 2, as Ctrl-C or a kill would."""
    real_evaluate, calls = loop.evaluate, []

    def evaluate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == checks_per_epoch + 1:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(loop, "evaluate", evaluate_then_stop)
        code, _, err = run()
    assert code == 130 and "interrupted" in err, err


@pytest.mark.parametrize("average", [("--ema", "0"), ()], ids=["plain", "ema"])
def test_resume_continues_from_the_next_epoch_as_if_never_stopped(small_train, tiny_data, tmp_path, monkeypatch, average, cli):
    def train(model: Path, *extra):
        flags = ("--train-dir", small_train, "--val-dir", tiny_data / "test", "--batch-size", "32", "--device", "cpu", "--threads", "1")
        return cli(captcha_train.main, *flags, "--epochs", "3", "--model", model, *average, *extra)

    reference = tmp_path / "ref" / "model.pkl"
    assert train(reference)[0] == 0

    run = tmp_path / "run" / "model.pkl"
    plain = average == ("--ema", "0")
    interrupted_at_epoch_2(monkeypatch, lambda: train(run), checks_per_epoch=1 if plain else 2)
    last = run.with_name("model_run") / "last.pkl"
    assert read_checkpoint(last)["meta"]["epoch"] == 1 and len(history(run)) == 1

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
    if not plain:  # the moving average goes on from where it stopped, too
        ema, ema_straight = resumed["train_state"]["ema"], straight["train_state"]["ema"]
        assert ema["steps"] == ema_straight["steps"] == 6
        for name, tensor in ema_straight["weights"].items():
            assert torch.allclose(ema["weights"][name].float(), tensor.float(), atol=1e-4), name
    # model.pkl holds the best epoch of the whole run.
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert read_checkpoint(run)["meta"]["epoch"] == int(best["epoch"])


# --- --resume brings the run's own flags and data back ---


@pytest.fixture
def listed(tmp_path) -> Path:
    """48 small captchas named 0000.png ... in tmp_path/data, their labels only in data/labels.csv."""
    folder = tmp_path / "data"
    write_labels_file(folder / "labels.csv", draw(folder, 48, seed=5, name=lambda label, i: f"{i:04d}"))
    return folder


OWN_RUN = ("--train-dir", "data", "--labels", "data/labels.csv", "--val-split", "0.25", "--no-augment", "--label-smoothing", "0.05",
           "--epochs", "3", "--batch-size", "12", "--target-acc", "1.01", "--device", "cpu", "--threads", "1")  # fmt: skip


def test_bare_resume_continues_the_same_run_on_the_same_data(listed, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    assert cli(captcha_train.main, *OWN_RUN, "--model", "ref/model.pkl")[0] == 0
    interrupted_at_epoch_2(monkeypatch, lambda: cli(captcha_train.main, *OWN_RUN, "--model", "run/model.pkl"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resumed from another folder: the run's paths still mean its data
    run = tmp_path / "run" / "model.pkl"
    code, out, err = cli(captcha_train.main, "--resume", "--model", run, "--threads", "1")
    assert code == 0, err
    assert f"resuming {run.with_name('model_run') / 'last.pkl'} after epoch 1 of 3" in out
    assert f"held out of {listed} (seed 0): 12 images for validation" in out and "9 as a test share" in out
    assert f"training on 27 images ({listed})" in out
    assert [m[0] for m in EPOCH_LINE.findall(out)] == ["2", "3"]
    for row, ref in zip(history(run), history(tmp_path / "ref" / "model.pkl"), strict=True):
        assert row["lr"] == ref["lr"] and row["val_accuracy"] == ref["val_accuracy"]
        assert float(row["train_loss"]) == pytest.approx(float(ref["train_loss"]), abs=1e-3)
    resumed = read_checkpoint(run.with_name("model_run") / "last.pkl")
    straight = read_checkpoint(tmp_path / "ref" / "model_run" / "last.pkl")
    for key in ("labels", "split", "augment", "epochs"):
        assert resumed["meta"][key] == straight["meta"][key], key
    assert resumed["train_state"]["config"]["label_smoothing"] == 0.05


def test_flags_given_on_resume_win_where_they_fit_and_are_refused_where_they_would_break_it(listed, tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    interrupted_at_epoch_2(monkeypatch, lambda: cli(captcha_train.main, *OWN_RUN, "--model", "run/model.pkl"))
    before = Path("run/model_run/last.pkl").read_bytes()

    def refused(*flags) -> str:
        code, _, err = cli(captcha_train.main, "--resume", "--model", "run/model.pkl", *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err.strip().split(": error: ", 1)[1]

    assert refused("--epochs", "5") == (
        "--epochs 5: the run being resumed uses 3, and its schedule and optimizer state are built for that; "
        "resume without --epochs, or start a new run with another --model"
    )
    assert refused("--lr", "0.1").startswith("--lr 0.1: the run being resumed uses 0.003, ")
    assert refused("--charset", "0123456789") == (
        "--charset 0123456789: the run being resumed was trained with charset '123ABC'; "
        "resume without --charset, or start a new run with another --model"
    )
    assert refused("--length", "6").startswith("--length 6: the run being resumed was trained with length 4; ")
    assert refused("--val-split", "0.5") == (
        f"--resume: {listed} now gives 1 steps per epoch, and the run being resumed was planned with 2; "
        "resume it on the same data, or start a new run with another --model"
    )
    assert Path("run/model_run/last.pkl").read_bytes() == before  # nothing written by a refused resume

    # The data moved: the new --train-dir wins; a value equal to the run's own is accepted.
    shutil.move("data", "moved")
    code, out, err = cli(
        captcha_train.main, "--resume", "--model", "run/model.pkl", "--train-dir", "moved", "--labels", "moved/labels.csv",
        "--epochs", "3", "--charset", "123ABC", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "training on 27 images (moved)" in out and "held out of moved (seed 0): 12 images for validation" in out
    assert [m[0] for m in EPOCH_LINE.findall(out)] == ["2", "3"]
    assert read_checkpoint("run/model_run/last.pkl")["meta"]["labels"] == str((tmp_path / "moved" / "labels.csv").resolve())


def test_with_ema_the_average_is_checked_and_saved_and_the_raw_weights_go_on_training(small_train, tiny_data, tmp_path, cli):
    run = tmp_path / "model.pkl"
    flags = ("--train-dir", small_train, "--val-dir", tiny_data / "test", "--batch-size", "32", "--threads", "1", "--epochs", "1")
    code, out, _ = cli(captcha_train.main, *flags, "--model", run, "--ema", "0.9")
    assert code == 0
    assert re.search(r"% of characters  \(raw weights [\d.]+%\)", out), out
    last = read_checkpoint(run.with_name("model_run") / "last.pkl")
    average = last["train_state"]["ema"]
    assert average["steps"] == 2  # 1 epoch of 2 batches
    # last.pkl keeps the raw weights that --resume trains on; model.pkl is the average.
    assert not torch.allclose(average["weights"]["features.1.0.weight"], last["state_dict"]["features.1.0.weight"])
    best = read_checkpoint(run)
    for name, tensor in best["state_dict"].items():
        assert torch.equal(tensor.float(), average["weights"][name].float()), name
    # captcha_test.py reads the saved average exactly as training checked it.
    code, test_out, _ = cli(captcha_test.main, "--model", run, "--data", tiny_data / "test")
    assert code == 0 and f"{float(best['meta']['val_accuracy']):.2%} exact" in test_out
