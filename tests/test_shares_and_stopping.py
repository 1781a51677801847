"""Own data: validation and test shares held out of a folder, the test share kept from training and tested
alone; runs that stop when the validation figure can tell them nothing more (--patience)."""

import pytest
from owndata_data import draw

import captcha_test
import captcha_train
from captchakit.checkpoint import read_checkpoint
from captchakit.data.folders import share_size, three_way_split
from captchakit.evaluate import EvalResult
from captchakit.train import loop
from captchakit.train.config import TrainConfig, make_plan

FAST = ["--epochs", "2", "--batch-size", "16", "--threads", "2", "--no-augment"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("own") / "mine"
    draw(path, 120, seed=3)
    return path


def test_three_shares_are_seeded_disjoint_and_whole():
    names = [f"{i:04d}.png" for i in range(300)]
    train, val, test = three_way_split(names, 0.1, 0.1, 5, "d")
    assert (len(train), len(val), len(test)) == (240, 30, 30) and sorted(train + val + test) == names
    assert three_way_split(list(reversed(names)), 0.1, 0.1, 5, "d") == (train, val, test)
    assert three_way_split(names, 0.1, 0.1, 6, "d")[2] != test
    assert three_way_split(names, 0.2, 0.1, 5, "d")[2] == test  # a larger validation share leaves the test share alone
    assert share_size(60, 0.1) == 12 and share_size(1_040, 0.1) == 104 and share_size(50, 0.0) == 0  # small sets: at least a fifth


def test_a_train_dir_alone_holds_validation_and_test_shares_out(folder, tmp_path, cli):
    model = tmp_path / "m.pkl"
    code, out, err = cli(captcha_train.main, "--train-dir", folder, "--model", model, *FAST)
    assert code == 0, err
    # 120 images: a tenth would be 12, a small set keeps 20 (a fifth, at most MIN_SHARE) in each share.
    assert f"held out of {folder} (seed 0): 20 images for validation" in out and "20 as a test share" in out
    assert "training on 80 images" in out
    assert "a validation share of 20 images is too few to choose an epoch by: the run trains every epoch and keeps the last" in out
    split = read_checkpoint(model)["meta"]["split"]
    assert len(split["val"]) == len(split["test"]) == 20 and not set(split["val"]) & set(split["test"])
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", folder)
    assert code == 0 and "test: 20 captchas" in out and "held out as the test share in training" in out


def test_no_test_share_means_the_same_folder_cannot_be_tested_by_mistake(folder, tmp_path, cli):
    model = tmp_path / "m.pkl"
    assert cli(captcha_train.main, "--train-dir", folder, "--test-split", "0", "--model", model, *FAST)[0] == 0
    code, _, err = cli(captcha_test.main, "--model", model, "--data", folder)
    assert code == 2 and err.strip().endswith(
        f"--data {folder}: training held no test share out of it (--test-split 0); pass another folder or --all-images"
    )
    code, _, err = cli(captcha_train.main, "--train-dir", folder, "--val-dir", folder, "--test-split", "0.1", "--model", model)
    assert code == 2 and "--test-split: a test share is held out of --train-dir only with --val-split or without --val-dir" in err


def test_a_model_trained_before_test_shares_still_tests_its_validation_part(folder, tmp_path, cli):
    model = tmp_path / "m.pkl"
    assert cli(captcha_train.main, "--train-dir", folder, "--model", model, *FAST)[0] == 0
    ckpt = read_checkpoint(model)
    split = ckpt["meta"].pop("split")
    ckpt["meta"]["val_split"] = {"folder": split["folder"], "fraction": 0.1, "seed": 0, "held_out": split["val"]}
    old = tmp_path / "old.pkl"
    __import__("torch").save(ckpt, old)
    code, out, _ = cli(captcha_test.main, "--model", old, "--data", folder)
    assert code == 0 and "test: 20 captchas" in out and "held out for validation in training (--val-split 0.1)" in out


def scripted(accuracies):
    """An evaluate() that reports these validation accuracies, one per call."""
    figures = iter(accuracies)

    def evaluate(model, data, device, *args, **kwargs):
        acc = next(figures)
        return EvalResult(n=len(data), accuracy=acc, char_accuracy=acc, loss=1.0, position_accuracy=[acc] * 4)

    return evaluate


def test_a_run_stops_at_100_percent_and_after_its_patience(folder, tmp_path, cli, monkeypatch):
    base = ["--train-dir", folder, "--batch-size", "16", "--threads", "2", "--no-augment", "--ema", "0", "--epochs", "9"]
    monkeypatch.setattr(loop, "evaluate", scripted([0.5, 1.0, 1.0]))
    code, out, _ = cli(captcha_train.main, *base, "--patience", "3", "--model", tmp_path / "a.pkl")
    assert code == 0 and "validation accuracy reached 100% at epoch 2: nothing left to learn on it, stopping" in out
    assert read_checkpoint(tmp_path / "a.pkl")["meta"]["epoch"] == 2

    monkeypatch.setattr(loop, "evaluate", scripted([0.5, 0.6, 0.6, 0.55, 0.6, 0.9]))
    code, out, _ = cli(captcha_train.main, *base, "--patience", "3", "--model", tmp_path / "b.pkl")
    assert code == 0 and "no better validation accuracy for 3 epochs (best at epoch 2), stopping" in out
    assert "epoch 5/9" in out and "epoch 6/9" not in out and read_checkpoint(tmp_path / "b.pkl")["meta"]["epoch"] == 2

    monkeypatch.setattr(loop, "evaluate", scripted([1.0, 1.0, 1.0]))
    code, out, _ = cli(captcha_train.main, *base[:-1], "3", "--patience", "0", "--model", tmp_path / "c.pkl")
    assert code == 0 and "epoch 3/3" in out and "stopping" not in out  # 0: the whole budget


def test_a_validation_share_too_small_to_choose_by_keeps_the_last_epoch(folder, tmp_path, cli, monkeypatch):
    base = ["--train-dir", folder, "--batch-size", "16", "--threads", "2", "--no-augment", "--ema", "0", "--epochs", "4"]
    base += ["--test-shifts", "0"]  # the saved figures are then the chosen epoch's (views would read the model again)
    monkeypatch.setattr(loop, "evaluate", scripted([0.5, 1.0, 0.7, 0.6]))  # 20 validation images: noise
    code, out, _ = cli(captcha_train.main, *base, "--model", tmp_path / "a.pkl")
    assert code == 0 and "epoch 4/4" in out and "stopping" not in out
    assert "the last epoch 60.00% exact at epoch 4" in out
    meta = read_checkpoint(tmp_path / "a.pkl")["meta"]
    assert meta["epoch"] == 4 and meta["val_accuracy"] == 0.6
    monkeypatch.setattr(loop, "evaluate", scripted([0.5, 1.0]))  # --patience: choose by it after all
    code, out, _ = cli(captcha_train.main, *base, "--patience", "2", "--model", tmp_path / "b.pkl")
    assert code == 0 and "reached 100% at epoch 2" in out and read_checkpoint(tmp_path / "b.pkl")["meta"]["epoch"] == 2
    assert not make_plan(TrainConfig(), 936, n_val=94).keep_last and make_plan(TrainConfig(), 936, n_val=49).keep_last
    assert not make_plan(TrainConfig(), 30_000, n_val=20).keep_last  # a large set: not small data


def test_patience_follows_the_data_size_and_never_cuts_the_default_budget():
    assert make_plan(TrainConfig(), 100_000).patience == 0
    assert make_plan(TrainConfig(online=True), 5_000).patience == 0
    small = make_plan(TrainConfig(), 936)
    assert small.patience == small.epochs // 4 and make_plan(TrainConfig(patience=7), 936).patience == 7


def test_the_default_data_set_keeps_its_own_test_folder(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split, count in (("train", 40), ("test", 12)):
        draw(tmp_path / "dataset" / split, count, seed=len(split))
    code, out, err = cli(captcha_train.main, *FAST)
    assert code == 0, err
    assert "training on 40 images (dataset/train), checking on 12 (dataset/test)" in out and "held out" not in out
