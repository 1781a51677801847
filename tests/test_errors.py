"""Bad input: exit status 2 and one line on stderr that names the file or flag; unusable data files are listed."""

import re
import shutil
import string
from pathlib import Path

import pytest
import torch
from torch import nn

import captcha_gen
import captcha_predict
import captcha_test
import captcha_train
from captcha_checkpoint import read_checkpoint, save_checkpoint
from captcha_cnn_model import build_model
from captcha_setting import Settings


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
    save_checkpoint(path, build_model(settings), {"epoch": 0})
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


@pytest.mark.parametrize("script", ["train", "test", "predict"])
def test_device_cuda_without_cuda(tiny_model, tiny_data, tmp_path, script, monkeypatch, cli):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if script == "train":
        result = cli(captcha_train.main, "--device", "cuda", "--train-dir", tiny_data / "train", "--model", tmp_path / "m.pkl")
    elif script == "test":
        result = cli(captcha_test.main, "--device", "cuda", "--model", tiny_model)
    else:
        result = cli(captcha_predict.main, "--device", "cuda", "--model", tiny_model)
    assert error_line(result) == "--device cuda: CUDA is not available on this machine; use --device cpu or auto"


def test_unknown_device(tiny_model, cli):
    assert error_line(cli(captcha_test.main, "--device", "tpu", "--model", tiny_model)).startswith("--device tpu: unknown device")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--train", "-1"), "--train -1: a count cannot be negative"),
        (("--workers", "0"), "--workers 0: use at least 1"),
    ],
)
def test_generator_flags(tmp_path, flags, expected, cli):
    assert error_line(cli(captcha_gen.main, "--out", tmp_path, *flags)) == expected


def test_generator_output_that_cannot_be_written(tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    assert error_line(cli(captcha_gen.main, "--out", blocker, "--train", "1")).startswith(f"--out {blocker}: cannot write there")
