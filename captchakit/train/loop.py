"""The training loop: a step, an epoch, and the epochs with their checks and checkpoints.

After every epoch the model is checked on the validation set with the same evaluate() that
captcha_test.py uses; the best model so far is written to model.pkl, and the full training
state to <model>_run/last.pkl, both atomically, so --resume loses at most the epoch that was
running. `run.py` builds what this loop needs from a TrainConfig.
"""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from captchakit.checkpoint import save_checkpoint
from captchakit.evaluate import EvalResult, evaluate
from captchakit.files import atomic_path
from captchakit.model import CaptchaCNN
from captchakit.report.plots import write_curves
from captchakit.train import distributed
from captchakit.train.augment import augment_batch
from captchakit.train.config import LR, WARMUP, Plan, TrainConfig
from captchakit.train.ema import WeightAverage
from captchakit.train.engine import Engine
from captchakit.train.resume import run_files


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

    def best_epoch(self) -> int | None:
        if not self.rows:
            return None
        return max(self.rows, key=lambda r: float(r["val_accuracy"]))["epoch"]


def make_optimizer(model: CaptchaCNN, config: TrainConfig, steps: int, lr: float = LR):
    """AdamW and its one-cycle schedule over `steps` steps to a peak of `lr` (the plan's), with the config's weight decay."""
    # No weight decay on BatchNorm and biases: decaying them only slows training.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=WARMUP, div_factor=20, final_div_factor=200
    )
    return optimizer, scheduler


def train_step(model, x, y, optimizer, scheduler, label_smoothing: float, engine: Engine | None = None) -> float:
    """One optimizer step on x (B, 1, H, W) and targets y (B, length); returns the loss.

    `engine` (captchakit.train.engine) adds DDP, mixed precision or torch.compile; without it, plain fp32.
    """
    net = engine.net if engine else model
    with engine.autocast() if engine else contextlib.nullcontext():
        logits = net(x)  # (B, length * k), or the CTC head's (B, T, k)
        loss = model.loss(logits, y, label_smoothing)  # the head's own loss: CaptchaCNN.loss
    optimizer.zero_grad(set_to_none=True)
    if engine:
        engine.backward_step(loss, optimizer)
    else:
        loss.backward()
        optimizer.step()
    scheduler.step()
    return loss.item()


@dataclass
class Trainer:
    """The network and everything that changes it: one object for the epochs to carry."""

    model: CaptchaCNN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    engine: Engine
    ema: WeightAverage | None
    config: TrainConfig
    plan: Plan

    @property
    def checked(self) -> CaptchaCNN:
        """What is evaluated and saved as the best model: the moving average when --ema is on."""
        return self.ema.model if self.ema else self.model

    def epoch(self, data, targets: np.ndarray | None, epoch: int) -> float:
        """One pass in a seeded order (this rank's shard of it, or fresh --online captchas); full batches only."""
        self.model.train()
        c = self.config
        steps, batch, batches = distributed.epoch_batches(data, targets, c.batch_size, c.seed, epoch)
        seed = distributed.epoch_seed(c.seed, epoch)  # under torchrun each rank augments and drops out its own way
        bar = tqdm(
            total=steps * batch,
            desc=f"epoch {epoch}/{self.plan.epochs}",
            unit="img",
            unit_scale=True,
            leave=False,
            dynamic_ncols=True,
            disable=not distributed.is_main(),
        )
        total = 0.0
        for step, (images, labels) in enumerate(batches):
            x, y = self.engine.to_device(images, labels)  # (B, C, H, W) float, (B, length)
            x = augment_batch(x, self.plan.augment, self.plan.shift, seed, epoch, step)
            total += train_step(self.model, x, y, self.optimizer, self.scheduler, c.label_smoothing, self.engine)
            if self.ema:
                self.ema.update()
            bar.update(batch)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        bar.close()
        return total / max(steps, 1)

    def state(self, epoch: int, best: float, elapsed: float, history: History) -> dict:
        """Everything --resume needs to go on after `epoch` as if never stopped."""
        return {
            "epoch": epoch,
            "best": best,
            "elapsed": elapsed,
            "history": history.rows,
            "config": self.config.to_dict(),
            "plan": self.plan.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "ema": self.ema.state_dict() if self.ema else None,
        }


@dataclass
class Progress:
    """Where the epochs stand: the next one, the best accuracy so far, the training seconds so far."""

    first: int = 1
    best: float = 0.0
    elapsed: float = 0.0


def fit(trainer: Trainer, train, val, targets: np.ndarray | None, history: History, progress: Progress, meta: dict) -> int:
    """The epochs; with --ema the average is what is checked and saved as the best model."""
    model_path = trainer.config.model
    best, elapsed, best_epoch = progress.best, progress.elapsed, history.best_epoch()
    for epoch in range(progress.first, trainer.plan.epochs + 1):
        start = time.perf_counter()
        loss = distributed.mean(trainer.epoch(train, targets, epoch))
        device = trainer.engine.device
        last = distributed.on_main(evaluate, trainer.checked, val, device)  # rank 0 evaluates; every rank gets the result
        raw = f"  (raw weights {distributed.on_main(evaluate, trainer.model, val, device).accuracy:.2%})" if trainer.ema else ""
        took = time.perf_counter() - start
        elapsed += took
        history.add(history_row(epoch, loss, last, trainer.optimizer.param_groups[0]["lr"], took, elapsed))
        improved = last.accuracy > best or best_epoch is None or trainer.plan.keep_last
        if improved:
            best, best_epoch = last.accuracy, epoch
        save_epoch(trainer, improved, trainer.state(epoch, best, elapsed, history), {**meta, **epoch_meta(epoch, last, best, elapsed)})
        mark = f"  -> saved {model_path}" if improved else ""
        print(f"epoch {epoch}/{trainer.plan.epochs}  loss {loss:.4f}  {last.summary('val')}{raw}  {took:.0f} s{mark}", flush=True)
        why = stop_reason(trainer, epoch, last.accuracy, best_epoch)
        if why:
            print(why)
            break
    rate = len(train) * len(history.rows) / elapsed if elapsed else 0
    kept = "the last epoch" if trainer.plan.keep_last else "best"
    print(
        f"done: {len(history.rows)} epochs in {elapsed / 60:.1f} min ({rate:,.0f} img/s); "
        f"{kept} {best:.2%} exact at epoch {best_epoch}, saved to {model_path}"
    )
    return 0


def stop_reason(trainer: Trainer, epoch: int, accuracy: float, best_epoch: int) -> str | None:
    """Why the run stops after `epoch`, or None: --target-acc reached, nothing left to learn on the
    validation set (100%), or --patience epochs without a better accuracy. The best model is saved."""
    target, patience = trainer.config.target_acc, trainer.plan.patience
    if target is not None and accuracy >= target:
        return f"reached --target-acc {target:.2%} at epoch {epoch}"
    if patience and accuracy >= 1.0:
        return f"validation accuracy reached 100% at epoch {epoch}: nothing left to learn on it, stopping (--patience 0 goes on)"
    if patience and epoch - int(best_epoch) >= patience:
        return f"no better validation accuracy for {patience} epochs (best at epoch {best_epoch}), stopping (--patience N to choose)"
    return None


def save_epoch(trainer: Trainer, improved: bool, state: dict, meta: dict) -> None:
    """model.pkl when the epoch improved, then last.pkl; rank 0 only.

    model.pkl before last.pkl: a crash between the two then redoes this epoch on --resume
    instead of resuming past a best model that never reached model.pkl."""
    if not distributed.is_main():
        return
    config = trainer.config.to_dict()
    if improved:
        save_checkpoint(trainer.config.model, trainer.checked, meta, state, train_config=config)
    save_checkpoint(run_files(trainer.config.model)[1], trainer.model, meta, state, train_config=config)


def history_row(epoch: int, loss: float, last: EvalResult, lr: float, took: float, elapsed: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": f"{loss:.5f}",
        "val_loss": f"{last.loss:.5f}",
        "val_accuracy": f"{last.accuracy:.5f}",
        "val_char_accuracy": f"{last.char_accuracy:.5f}",
        "lr": f"{lr:.3g}",
        "epoch_s": f"{took:.1f}",
        "elapsed_s": f"{elapsed:.1f}",
    }


def epoch_meta(epoch: int, result: EvalResult, best: float, elapsed: float) -> dict:
    """What model.pkl's metadata says of the epoch it was saved after."""
    return {
        "epoch": epoch,
        "best_accuracy": best,
        "val_accuracy": result.accuracy,
        "val_char_accuracy": result.char_accuracy,
        "elapsed_s": round(elapsed, 1),
    }
