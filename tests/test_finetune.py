"""Fine-tuning: a source model's layers and its classifier rows for the shared characters; the
general reader as the default start of small data sets."""

from __future__ import annotations

import pytest
import torch
from owndata_data import draw

import captcha_gen
import captcha_train
from captchakit.checkpoint import read_checkpoint
from captchakit.codec import LabelCodec
from captchakit.model import CaptchaCNN, ModelConfig
from captchakit.settings import Settings
from captchakit.train import finetune

FAST = ["--epochs", "1", "--batch-size", "16", "--threads", "2"]


def test_rows_map_each_character_to_the_same_one_and_blank_to_blank():
    source = LabelCodec(Settings(charset="0123ABCabc", length=6, min_length=1), ctc=True)
    mine = LabelCodec(Settings(charset="13bcz", length=5), ctc=True)
    assert mine.rows_from(source) == [1, 3, 8, 9, None, source.blank]
    blind = LabelCodec(Settings(charset="AB", length=4, ignore_case=True))
    assert blind.rows_from(LabelCodec(Settings(charset="abAB", length=4))) == [2, 3]  # the upper-case rows
    assert LabelCodec(Settings(charset="a1", length=3, min_length=2)).rows_from(source)[-1] == source.pad


def test_a_ctc_model_takes_the_source_classifier_rows_of_its_characters():
    src_settings = Settings(charset="0123ABCabc", length=6, min_length=1, width=96, height=32)
    torch.manual_seed(0)
    source = CaptchaCNN(src_settings, ModelConfig(head="ctc"))
    mine = CaptchaCNN(Settings(charset="13bcz", length=5, width=96, height=32), ModelConfig(head="ctc", ctc_split=source.head.split))
    copied, classes = mine.adopt(source.state_dict(), source.codec)
    assert classes == 5  # 1, 3, b, c and the blank; z has no row to take
    split = source.head.split
    src_w = source.head.classify.weight.view(split, source.codec.num_classes, -1)
    my_w = mine.head.classify.weight.view(split, mine.codec.num_classes, -1)
    for k, r in enumerate(mine.codec.rows_from(source.codec)):
        if r is not None:
            assert torch.equal(my_w[:, k], src_w[:, r])
    assert not torch.equal(my_w[:, 4], src_w[:, 0])  # z keeps its fresh row
    assert torch.equal(mine.features[1][0].weight, source.features[1][0].weight) and copied > 10


@pytest.fixture(scope="module")
def general(tmp_path_factory):
    """A tiny 'general reader': a CTC model trained one epoch on varied captchas of 1-6 characters, 32 px high."""
    root = tmp_path_factory.mktemp("general")
    captcha_gen.main(["--style", "varied", "--train", "120", "--test", "30", "--predict", "0", "--out", str(root),
                      "--seed", "5", "--workers", "1", "--min-length", "1", "--max-length", "6", "--height", "32"])  # fmt: skip
    path = root / "general.pkl"
    args = ["--train-dir", root / "train", "--val-dir", root / "test", "--width", "96", "--height", "32", "--keep-aspect"]
    captcha_train.main([str(a) for a in [*args, "--model", path, *FAST]])
    return path


def test_a_small_set_fine_tunes_the_general_reader_by_default(general, tmp_path, monkeypatch, cli):
    monkeypatch.setattr(finetune, "GENERAL_MODEL", general)
    own = tmp_path / "own"
    draw(own, 40, seed=6)  # 4 characters of ABC123, 64x32
    code, out, err = cli(captcha_train.main, "--train-dir", own, "--model", tmp_path / "m.pkl", *FAST)
    assert code == 0, err
    assert "small data set: fine-tuning the general reader general.pkl" in out and f"fine-tuning from {general}: " in out
    ckpt, src = read_checkpoint(tmp_path / "m.pkl"), read_checkpoint(general)
    assert ckpt["model_config"]["head"] == "ctc" and ckpt["settings"]["height"] == src["settings"]["height"] == 32
    assert ckpt["settings"]["keep_aspect"] and ckpt["settings"]["charset"] == "123ABC"
    code, out, err = cli(captcha_train.main, "--train-dir", own, "--model", tmp_path / "s.pkl", "--from-scratch", *FAST)
    assert code == 0 and "fine-tuning" not in out
    assert read_checkpoint(tmp_path / "s.pkl")["model_config"]["head"] == "attention"


def test_without_a_general_reader_a_small_set_starts_fresh(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(finetune, "GENERAL_MODEL", tmp_path / "absent.pkl")
    own = tmp_path / "own"
    draw(own, 40, seed=6)
    code, out, err = cli(captcha_train.main, "--train-dir", own, "--model", tmp_path / "m.pkl", *FAST)
    assert code == 0, err
    assert "fine-tuning" not in out


def test_a_position_head_model_starts_a_variable_length_ctc_model(tiny_model, tmp_path, cli):
    from owndata_data import SMALL

    own = tmp_path / "var"
    draw(own, 40, settings=SMALL.with_(min_length=3, length=5), seed=7)
    code, out, err = cli(captcha_train.main, "--train-dir", own, "--init-from", tiny_model, "--model", tmp_path / "m.pkl", *FAST)
    assert code == 0, err
    assert read_checkpoint(tmp_path / "m.pkl")["model_config"]["head"] == "ctc" and f"from {tiny_model}" in out
