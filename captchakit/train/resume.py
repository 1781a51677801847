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
from pathlib import Path

from captchakit.errors import UserError
from captchakit.settings import Settings

# This machine's choices, not the run's: never read back.
MACHINE = frozenset({"resume", "model", "device", "threads", "workers", "precision", "compile"})
# Not flags: what captcha_train.py adds to its args.
NOT_FLAGS = frozenset({"world_size", "data_meta", "start_dir"})
# The run's recipe: the schedule and the optimizer state depend on it.
RECIPE = ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "seed", "model_config", "init_from")
SETTINGS = ("charset", "length", "width", "height", "min_length", "ignore_case")
# Flags that name files: relative ones are read from the folder the run was started in.
PATHS = ("train_dir", "val_dir", "labels", "val_labels", "init_from")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """dest -> value of each flag named on the command line (flags left at their default are absent)."""
    for action in parser._actions:  # argparse has no public way to tell a given flag from its default
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def restore_args(args, saved: dict, given: dict, settings: Settings) -> None:
    """Set `args` to the interrupted run's flags (`saved`), keeping those given now where they fit."""
    start_dir = saved.get("start_dir")
    for dest, value in saved.items():
        if dest in MACHINE or dest in NOT_FLAGS or not hasattr(args, dest):
            continue
        if dest in given:
            refuse_change(dest, given[dest], value, settings)
            continue
        if dest in PATHS and value and start_dir and not Path(value).is_absolute():
            value = str(Path(start_dir) / value)  # the run may be resumed from another folder
        setattr(args, dest, value)
    args.start_dir = start_dir or args.start_dir


def refuse_change(dest: str, value, saved, settings: Settings) -> None:
    """A one-line error when a flag given on --resume would change what the run is built on."""
    if dest in RECIPE and not same(dest, value, saved):
        raise UserError(
            f"{flag(dest)} {value}: the run being resumed uses {saved}, and its schedule and optimizer state "
            f"are built for that; resume without {flag(dest)}, or start a new run with another --model"
        )
    if dest in SETTINGS and not same(dest, value, saved):
        trained = getattr(settings, dest)
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
