"""Training on a user's own folder: file-name labels, any image format, settings read off the data,
--val-split recorded and honoured by captcha_test.py, variable length, --ignore-case."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import torch
from owndata_data import draw, mixed_case
from PIL import Image

import captcha_predict
import captcha_test
import captcha_train
from captcha_setting import Settings
from captchakit.checkpoint import read_checkpoint
from captchakit.codec import LabelCodec
from captchakit.data import folders as own
from captchakit.data.images import label_from_name, load_image
from captchakit.train import config, prepare
from captchakit.train.config import TrainConfig, make_plan

FAST = ["--epochs", "1", "--batch-size", "16", "--threads", "2"]


def error_of(err: str) -> str:
    """The one error line without the program name run_cli puts in front."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0].split(": error: ", 1)[1]


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """80 captchas named LABEL_i.png, 4 characters from ABC123, 64x32."""
    folder = tmp_path_factory.mktemp("named")
    draw(folder, 80, seed=1)
    return folder


@pytest.mark.parametrize(
    "name, label",
    [
        ("AB12_000123.png", "AB12"),
        ("AB12.png", "AB12"),
        ("ab12.JPG", "ab12"),
        ("AB12 (2).png", "AB12"),
        ("x7k.v2.webp", "x7k.v2"),
        ("_9.png", ""),
    ],
)
def test_label_from_name_reads_both_naming_forms(name, label):
    assert label_from_name(name) == label


def _reference():
    image = Image.new("RGB", (128, 64), "white")
    image.paste((30, 30, 30), (20, 10, 60, 50))
    image.paste((120, 120, 120), (70, 20, 110, 40))
    return image


@pytest.mark.parametrize(
    "fmt, mode, tolerance",
    [
        ("PNG", "RGB", 0.5),
        ("PNG", "RGBA", 0.5),
        ("PNG", "LA", 0.5),
        ("PNG", "L", 0.5),
        ("PNG", "P", 2),
        ("PNG", "I;16", 1),
        ("JPEG", "RGB", 4),
        ("GIF", "P", 2),
        ("BMP", "RGB", 0.5),
        ("WEBP", "RGB", 4),
    ],
)
def test_load_image_reads_every_format_and_mode_alike(fmt, mode, tolerance):
    ref = load_image(_reference(), 64, 32)
    image = _reference()
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    elif mode == "RGBA":  # transparent background: composited on white
        image = image.convert("RGBA")
        image.putalpha(Image.eval(image.convert("L"), lambda v: 0 if v == 255 else 255))
    else:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt)
    got = load_image(buf.getvalue(), 64, 32)
    assert got.shape == (32, 64) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).mean() <= tolerance


def test_any_image_size_is_resized_to_the_settings():
    small, big = _reference().resize((40, 20)), _reference().resize((400, 200))
    assert load_image(small, 64, 32).shape == load_image(big, 64, 32).shape == (32, 64)


def test_training_reads_settings_off_the_data_and_test_uses_the_held_out_part(named, cli, tmp_path):
    model = tmp_path / "m.pkl"
    code, out, _ = cli(captcha_train.main, "--train-dir", named, "--val-split", "0.2", "--model", model, *FAST)
    assert code == 0, out
    assert f"read off 80 labelled images in {named}: charset '123ABC' (6), length 4, median image size 64x32" in out
    assert f"held out of {named} (seed 0): 16 images for validation (they check the run), 16 as a test share" in out
    ckpt = read_checkpoint(model)
    assert ckpt["settings"]["charset"] == "123ABC" and ckpt["settings"]["length"] == 4
    assert (ckpt["settings"]["width"], ckpt["settings"]["height"]) == (64, 32)
    split = ckpt["meta"]["split"]
    assert split["fractions"] == [0.2, 0.1] and split["seed"] == 0 and len(split["val"]) == len(split["test"]) == 16
    assert not set(split["val"]) & set(split["test"])
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", named)
    assert code == 0
    assert f"testing only the 16 images of {named} held out as the test share in training: nothing in training saw them (seed 0)" in out
    assert "test: 16 captchas" in out
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", named, "--all-images")
    assert code == 0 and "test: 80 captchas" in out and "held out" not in out


def test_split_is_seeded_and_the_same_for_the_same_names():
    names = [f"{i:03d}.png" for i in range(50)]
    kept, held = own.split_names(names, 0.1, 3, "--val-split", "d")
    assert len(held) == 5 and sorted(kept + held) == names
    assert own.split_names(list(reversed(names)), 0.1, 3, "--val-split", "d") == (kept, held)
    assert own.split_names(names, 0.1, 4, "--val-split", "d")[1] != held


def test_val_split_errors_are_one_line(named, tmp_path, cli):
    code, _, err = cli(captcha_train.main, "--train-dir", named, "--val-split", "1.5", "--model", tmp_path / "m.pkl", *FAST)
    assert code == 2 and error_of(err) == "--val-split 1.5: give a share between 0 and 1, e.g. 0.1"
    few = tmp_path / "few"
    few.mkdir()
    for name in sorted(p.name for p in named.glob("*.png"))[:3]:
        shutil.copy(named / name, few / name)
    code, _, err = cli(captcha_train.main, "--train-dir", few, "--model", tmp_path / "m.pkl", *FAST)
    assert code == 2
    assert error_of(err) == (
        f"--val-split 0.1 --test-split 0.1: {few} has 3 usable image(s), too few to hold 10% and 10% out; "
        "label more images or pass a separate validation folder (--val-dir)"
    )


def test_size_is_rounded_to_the_stem_and_said(capsys):
    assert [own.round_to(v, 4) for v in (50, 49, 52, 54, 8)] == [52, 48, 52, 56, 16]
    settings = prepare.finish_settings(TrainConfig(), Settings(width=200, height=50), stem=4)
    assert (settings.width, settings.height) == (200, 52)
    assert "image size 200x52: 200x50 rounded to multiples of the network's stem factor 4" in capsys.readouterr().out


def test_small_data_gets_more_epochs_and_augmentation():
    def resolved(n, epochs=None, augment=None, strength=1.0):
        plan = make_plan(TrainConfig(epochs=epochs, augment=augment, augment_strength=strength), n)
        return plan.epochs, plan.augment

    assert resolved(936) == (-(-config.SMALL_DATA_IMAGES // 936), 1.0)
    assert resolved(50) == (config.MAX_SMALL_EPOCHS, 1.0)
    assert resolved(100_000) == (8, 0.0)
    assert resolved(936, epochs=5, augment=False) == (5, 0.0)
    assert resolved(100_000, augment=True, strength=0.5) == (8, 0.5)


@pytest.fixture(scope="module")
def variable(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variable")
    draw(folder, 60, Settings(charset="ABC123", length=5, min_length=3, width=64, height=32), seed=2)
    return folder


def test_variable_length_labels_train_test_and_predict_without_padding(variable, cli, tmp_path):
    model = tmp_path / "m.pkl"
    code, out, _ = cli(captcha_train.main, "--train-dir", variable, "--val-split", "0.2", "--model", model, *FAST)
    assert code == 0
    assert "length 3-5 (3: " in out
    settings = read_checkpoint(model)["settings"]
    assert (settings["min_length"], settings["length"]) == (3, 5)
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", variable)
    assert code == 0 and "test: 12 captchas" in out
    code, out, _ = cli(captcha_predict.main, "--model", model, variable)
    texts = [line.split("\t")[1] for line in out.strip().splitlines()]
    assert len(texts) == 60 and all(set(t) <= set("ABC123") for t in texts)


def test_decoding_drops_the_padding_class():
    codec = LabelCodec(Settings(charset="ABC", length=5, min_length=2))
    logits = torch.full((1, 5, codec.num_classes), -9.0)
    for pos, cls in enumerate([1, 0, codec.pad, codec.pad, codec.pad]):
        logits[0, pos, cls] = 9.0
    assert codec.decode(logits.view(1, -1))[0][0] == "BA"
    assert codec.encode("BA") == [1, 0, codec.pad, codec.pad, codec.pad]


def test_ignore_case_folds_labels_and_charset(tmp_path, cli):
    folder = tmp_path / "mixed"
    labels = draw(folder, 40, seed=3)
    for old, new in zip(labels, mixed_case({k: k for k in labels}, seed=1).values(), strict=True):
        (folder / old).rename(folder / new)
    code, out, _ = cli(captcha_train.main, "--train-dir", folder, "--val-split", "0.25", "--model", tmp_path / "cs.pkl", *FAST)
    assert code == 0 and "charset '123ABCabc' (9)" in out
    model = tmp_path / "ci.pkl"
    code, out, _ = cli(captcha_train.main, "--train-dir", folder, "--val-split", "0.25", "--ignore-case", "--model", model, *FAST)
    assert code == 0 and "charset '123ABC' (6)" in out
    settings = read_checkpoint(model)["settings"]
    assert settings["ignore_case"] is True and settings["charset"] == "123ABC"
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", folder, "--all-images")
    assert code == 0 and "test: 40 captchas" in out and "skipped" not in out


def test_given_charset_with_ignore_case_is_upper_cased(named, tmp_path, cli):
    model = tmp_path / "m.pkl"
    args = ["--train-dir", named, "--val-split", "0.2", "--charset", "abc123", "--ignore-case", "--model", model, *FAST]
    code, _, _ = cli(captcha_train.main, *args)
    assert code == 0 and read_checkpoint(model)["settings"]["charset"] == "ABC123"


def test_augmentation_is_recorded_and_can_be_turned_off(named, tmp_path, cli):
    on, off = tmp_path / "on.pkl", tmp_path / "off.pkl"
    assert cli(captcha_train.main, "--train-dir", named, "--val-split", "0.2", "--model", on, *FAST)[0] == 0
    assert cli(captcha_train.main, "--train-dir", named, "--val-split", "0.2", "--model", off, "--no-augment", *FAST)[0] == 0
    assert read_checkpoint(on)["meta"]["augment"] == 1.0 and read_checkpoint(on)["meta"]["shift"] == 0
    assert read_checkpoint(off)["meta"]["augment"] == 0.0 and read_checkpoint(off)["meta"]["shift"] == 3  # whole-pixel shifts instead


def test_small_data_run_says_how_many_epochs_it_chose(named, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(config, "MAX_SMALL_EPOCHS", 2)
    model = tmp_path / "m.pkl"
    code, out, _ = cli(
        captcha_train.main, "--train-dir", named, "--val-split", "0.2", "--model", model, "--batch-size", "32", "--threads", "2"
    )
    assert code == 0
    assert "small data set (48 training images): 2 epochs (--epochs to choose)" in out  # 80 less 16 + 16 held out
    assert read_checkpoint(model)["meta"]["epochs"] == 2


def test_settings_flags_still_win_over_the_data(named, tmp_path, cli):
    model = tmp_path / "m.pkl"
    code, out, _ = cli(
        captcha_train.main, "--train-dir", named, "--val-split", "0.2", "--width", "96", "--height", "30", "--model", model, *FAST
    )
    assert code == 0 and "median image size" not in out
    ckpt = read_checkpoint(model)
    stem = ckpt["model_config"]["stem"]
    assert (ckpt["settings"]["width"], ckpt["settings"]["height"]) == (own.round_to(96, stem), own.round_to(30, stem))
    assert ckpt["settings"]["charset"] == "123ABC"  # still read off the data
