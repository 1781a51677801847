"""One training run from a TrainConfig: the device, the model (new or resumed), the data, then the loop.

from captchakit.train.config import TrainConfig
from captchakit.train.run import run
run(TrainConfig(train_dir="mine", val_split=0.1, model="mine.pkl"))
"""

from __future__ import annotations

from pathlib import Path

import torch

from captchakit.calibrate import calibrate
from captchakit.checkpoint import check_reading, model_from_checkpoint, read_checkpoint, write_checkpoint
from captchakit.device import choose_device
from captchakit.errors import UserError
from captchakit.evaluate import evaluate
from captchakit.files import check_free_space, check_writable_dir, remove_stale_temps
from captchakit.model import CaptchaCNN, count_parameters, with_test_shifts
from captchakit.train import distributed, online, prepare, pseudo, resume
from captchakit.train.config import TEST_SHIFTS, Plan, TrainConfig, make_plan
from captchakit.train.ema import WeightAverage, run_decay
from captchakit.train.engine import make_engine
from captchakit.train.loop import History, Progress, Trainer, fit, make_optimizer


def run(config: TrainConfig, given: dict | None = None) -> int:
    """Train as `config` says; `given` holds the flags named on the command line (what --resume keeps)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = distributed.setup(choose_device(config.device))  # this rank's device under torchrun
    check_output(config.model)
    if config.unlabelled:
        pseudo.check(config, distributed.world_size())
    config, model, state, source = start_or_resume(config, device, given or {})
    reading_shifts(config, model)  # a --test-shifts the model cannot read with is refused before training
    # Room for model.pkl, last.pkl and one temporary copy, each weights + 2 AdamW moments (float32).
    check_free_space(resume.run_files(config.model)[0], 3 * 3 * 4 * count_parameters(model), "--model")
    with distributed.local_main_first():  # one process per machine builds the packed cache
        train, val, data_meta = (online if config.online else prepare).load_train_val(config, model.codec)
    for data in (train, val):
        if data.skipped:
            print(data.describe_skipped())
    data_meta = {"train_dir": str(config.train_dir), **data_meta, **({"fine_tuned_from": source} if source else {})}
    seen = train_model(config, model, state, train, val, device, data_meta)
    if distributed.is_main():
        calibrate_saved(config, val, device)
        if config.unlabelled:
            pseudo.rounds(config, train, val, seen, device, lambda cfg, net, data: train_round(cfg, net, data, val, device, data_meta))
    return 0


def train_model(config: TrainConfig, model: CaptchaCNN, state: dict | None, train, val, device, data_meta: dict) -> int:
    """The epochs on `train`, checked on `val`, the best model saved to config.model; returns the images trained on."""
    plan = make_plan(config, len(train), distributed.world_size(), len(val), bool(data_meta.get("fine_tuned_from")))
    trainer = make_trainer(model, config, plan, device, state, len(train))
    history, progress = History(resume.run_files(config.model)[0]), Progress()
    if state:
        resume.check_steps(state, distributed.epoch_steps(len(train), config.batch_size), plan.epochs, str(train.folder))
        restore(trainer, state)
        progress = Progress(state["epoch"] + 1, state["best"], state["elapsed"])
        history = History(history.path.parent, state["history"])
    describe(trainer, train, val, device)
    meta = {"epochs": plan.epochs, "train_images": len(train), "torch": torch.__version__}
    meta.update(data_meta, augment=plan.augment, shift=plan.shift, patience=plan.patience)
    fit(trainer, train, val, train.targets(model.codec), history, progress, meta)
    return len(train) * len(history.rows)


def train_round(config: TrainConfig, model: CaptchaCNN, data, val, device, data_meta: dict) -> float:
    """One pseudo-label round (captchakit.train.pseudo): fine-tune `model` on `data` into config.model,
    calibrate it; returns its best validation accuracy."""
    check_output(config.model)
    model = with_test_shifts(model, 0)  # epochs checked read once, as in the labelled run it is compared with
    train_model(config, model, None, data, val, device, data_meta)
    calibrate_saved(config, val, device)
    return float(read_checkpoint(config.model)["meta"]["best_accuracy"])


def calibrate_saved(config: TrainConfig, val, device) -> None:
    """Set the saved best model's reading views (--test-shifts) and fit its confidence temperature on
    the validation images read that way; both go into model.pkl."""
    path = config.model
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path, device)
    model = with_test_shifts(model, reading_shifts(config, model))
    meta = read_with_views(model, ckpt.get("meta", {}), val, device)
    calibration = calibrate(model, val, device)
    write_checkpoint(path, {**ckpt, "model_config": model.config.to_dict(), "meta": meta, "calibration": calibration.to_dict()})
    print(calibration.describe())


def read_with_views(model: CaptchaCNN, meta: dict, val, device) -> dict:
    """The metadata with the validation figures of a model that reads several views (what captcha_test.py
    then prints on those images); the epoch was chosen by one view, kept as one_view_accuracy."""
    if model.config.test_shifts == (0,):
        return meta
    result = evaluate(model, val, device)
    k = max(model.config.test_shifts)
    print(f"read with views moved {k} pixels left and right (--test-shifts 0 reads once): {result.summary('val')}")
    read = {"val_accuracy": result.accuracy, "val_char_accuracy": result.char_accuracy}
    return {**meta, "one_view_accuracy": meta.get("val_accuracy"), **read}


def reading_shifts(config: TrainConfig, model: CaptchaCNN) -> int:
    """--test-shifts; by default TEST_SHIFTS for a position head (where the image is wide enough), 0 for CTC."""
    if config.test_shifts is None:
        return TEST_SHIFTS if model.config.head != "ctc" and model.settings.width // 2 > TEST_SHIFTS else 0
    check_reading(model, config.test_shifts)
    return config.test_shifts


def check_output(model_path) -> None:
    """Before any work: the model's folders take files, and a killed run's temporaries are gone."""
    folder, last = resume.run_files(model_path)
    check_writable_dir(Path(model_path).parent, "--model")
    check_writable_dir(folder, "--model")
    for path in (Path(model_path), last):
        remove_stale_temps(path)


def start_or_resume(config: TrainConfig, device, given: dict) -> tuple[TrainConfig, CaptchaCNN, dict | None, str | None]:
    """A fresh model and the model it fine-tunes (or None), or the interrupted run's config (with
    `given` over it), model, state and source (recorded in its metadata)."""
    if not config.resume:
        model, source = prepare.new_model(config)
        return config, model, None, source
    ckpt, path = distributed.on_main(resume.load_state, config.model)  # rank 0's files, sent to every rank
    model = model_from_checkpoint(ckpt, path, device)
    state = ckpt["train_state"]
    saved, plan = resume.saved_run(state)
    distributed.check_world(plan.world_size)
    config = resume.merge(saved, plan, config, given, model.settings)
    print(f"resuming {path} after epoch {state['epoch']} of {plan.epochs}")
    return config, model, state, ckpt.get("meta", {}).get("fine_tuned_from")


def make_trainer(model: CaptchaCNN, config: TrainConfig, plan: Plan, device, state: dict | None, n_train: int) -> Trainer:
    """The model on its device, its optimizer and schedule for the planned steps, the engine and the average."""
    model = model.to(device).to(memory_format=torch.channels_last)
    engine = make_engine(distributed.wrap(model, device), device, config.precision, config.compile)
    steps = distributed.epoch_steps(n_train, config.batch_size)
    optimizer, scheduler = make_optimizer(model, config, steps * plan.epochs, plan.lr)
    average = make_average(model, run_decay(config.ema, steps * plan.epochs), state)
    return Trainer(model, optimizer, scheduler, engine, average, config, plan)


def make_average(model: CaptchaCNN, decay: float, state: dict | None) -> WeightAverage | None:
    """--ema's moving average of the weights (None when off), restored on --resume."""
    if not decay:
        return None
    try:
        average = WeightAverage(model, decay)
    except ValueError as err:
        raise UserError(str(err)) from None
    if state and state.get("ema"):
        average.load_state_dict(state["ema"])
    return average


def restore(trainer: Trainer, state: dict) -> None:
    """The optimizer, schedule and random state of the interrupted run."""
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])


def describe(trainer: Trainer, train, val, device) -> None:
    model, engine = trainer.model, trainer.engine
    print(f"training on {len(train):,} images ({train.folder}), checking on {len(val):,} ({val.folder})")
    print(f"model: {count_parameters(model):,} parameters, {model.settings.describe()}, device {device}, {torch.get_num_threads()} threads")
    world = trainer.plan.world_size
    if world > 1 or engine.precision != "fp32" or trainer.config.compile:
        print(f"{world} process(es), global batch {trainer.config.batch_size * world}, {engine.describe()}")
