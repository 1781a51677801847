"""Fine-tuning: a source model's layers and its classifier rows for the shared characters; the
general reader as the default start of small data sets."""

from __future__ import annotations

import json
import math

import pytest
import torch
from owndata_data import draw

import captcha_export
import captcha_gen
import captcha_train
from captchakit import shipped
from captchakit.api import load_model
from captchakit.checkpoint import read_checkpoint
from captchakit.codec import LabelCodec
from captchakit.model import CaptchaCNN, ModelConfig
from captchakit.settings import Settings
from captchakit.train import finetune
from captchakit.train.config import FEW_TO_RETUNE, FINETUNE_IMAGES, FINETUNE_LR, LR, MAX_SMALL_EPOCHS, TrainConfig, make_plan

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
    # The fine-tuning recipe: a third of the learning rate, recorded with the model it started from.
    assert "fine-tuning: peak learning rate 0.001 (--lr to choose)" in out and ckpt["meta"]["fine_tuned_from"] == str(general)
    assert (
        ckpt["train_config"]["lr"] is None and float(read_checkpoint(tmp_path / "m_run" / "last.pkl")["train_state"]["plan"]["lr"]) == 1e-3
    )
    code, out, err = cli(captcha_train.main, "--train-dir", own, "--model", tmp_path / "s.pkl", "--from-scratch", *FAST)
    assert code == 0 and "fine-tuning" not in out and "fine_tuned_from" not in read_checkpoint(tmp_path / "s.pkl")["meta"]
    assert read_checkpoint(tmp_path / "s.pkl")["model_config"]["head"] == "attention"


def test_fine_tuning_plans_fewer_images_and_a_lower_rate_for_small_sets_only():
    scratch, tuned = make_plan(TrainConfig(), 270), make_plan(TrainConfig(), 270, tuned=True)
    assert (scratch.epochs, scratch.lr) == (MAX_SMALL_EPOCHS, LR)
    assert tuned.epochs == math.ceil(FINETUNE_IMAGES / 270) < scratch.epochs and tuned.lr == FINETUNE_LR
    assert scratch.patience == MAX_SMALL_EPOCHS // 4 and not scratch.keep_last
    assert tuned.patience == 0 and tuned.keep_last  # a fine-tuned run sees its whole budget and keeps its end
    assert make_plan(TrainConfig(patience=5), 270, n_val=100, tuned=True).patience == 5
    assert not make_plan(TrainConfig(patience=5), 270, n_val=100, tuned=True).keep_last
    assert make_plan(TrainConfig(lr=0.01), 270, tuned=True).lr == 0.01  # --lr wins
    # From FEW_TO_RETUNE images on, a fine-tuned run keeps its small budget but takes the full rate.
    hundreds = make_plan(TrainConfig(), FEW_TO_RETUNE, tuned=True)
    assert hundreds.lr == LR and hundreds.epochs == math.ceil(FINETUNE_IMAGES / FEW_TO_RETUNE) and hundreds.keep_last
    assert make_plan(TrainConfig(), FEW_TO_RETUNE - 1, tuned=True).lr == FINETUNE_LR
    big = make_plan(TrainConfig(), 50_000, tuned=True)  # a large set trains as from scratch
    assert (big.epochs, big.lr) == (make_plan(TrainConfig(), 50_000).epochs, LR)


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


def test_ship_general_writes_the_reader_and_a_card_whose_check_draws_varied_captchas(general, tiny_model, tmp_path, monkeypatch, cli):
    monkeypatch.setattr(shipped, "CHECK_COUNT", 24)
    out = tmp_path / "models" / "general.pkl"
    test_dir = general.parent / "test"
    args = ["--model", general, "--ship-general", out, "--command", "python captcha_train.py --online", "--test-dir", test_dir]
    code, stdout, _ = cli(captcha_export.main, *args)
    assert code == 0 and "float16 weights only" in stdout
    info = json.loads(out.with_suffix(".json").read_text())
    check = info["generated_check"]
    assert info["model"] == "general.pkl" and info["test"]["n"] == 30 and check["style"] == "varied"
    assert check["split"] == shipped.GENERAL_CHECK_SPLIT and check["count"] == 24
    assert shipped.generated_check(load_model(out, "cpu"), 24, check["seed"], "varied") == check["accuracy"]
    # A position-head model is not a general reader, and nothing is written for it.
    bad = tmp_path / "bad" / "general.pkl"
    args = ["--model", tiny_model, "--ship-general", bad, "--command", "x", "--test-dir", test_dir]
    code, _, err = cli(captcha_export.main, *args)
    assert code == 2 and "--ship-general: the general reader reads text of any length with a CTC head" in err
    assert not bad.exists() and not bad.with_suffix(".json").exists()
