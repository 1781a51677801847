"""Train the captcha CNN and save the best model to model.pkl.

    python captcha_train.py                        # dataset/train, checked on dataset/test
    python captcha_train.py --resume               # continue an interrupted run

After every epoch the model is checked on the validation folder with the same evaluate()
that captcha_test.py uses; the best model so far is written to model.pkl, and the full
training state to <model>_run/last.pkl, both atomically, so --resume loses at most the
epoch that was running.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from captchakit.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint
from captchakit.data import folders as own
from captchakit.data.cache import LabelledSet
from captchakit.device import choose_device
from captchakit.errors import UserError
from captchakit.evaluate import EvalResult, evaluate
from captchakit.files import atomic_path, check_free_space, check_writable_dir, remove_stale_temps
from captchakit.model import CaptchaCNN, ModelConfig, build_model, count_parameters
from captchakit.report.plots import write_curves
from captchakit.train import distributed as distributed
from captchakit.train import ema as ema_
from captchakit.train import engine as accel
from captchakit.train import online as online
from captchakit.train import resume as resume
from captchakit.train.augment import augment_batch

# The recipe chosen by the study in docs/BENCHMARKS.md.
EPOCHS = 8
BATCH_SIZE = 128
LR = 3e-3
WEIGHT_DECAY = 0.2  # study item 14: 0.2 rather than 0.05 on 100,000 captchas, 0.8 too much
LABEL_SMOOTHING = 0.1
WARMUP = 0.15  # share of the steps spent warming the learning rate up


def run_dir(model_path) -> Path:
    """model.pkl -> model_run/: where the resumable state and the history live."""
    path = Path(model_path)
    return path.with_name(path.stem + "_run")


class History:
    """One CSV row per epoch, rewritten whole so a killed run leaves a readable file."""

    FIELDS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_char_accuracy", "lr", "epoch_s", "elapsed_s")

    def __init__(self, folder: Path, rows: list[dict] | None = None):
        self.path = folder / "history.csv"
        self.rows = list(rows or [])

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if not distributed.is_main():
            return  # under torchrun only rank 0 writes
        with atomic_path(self.path, ".csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        write_curves(self.rows, self.path.parent / "curves.png")  # watchable while a long run goes on


def make_optimizer(model: CaptchaCNN, args, steps: int):
    # No weight decay on BatchNorm and biases: decaying them only slows training.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=max(steps, 1), pct_start=WARMUP, div_factor=20, final_div_factor=200
    )
    return optimizer, scheduler


def train_step(model, x, y, optimizer, scheduler, label_smoothing: float, engine: accel.Engine | None = None) -> float:
    """One optimizer step on x (B, 1, H, W) and targets y (B, length); returns the loss.

    `engine` (captcha_accel) adds DDP, mixed precision or torch.compile; without it, plain fp32.
    """
    k = model.codec.num_classes
    net = engine.net if engine else model
    with engine.autocast() if engine else contextlib.nullcontext():
        logits = net(x)  # (B, length * k)
        loss = F.cross_entropy(logits.view(-1, k).float(), y.view(-1), label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    if engine:
        engine.backward_step(loss, optimizer)
    else:
        loss.backward()
        optimizer.step()
    scheduler.step()
    return loss.item()


def train_epoch(
    model, data: LabelledSet, targets: np.ndarray, optimizer, scheduler, args, epoch: int, device, engine=None, ema=None
) -> float:
    """One pass in a seeded order (this rank's shard of it, or fresh --online captchas); full batches only."""
    engine = engine or accel.Engine.plain(model, device)
    model.train()
    steps, batch, batches = distributed.epoch_batches(data, targets, args, epoch)
    drawn = distributed.rank_randomness(args, epoch)  # under torchrun each rank augments and drops out its own way
    bar = tqdm(
        total=steps * batch,
        desc=f"epoch {epoch}/{args.epochs}",
        unit="img",
        unit_scale=True,
        leave=False,
        dynamic_ncols=True,
        disable=not distributed.is_main(),
    )
    total = 0.0
    for step, (images, labels) in enumerate(batches):
        x, y = engine.to_device(images, labels)  # (B, 1, H, W) float, (B, length)
        x = augment_batch(x, drawn, epoch, step)
        total += train_step(model, x, y, optimizer, scheduler, args.label_smoothing, engine)
        if ema:
            ema.update()
        bar.update(batch)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total / (step + 1):.4f}")
    bar.close()
    return total / max(steps, 1)


def check_output(model_path) -> None:
    """Before any work: the model's folders take files, and a killed run's temporaries are gone."""
    check_writable_dir(Path(model_path).parent, "--model")
    check_writable_dir(run_dir(model_path), "--model")
    for path in (Path(model_path), run_dir(model_path) / "last.pkl"):
        remove_stale_temps(path)


def resume_state(args):
    """Load the interrupted run: its last complete epoch, else the best model's state."""
    last = run_dir(args.model) / "last.pkl"
    path = last if last.exists() else Path(args.model)
    if not path.exists():
        raise UserError(f"--resume: nothing to resume at {last} or {args.model}; start without --resume")
    ckpt = read_checkpoint(path)
    if "train_state" not in ckpt:
        raise UserError(f"--resume: {path} holds no training state; start without --resume")
    return ckpt, path


def start_or_resume(args, device, given: dict):
    if args.resume:
        ckpt, path = distributed.on_main(resume_state, args)  # rank 0's files, sent to every rank
        model = model_from_checkpoint(ckpt, path, device)
        state = ckpt["train_state"]
        saved = state["args"]
        distributed.restore_args(args, saved)
        # The run's own flags and data come back; flags named again now win where they fit.
        resume.restore_args(args, saved, given, model.settings)
        print(f"resuming {path} after epoch {state['epoch']} of {args.epochs}")
        return model, state
    config = model_config_from_args(args)
    settings = online.settings_for(args, config.stem) if args.online else own.infer_settings(args, config.stem)
    torch.manual_seed(args.seed)
    try:
        model = build_model(settings, config)
    except (ValueError, TypeError, RuntimeError) as err:  # a --model-config that builds no network
        raise UserError(f"--model-config {args.model_config}: {err}; see ModelConfig in captcha_cnn_model.py") from None
    own.init_from(args, model)
    return model, None


def model_config_from_args(args) -> ModelConfig:
    if not args.model_config:
        return ModelConfig()
    try:
        changes = json.loads(args.model_config)
        return ModelConfig.from_dict({**ModelConfig().to_dict(), **changes})
    except (ValueError, TypeError) as err:
        raise UserError(f"--model-config: not a valid JSON object of ModelConfig fields ({err})") from None


def meta_for(args, epoch: int, result: EvalResult, best: float, elapsed: float, n_train: int) -> dict:
    return {
        "epoch": epoch,
        "epochs": args.epochs,
        "best_accuracy": best,
        "val_accuracy": result.accuracy,
        "val_char_accuracy": result.char_accuracy,
        "train_images": n_train,
        "train_dir": str(args.train_dir),
        "elapsed_s": round(elapsed, 1),
        "torch": torch.__version__,
        **getattr(args, "data_meta", {}),
    }


def run(args, given: dict) -> int:
    """Train as the parsed flags say; `given` holds the flags named on the command line (for --resume)."""
    args.start_dir = str(Path.cwd())  # a resumed run reads its relative paths from here
    if args.threads:
        torch.set_num_threads(args.threads)
    device = distributed.setup(choose_device(args.device))  # this rank's device under torchrun
    args.world_size = distributed.world_size()
    check_output(args.model)
    model, state = start_or_resume(args, device, given)
    # Room for model.pkl, last.pkl and one temporary copy, each weights + 2 AdamW moments (float32).
    check_free_space(run_dir(args.model), 3 * 3 * 4 * count_parameters(model), "--model")
    codec = model.codec
    with distributed.local_main_first():  # one process per machine builds the packed cache
        source = online if args.online else own
        train, val = source.load_train_val(args, codec, EPOCHS, args.workers)
    for data in (train, val):
        if data.skipped:
            print(data.describe_skipped())
    targets = train.targets(codec)
    steps = distributed.epoch_steps(len(train), args.batch_size)
    model = model.to(device).to(memory_format=torch.channels_last)
    engine = accel.make_engine(distributed.wrap(model, device), device, args)
    optimizer, scheduler = make_optimizer(model, args, steps * args.epochs)
    average = make_average(model, args, state)
    folder = run_dir(args.model)
    folder.mkdir(parents=True, exist_ok=True)
    first, best, elapsed, history = 1, 0.0, 0.0, History(folder)
    if state:
        resume.check_steps(state, steps, args.epochs, str(train.folder))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        first, best, elapsed = state["epoch"] + 1, state["best"], state["elapsed"]
        history = History(folder, state["history"])
    print(f"training on {len(train):,} images ({train.folder}), checking on {len(val):,} ({val.folder})")
    print(f"model: {count_parameters(model):,} parameters, {model.settings.describe()}, device {device}, {torch.get_num_threads()} threads")
    if args.world_size > 1 or engine.precision != "fp32" or args.compile:
        print(f"{args.world_size} process(es), global batch {args.batch_size * args.world_size}, {engine.describe()}")
    return fit(model, train, val, targets, optimizer, scheduler, args, device, first, best, elapsed, history, engine, average)


def make_average(model, args, state) -> ema_.WeightAverage | None:
    """--ema's moving average of the weights (None when off), restored on --resume."""
    if not args.ema:
        return None
    try:
        average = ema_.WeightAverage(model, args.ema)
    except ValueError as err:
        raise UserError(str(err)) from None
    if state and state.get("ema"):
        average.load_state_dict(state["ema"])
    return average


def fit(model, train, val, targets, optimizer, scheduler, args, device, first, best, elapsed, history, engine=None, ema=None) -> int:
    """The epochs; with --ema the average is what is checked and saved as the best model."""
    folder = run_dir(args.model)
    best_epoch, last = history_best(history), None
    for epoch in range(first, args.epochs + 1):
        start = time.perf_counter()
        loss = distributed.mean(train_epoch(model, train, targets, optimizer, scheduler, args, epoch, device, engine, ema))
        checked = ema.model if ema else model
        last = distributed.on_main(evaluate, checked, val, device)  # rank 0 evaluates; every rank gets the result
        raw = f"  (raw weights {distributed.on_main(evaluate, model, val, device).accuracy:.2%})" if ema else ""
        took = time.perf_counter() - start
        elapsed += took
        lr = optimizer.param_groups[0]["lr"]
        history.add(
            {
                "epoch": epoch,
                "train_loss": f"{loss:.5f}",
                "val_loss": f"{last.loss:.5f}",
                "val_accuracy": f"{last.accuracy:.5f}",
                "val_char_accuracy": f"{last.char_accuracy:.5f}",
                "lr": f"{lr:.3g}",
                "epoch_s": f"{took:.1f}",
                "elapsed_s": f"{elapsed:.1f}",
            }
        )
        improved = last.accuracy > best or best_epoch is None
        if improved:
            best, best_epoch = last.accuracy, epoch
        state = {
            "epoch": epoch,
            "best": best,
            "elapsed": elapsed,
            "history": history.rows,
            "args": vars(args),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "ema": ema.state_dict() if ema else None,
        }
        meta = meta_for(args, epoch, last, best, elapsed, len(train))
        # model.pkl before last.pkl: a crash between the two then redoes this epoch on --resume
        # instead of resuming past a best model that never reached model.pkl.
        if improved and distributed.is_main():
            save_checkpoint(args.model, checked, meta, state)
        if distributed.is_main():
            save_checkpoint(folder / "last.pkl", model, meta, state)
        mark = f"  -> saved {args.model}" if improved else ""
        print(f"epoch {epoch}/{args.epochs}  loss {loss:.4f}  {last.summary('val')}{raw}  {took:.0f} s{mark}", flush=True)
        if args.target_acc is not None and last.accuracy >= args.target_acc:
            print(f"reached --target-acc {args.target_acc:.2%} at epoch {epoch}")
            break
    rate = len(train) * (len(history.rows)) / elapsed if elapsed else 0
    print(
        f"done: {len(history.rows)} epochs in {elapsed / 60:.1f} min ({rate:,.0f} img/s); "
        f"best {best:.2%} exact at epoch {best_epoch}, saved to {args.model}"
    )
    return 0


def history_best(history: History) -> int | None:
    if not history.rows:
        return None
    return max(history.rows, key=lambda r: float(r["val_accuracy"]))["epoch"]
