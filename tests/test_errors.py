"""Bad input: exit status 2 and one line on stderr that names the file or flag; unusable data files are listed."""

import re
import shutil
import string
from pathlib import Path

import pytest
import torch
from owndata_data import draw
from torch import nn

import captcha_gen
import captcha_predict
import captcha_server
import captcha_test
import captcha_train
from captcha_setting import Settings
from captchakit.checkpoint import read_checkpoint, save_checkpoint
from captchakit.model import CaptchaCNN


def error_line(result) -> str:
    """The message of the one `PROG: error: MESSAGE` line a failed command printed."""
    code, out, err = result
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prog, sep, message = lines[0].partition(": error: ")
    assert sep and prog and message, lines[0]
    return message


def train(cli, *flags):
    return cli(captcha_train.main, "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--threads", "1", *flags)


@pytest.fixture
def bad_files(tiny_data, tmp_path) -> dict[str, bytes]:
    """Unusable files as a data set may hold them: name -> content."""
    good = sorted((tiny_data / "test").glob("*.png"))[0].read_bytes()
    return {
        "ABCD_900000.png": b"this is not an image\n",
        "ABCE_900001.png": good[: len(good) // 2],  # a truncated PNG
        "abcd_900002.png": good,  # lower case: outside the default charset
        "ABC_900003.png": good,  # 3 characters, not 4
    }


@pytest.fixture
def dirty_test(tiny_data, tmp_path, bad_files) -> Path:
    """tiny_data's 60 test images plus the 4 unusable files."""
    folder = tmp_path / "dirty"
    shutil.copytree(tiny_data / "test", folder, ignore=shutil.ignore_patterns(".*"))
    for name, content in bad_files.items():
        (folder / name).write_bytes(content)
    return folder


# --- Folders ---


def test_missing_folders(tiny_data, tiny_model, tmp_path, cli):
    missing = tmp_path / "nowhere"
    message = error_line(train(cli, "--train-dir", missing, "--val-dir", tiny_data / "test", "--model", tmp_path / "m.pkl"))
    assert message.startswith(f"--train-dir {missing}: folder not found; ")
    message = error_line(train(cli, "--train-dir", tiny_data / "train", "--val-dir", missing, "--model", tmp_path / "m.pkl"))
    assert message.startswith(f"--val-dir {missing}: folder not found; ")
    message = error_line(cli(captcha_test.main, "--model", tiny_model, "--data", missing))
    assert re.match(f"--data {re.escape(str(missing))}: (folder not found|no such file or folder); ", message)
    message = error_line(cli(captcha_predict.main, "--model", tiny_model, missing))
    assert message.startswith(f"{missing}: no such file or folder; ")
    assert not (tmp_path / "m.pkl").exists()


def test_folders_without_images(tiny_data, tiny_model, tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a captcha")
    message = error_line(train(cli, "--train-dir", empty, "--val-dir", tiny_data / "test", "--model", tmp_path / "m.pkl"))
    assert message.startswith(f"--train-dir {empty}: no images (png, ")
    message = error_line(cli(captcha_test.main, "--model", tiny_model, "--data", empty))
    assert message.startswith(f"--data {empty}: no images")
    message = error_line(cli(captcha_predict.main, "--model", tiny_model, empty))
    assert message.startswith(f"{empty}: no images found")


# --- Unusable files in a data set: counted and listed, the rest is used ---


def test_unusable_files_in_a_test_set_are_counted_and_listed(tiny_model, dirty_test, bad_files, cli):
    code, out, _ = cli(captcha_test.main, "--model", tiny_model, "--data", dirty_test, "--device", "cpu")
    assert code == 0
    skipped = next(line for line in out.splitlines() if line.startswith("skipped "))
    assert skipped.startswith(f"skipped 4 unusable file(s) in {dirty_test}: ")
    for name in bad_files:
        assert f"{name} (" in skipped
    assert "ABCE_900001.png (image file is truncated)" in skipped
    assert "abcd_900002.png (label 'abcd' has characters outside the charset" in skipped
    assert "ABC_900003.png (label 'ABC' has 3 characters, expected 4)" in skipped
    assert "test: 60 captchas, " in out


def test_unusable_files_in_a_training_set_are_counted_and_listed(dirty_test, tiny_data, tmp_path, cli):
    default = ("--charset", Settings().charset, "--length", "4")  # named: without them the charset may be read off the labels
    code, out, _ = train(cli, "--train-dir", dirty_test, "--val-dir", tiny_data / "test", "--model", tmp_path / "m.pkl", *default)
    assert code == 0
    assert f"skipped 4 unusable file(s) in {dirty_test}: " in out, out
    assert "training on 60 images" in out and (tmp_path / "m.pkl").exists()


def test_a_folder_of_only_unusable_files(tiny_model, tmp_path, bad_files, cli):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name, content in bad_files.items():
        (folder / name).write_bytes(content)
    message = error_line(cli(captcha_test.main, "--model", tiny_model, "--data", folder))
    assert message.startswith(f"--data {folder}: none of its 4 images is usable")
    assert "ABCD_900000.png" in message


def test_predict_lists_unreadable_files_and_reads_the_rest(tiny_model, tiny_data, tmp_path, bad_files, cli):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in sorted((tiny_data / "predict").glob("*.png"))[:3]:
        shutil.copy(path, folder)
    (folder / "ABCD_900000.png").write_bytes(bad_files["ABCD_900000.png"])
    code, out, err = cli(captcha_predict.main, "--model", tiny_model, "--device", "cpu", folder)
    assert code == 0
    assert len(out.splitlines()) == 3 and "ABCD_900000" not in out
    assert f"skipped {folder / 'ABCD_900000.png'}: not a readable image" in err


@pytest.mark.parametrize("name", ["ABCD_900000.png", "ABCE_900001.png"], ids=["not-an-image", "truncated-png"])
def test_predict_on_one_unreadable_file(tiny_model, tmp_path, bad_files, name, cli):
    path = tmp_path / name
    path.write_bytes(bad_files[name])
    message = error_line(cli(captcha_predict.main, "--model", tiny_model, path))
    assert message.startswith(f"{path}: not a readable image (")


# --- model.pkl ---


def untrained(settings: Settings, path: Path) -> Path:
    save_checkpoint(path, CaptchaCNN(settings), {"epoch": 0})
    return path


@pytest.mark.parametrize("script", [captcha_test, captcha_predict])
def test_model_missing_corrupt_or_not_a_model(tiny_model, tiny_data, tmp_path, script, cli):
    target = ["--data", tiny_data / "test"] if script is captcha_test else [tiny_data / "predict"]

    def message(model: Path) -> str:
        text = error_line(cli(script.main, "--model", model, *target))
        assert text.startswith(f"--model {model}: ")
        return text[len(f"--model {model}: ") :]

    assert message(tmp_path / "missing.pkl").startswith("file not found; ")
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"hello, I am not a model\n")
    assert message(garbage).startswith("unreadable or truncated")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(tiny_model.read_bytes()[:5000])
    assert message(truncated).startswith("unreadable or truncated")
    other = tmp_path / "other.pkl"
    torch.save({"weights": torch.zeros(3)}, other)
    assert message(other).startswith("not a captcha-toolkit model file")
    pickled = tmp_path / "pickled.pkl"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled module: refused, never run
    assert message(pickled).startswith("refused to load, it asks to load torch.nn")
    mismatched = tmp_path / "mismatched.pkl"
    ckpt = read_checkpoint(tiny_model)
    ckpt["settings"]["length"] = 5  # the head's size no longer fits
    torch.save(ckpt, mismatched)
    assert message(mismatched).startswith("its weights do not fit its settings")


def test_model_trained_with_other_settings_than_the_data(tiny_data, tmp_path, cli):
    digits6 = untrained(Settings(charset=string.digits, length=6), tmp_path / "digits6.pkl")
    folder = tiny_data / "test"
    message = error_line(cli(captcha_test.main, "--model", digits6, "--data", folder))
    assert message.startswith(f"--data {folder}: none of its 60 images is usable")
    assert "has 4 characters, expected 6" in message


def test_resume_with_nothing_to_resume(tiny_data, tmp_path, cli):
    model = tmp_path / "model.pkl"
    message = error_line(train(cli, "--resume", "--train-dir", tiny_data / "train", "--val-dir", tiny_data / "test", "--model", model))
    assert message.startswith("--resume: nothing to resume at ")


# --- Flags ---


@pytest.mark.parametrize("script", [captcha_test, captcha_predict])
def test_test_shifts_wider_than_half_the_image(tiny_model, script, cli):
    message = error_line(cli(script.main, "--test-shifts", "80", "--model", tiny_model))
    assert message == "--test-shifts 80: shifts must be whole pixels under 80 (half the image width), not (-80, 0, 80); 3 is a good choice"


def test_unknown_device(tiny_model, cli):
    assert error_line(cli(captcha_test.main, "--device", "tpu", "--model", tiny_model)).startswith("--device tpu: unknown device")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--train", "-1"), "--train -1: a count cannot be negative"),
        (("--workers", "0"), "--workers 0: use at least 1"),
        (("--emphasis", "O0"), "--emphasis 'O0': write CHARACTERS:WEIGHT groups such as O0:3 (a weight above 0), or none"),
        (("--emphasis", "O0:-1"), "--emphasis 'O0:-1': write CHARACTERS:WEIGHT groups such as O0:3 (a weight above 0), or none"),
        (("--emphasis", "Oo:3"), "--emphasis 'Oo:3': 'o' is not in the charset '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'; leave it out"),
    ],
)
def test_generator_flags(tmp_path, flags, expected, cli):
    assert error_line(cli(captcha_gen.main, "--out", tmp_path, *flags)) == expected


def test_generator_output_that_cannot_be_written(tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    assert error_line(cli(captcha_gen.main, "--out", blocker, "--train", "1")).startswith(f"--out {blocker}: cannot write there")


@pytest.mark.parametrize("device", ["cuda", "mps"])
@pytest.mark.parametrize("script", [captcha_train, captcha_test, captcha_predict, captcha_server])
def test_a_device_this_machine_lacks(tiny_model, tmp_path, script, device, monkeypatch, cli):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    args = ["--train-dir", tmp_path, "--model", tmp_path / "m.pkl"] if script is captcha_train else ["--model", tiny_model]
    upper = device.upper()
    assert error_line(cli(script.main, "--device", device, *args)) == (
        f"--device {device}: {upper} is not available on this machine; use --device cpu or auto"
    )
    assert not (tmp_path / "m.pkl").exists()


# --- --init-from: a model.pkl trained with other settings or another network ---


@pytest.fixture
def small_own(tmp_path) -> Path:
    """40 captchas of another style than tiny_model's: 4 characters from ABC123, 64x32."""
    draw(tmp_path / "own", 40, seed=6)
    return tmp_path / "own"


def test_init_from_a_model_with_other_settings_takes_what_fits_and_the_shared_characters_rows(tiny_model, small_own, tmp_path, cli):
    model = tmp_path / "m.pkl"
    code, out, err = train(cli, "--train-dir", small_own, "--val-split", "0.25", "--init-from", tiny_model, "--model", model)
    assert code == 0, err
    # tiny_model reads 0-9A-Z; this set's 1, 2, 3, A, B, C are among them: their classifier rows are taken
    assert f"fine-tuning from {tiny_model}: " in out and "the classifier's rows of 6 of this model's 6 classes" in out
    ckpt, source = read_checkpoint(model), read_checkpoint(tiny_model)
    assert ckpt["settings"]["charset"] == "123ABC" and source["settings"]["charset"] != "123ABC"


def test_init_from_a_missing_model_or_another_network(tiny_model, small_own, tmp_path, cli):
    own = ("--train-dir", small_own, "--val-split", "0.25", "--model", tmp_path / "m.pkl")
    missing = tmp_path / "none.pkl"
    assert error_line(train(cli, *own, "--init-from", missing)) == (
        f"--init-from {missing}: file not found; train one with `python captcha_train.py` or pass --init-from PATH"
    )
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a model")
    assert error_line(train(cli, *own, "--init-from", garbage)).startswith(f"--init-from {garbage}: unreadable or truncated")
    narrow = '{"channels": [16, 24, 32, 48, 64]}'
    message = error_line(train(cli, *own, "--init-from", tiny_model, "--model-config", narrow))
    assert re.fullmatch(
        rf"--init-from {re.escape(str(tiny_model))}: its convolution layers do not fit this network "
        r"\(\d+ of \d+ tensors match\); use a model with the same --model-config",
        message,
    )
    assert not (tmp_path / "m.pkl").exists()


def test_a_model_config_that_builds_no_network(small_own, tmp_path, cli):
    own = ("--train-dir", small_own, "--val-split", "0.25", "--model", tmp_path / "m.pkl")
    short = '{"channels": [16, 24]}'
    assert error_line(train(cli, *own, "--model-config", short)) == (
        f"--model-config {short}: ModelConfig.channels and strides must have the same length; see ModelConfig in captcha_cnn_model.py"
    )
    assert error_line(train(cli, *own, "--model-config", "[1, 2]")).startswith("--model-config: not a valid JSON object of ModelConfig")
    assert not (tmp_path / "m.pkl").exists()


@pytest.mark.parametrize("decay", ["1.5", "-0.1", "1"])
def test_a_moving_average_decay_outside_0_to_1(small_own, tmp_path, decay, cli):
    own = ("--train-dir", small_own, "--val-split", "0.25", "--model", tmp_path / "m.pkl")
    assert error_line(train(cli, *own, "--ema", decay)) == f"--ema {float(decay)}: the decay must lie between 0 and 1, e.g. 0.998"
    assert not (tmp_path / "m.pkl").exists()


# --- Labels files through the command line ---


@pytest.fixture
def listed(tiny_data, tmp_path) -> Path:
    """tiny_data's 60 test images renamed 0000.png ... (labels no longer in the names)."""
    folder = tmp_path / "listed"
    folder.mkdir()
    for i, path in enumerate(sorted((tiny_data / "test").glob("*.png"))):
        shutil.copy(path, folder / f"{i:04d}.png")
    return folder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x.png,AB12\ny.png,CD34\n", "{path}: none of its 2 file names is an image in {folder} (first: x.png); "
         "pass the folder that this labels file describes"),
        ("0000.png,AB12\n0001.png,CD34\n0000.png,XY12\n", "{path} line 3: 0000.png is listed again with another label "
         "('XY12' here, 'AB12' on line 1); keep one line per file"),
        ("0000.png,\n0001.png,\n", "{path}: every label is empty; fill in the second column (filename,label)"),
        ("0000.png;AB12\n", "{path} line 1: fields are separated by a semicolon; use a comma or a tab (filename,label)"),
    ],
    ids=["unknown-names", "duplicate-entry", "empty-labels", "other-delimiter"],
)  # fmt: skip
@pytest.mark.parametrize("flag", ["--labels", "--val-labels", "test --labels"])
def test_a_bad_labels_file_stops_each_script_with_one_line(listed, tiny_data, tiny_model, tmp_path, text, expected, flag, cli):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    if flag == "--labels":
        result = train(cli, "--train-dir", listed, "--labels", path, "--val-dir", tiny_data / "test", "--model", tmp_path / "m.pkl")
    elif flag == "--val-labels":
        model_flags = ("--charset", Settings().charset, "--length", "4", "--model", tmp_path / "m.pkl")
        result = train(cli, "--train-dir", tiny_data / "train", "--val-dir", listed, "--val-labels", path, *model_flags)
    else:
        result = cli(captcha_test.main, "--model", tiny_model, "--data", listed, "--labels", path, "--device", "cpu")
    where = "--val-labels" if flag == "--val-labels" else "--labels"
    assert error_line(result) == f"{where} " + expected.format(path=path, folder=listed)
    assert not (tmp_path / "m.pkl").exists()


def test_what_a_labels_file_costs_is_counted_and_the_rest_is_used(listed, tiny_data, tmp_path, cli):
    truth = sorted(p.name.split("_")[0] for p in (tiny_data / "test").glob("*.png"))
    lines = [f"{i:04d}.png,{label}" for i, label in enumerate(truth)]
    lines[5] = "0005.png,"  # an empty label
    path = tmp_path / "labels.tsv"
    path.write_text("filename\tlabel\n" + "\n".join(lines + [lines[0], "ghost.png,AB12"]).replace(",", "\t") + "\n")
    model_flags = ("--charset", Settings().charset, "--length", "4", "--model", tmp_path / "m.pkl")
    code, out, err = train(cli, "--train-dir", tiny_data / "train", "--val-dir", listed, "--val-labels", path, *model_flags)
    assert code == 0, err
    assert f"{path}: 1 file name(s) not found in {listed}, ignored (first: ghost.png)" in out
    assert f"{path}: 1 entry(ies) with an empty label, skipped (first: 0005.png)" in out
    assert f"{path}: 1 repeated line(s) ignored" in out
    assert f"skipped 1 unusable file(s) in {listed}: 0005.png (no label)" in out
    assert f"checking on 59 ({listed})" in out
