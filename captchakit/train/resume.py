"""`captcha_train.py --resume`: the interrupted run's flags come back with it.

A bare `python captcha_train.py --resume --model X` continues the same run on the same data:
every flag the run was started with (the recipe, --train-dir/--val-dir, --labels,
--val-split, --online, augmentation, --target-acc, ...) is read back from the training
state saved in the checkpoint. Flags given again on the resume command line win, except
where they would break the run:
  - the recipe (--epochs, --batch-size, --lr, ...): the one-cycle schedule and the optimizer
    state are built for the saved values, so another value is refused;
  - the captcha settings and the network (--charset, --length, --model-config, ...): the
    saved weights are for the model's own settings, so another value is refused;
  - data that gives another number of steps per epoch: refused once the data is loaded,
    since the schedule's length is fixed (`check_steps`).
Flags about this machine only (--device, --threads, --workers, --precision, --compile) are
never restored: the run may go on elsewhere.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

from captchakit.checkpoint import read_checkpoint
from captchakit.errors import UserError
from captchakit.settings import Settings
from captchakit.train.config import LR, SHIFT, Plan, TrainConfig

# This machine's choices, not the run's: never read back.
MACHINE = frozenset({"resume", "model", "device", "threads", "workers", "precision", "compile", "start_dir"})
# The run's recipe and data source: the schedule and the optimizer state depend on them.
RECIPE = ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "seed", "model_config", "init_from", "online", "online_size")
SETTINGS = ("charset", "length", "width", "height", "min_length", "ignore_case", "color")
# Flags that name files: relative ones are read from the folder the run was started in.
PATHS = ("train_dir", "val_dir", "labels", "val_labels", "init_from")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """dest -> value of each flag named on the command line (flags left at their default are absent)."""
    for action in parser._actions:  # argparse has no public way to tell a given flag from its default
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def run_files(model_path) -> tuple[Path, Path]:
    """model.pkl -> (model_run/, model_run/last.pkl): where the resumable state and the history live."""
    path = Path(model_path)
    folder = path.with_name(path.stem + "_run")
    return folder, folder / "last.pkl"


def load_state(model_path) -> tuple[dict, Path]:
    """The interrupted run's checkpoint: its last complete epoch, else the best model's state."""
    last = run_files(model_path)[1]
    path = last if last.exists() else Path(model_path)
    if not path.exists():
        raise UserError(f"--resume: nothing to resume at {last} or {model_path}; start without --resume")
    ckpt = read_checkpoint(path)
    if "train_state" not in ckpt:
        raise UserError(f"--resume: {path} holds no training state; start without --resume")
    return ckpt, path


def saved_run(state: dict) -> tuple[TrainConfig, Plan]:
    """The interrupted run's config and plan; a run saved before TrainConfig kept its flags as `args`."""
    if "config" in state:
        config = TrainConfig.from_dict(state["config"])
        return config, Plan.from_dict({"lr": config.lr or LR, **state["plan"]})  # plans saved before they held the lr
    args = dict(state.get("args") or {})
    if "epochs" not in args:
        raise UserError("--resume: the saved run holds no flags this version can read; start it again without --resume")
    augment = float(args.get("augment") or 0.0)  # that version stored the strength it had chosen
    shift = 0 if augment else int(args.get("shift", SHIFT))
    plan = Plan(int(args["epochs"]), augment, shift, int(args.get("world_size", 1)), lr=float(args.get("lr") or LR))
    config = TrainConfig.from_dict({**args, "augment": bool(augment), "start_dir": args.get("start_dir") or ""})
    return config, plan


def merge(saved: TrainConfig, plan: Plan, now: TrainConfig, given: dict, settings: Settings) -> TrainConfig:
    """The interrupted run's config, with the flags given now where they fit and this machine's choices.

    The epochs and the learning rate become the planned ones: the schedule was built for them."""
    changes = {}
    for field in fields(TrainConfig):
        dest, value = field.name, getattr(saved, field.name)
        if dest in MACHINE:
            continue
        if dest in given:
            refuse_change(dest, given[dest], {"epochs": plan.epochs, "lr": plan.lr}.get(dest, value), settings)
            continue
        if dest in PATHS and value and saved.start_dir and not Path(value).is_absolute():
            value = str(Path(saved.start_dir) / value)  # the run may be resumed from another folder
        changes[dest] = value
    return replace(now, **{**changes, "epochs": plan.epochs, "lr": plan.lr, "start_dir": saved.start_dir or now.start_dir})


def refuse_change(dest: str, value, saved, settings: Settings) -> None:
    """A one-line error when a flag given on --resume would change what the run is built on."""
    if dest in RECIPE and not same(dest, value, saved):
        raise UserError(
            f"{flag(dest)} {value}: the run being resumed uses {saved}, and its schedule and optimizer state "
            f"are built for that; resume without {flag(dest)}, or start a new run with another --model"
        )
    if dest in SETTINGS and not same(dest, value, saved):
        trained = getattr(settings, dest) if dest != "color" else settings.channels == 3
        if dest == "charset" and settings.ignore_case:
            value = "".join(dict.fromkeys(value.upper()))
        if value != trained:
            raise UserError(
                f"{flag(dest)} {value}: the run being resumed was trained with {dest.replace('_', ' ')} {trained!r}; "
                f"resume without {flag(dest)}, or start a new run with another --model"
            )


def same(dest: str, value, saved) -> bool:
    if dest == "model_config" and value and saved:
        try:
            return json.loads(value) == json.loads(saved)
        except ValueError:
            return False
    return value == saved


def check_steps(state: dict, steps: int, epochs: int, source: str) -> None:
    """Refuse data that gives another number of steps per epoch than the resumed schedule was built for."""
    planned = state["scheduler"].get("total_steps")
    if planned is not None and planned != steps * epochs:
        raise UserError(
            f"--resume: {source} now gives {steps:,} steps per epoch, and the run being resumed was planned with "
            f"{planned // max(epochs, 1):,}; resume it on the same data, or start a new run with another --model"
        )
