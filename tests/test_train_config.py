"""The training configuration: every flag is a TrainConfig field, model.pkl keeps it, and runs saved
before it existed (their flags stored as a plain `args` dict) still resume."""

from dataclasses import fields
from pathlib import Path

import pytest
import torch
from test_pipeline import EPOCH_LINE, history, interrupted_at_epoch_2

import captcha_train
from captchakit.checkpoint import read_checkpoint
from captchakit.train.config import Plan, TrainConfig, make_plan


def test_model_pkl_holds_the_training_config_as_given(tiny_model):
    saved = read_checkpoint(tiny_model)["train_config"]
    config = TrainConfig.from_dict(saved)
    assert config.epochs == 2 and config.batch_size == 32 and config.augment is None  # as asked; the plan is in meta
    assert read_checkpoint(tiny_model)["meta"]["augment"] == 1.0  # what the small-data plan chose


def test_every_training_flag_is_a_config_field_and_the_defaults_agree():
    args = captcha_train.build_parser().parse_args([])
    names = {f.name for f in fields(TrainConfig)}
    assert set(vars(args)) <= names, set(vars(args)) - names
    config = TrainConfig.from_args(args, start_dir="/somewhere")
    assert config == TrainConfig(start_dir="/somewhere")
    assert TrainConfig.from_dict({**config.to_dict(), "unknown": 1}) == config


def test_the_plan_is_what_the_run_decided_and_the_config_stays_as_asked():
    config = TrainConfig(augment=None, epochs=None)
    small, large = make_plan(config, 936), make_plan(config, 100_000)
    assert small.augment == 1.0 and small.shift == 0 and small.epochs > 8
    assert large == Plan(epochs=8, augment=0.0, shift=3)
    assert config.epochs is None and config.augment is None  # frozen: nothing decided is written back
    with pytest.raises(AttributeError):
        config.epochs = 3  # type: ignore[misc]


def old_format(state: dict) -> dict:
    """A train_state as versions before TrainConfig wrote it: the parsed flags, mutated, under `args`."""
    config, plan = state.pop("config"), state.pop("plan")
    state["args"] = {**config, "epochs": plan["epochs"], "augment": plan["augment"], "world_size": 1, "data_meta": {}}
    return state


def test_a_run_saved_before_the_training_config_resumes(tiny_data, tmp_path, monkeypatch, cli):
    def train(model: Path, *extra):
        flags = ("--train-dir", tiny_data / "train", "--val-dir", tiny_data / "test", "--batch-size", "64", "--threads", "1")
        return cli(captcha_train.main, *flags, "--epochs", "3", "--model", model, "--ema", "0", *extra)

    reference, run = tmp_path / "ref" / "model.pkl", tmp_path / "run" / "model.pkl"
    assert train(reference)[0] == 0
    interrupted_at_epoch_2(monkeypatch, lambda: train(run), checks_per_epoch=1)
    last = run.with_name("model_run") / "last.pkl"
    ckpt = read_checkpoint(last)
    ckpt["train_state"] = old_format(ckpt["train_state"])
    torch.save(ckpt, last)

    code, out, err = cli(captcha_train.main, "--resume", "--model", run, "--threads", "1")
    assert code == 0, err
    assert [m[0] for m in EPOCH_LINE.findall(out)] == ["2", "3"]
    for row, ref in zip(history(run), history(reference), strict=True):
        assert row["lr"] == ref["lr"] and row["val_accuracy"] == ref["val_accuracy"]
    saved = read_checkpoint(last)
    assert saved["train_state"]["config"]["epochs"] == 3 and saved["train_config"]["ema"] == 0  # saved again in the new form


def test_a_saved_run_with_no_flags_at_all_gets_one_line(tiny_model, tmp_path, cli):
    ckpt = read_checkpoint(tiny_model)
    ckpt["train_state"] = {k: v for k, v in ckpt["train_state"].items() if k not in ("config", "plan")}
    broken = tmp_path / "model.pkl"
    torch.save(ckpt, broken)
    code, _, err = cli(captcha_train.main, "--resume", "--model", broken)
    assert code == 2
    assert err.strip().endswith("the saved run holds no flags this version can read; start it again without --resume")
