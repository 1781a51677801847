"""The GPU path of training: mixed precision, pinned non-blocking copies, torch.compile.

`Engine` is what the training loop calls for the device-dependent parts of a step. On a CPU
(or MPS) it does exactly what the plain loop did: float32, `to_tensor(images).to(device)`,
`loss.backward(); optimizer.step()`, so the CPU path's results do not change. On CUDA:
  - autocast to bfloat16 where the GPU supports it, else float16 with a GradScaler (float16
    gradients underflow without loss scaling; bfloat16 has float32's range and needs none);
  - uint8 batches are copied to pinned memory and sent with non_blocking=True, a quarter of
    the bytes of float32 images, then turned into floats on the GPU;
  - cudnn.benchmark picks the fastest convolution kernels for the fixed image size.
`--compile` wraps the (possibly DistributedDataParallel) network in torch.compile; it is off by
default because on the 2-core CPU it measured slower (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from captchakit.data.images import nchw, to_tensor
from captchakit.errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(choice: str, device: torch.device, bf16_ok: bool | None = None) -> str:
    """'auto' | 'bf16' | 'fp16' | 'fp32' for `device` -> the precision actually used."""
    if device.type != "cuda":
        if choice in DTYPES:
            raise UserError(f"--precision {choice}: mixed precision is for CUDA GPUs; use --precision auto or fp32 on {device.type}")
        return "fp32"
    if bf16_ok is None:
        bf16_ok = torch.cuda.is_bf16_supported()
    if choice == "auto":
        return "bf16" if bf16_ok else "fp16"
    if choice == "bf16" and not bf16_ok:
        raise UserError("--precision bf16: this GPU does not support bfloat16; use --precision fp16 or auto")
    return choice


@dataclass
class Engine:
    """The device-dependent parts of a training step (see the module's docstring)."""

    net: torch.nn.Module  # what the loop calls: the model, DDP-wrapped and/or compiled
    device: torch.device
    precision: str = "fp32"
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def plain(cls, model: torch.nn.Module, device=None) -> Engine:
        return cls(model, torch.device(device) if device is not None else next(model.parameters()).device)

    def autocast(self):
        if self.precision not in DTYPES:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def backward_step(self, loss: torch.Tensor, optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()

    def to_device(self, images: np.ndarray, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W) or colour (B, H, W, 3) uint8 and (B, length) int64 -> x (B, C, H, W) float in [0, 1], y, on the device."""
        if self.device.type != "cuda":
            x = to_tensor(images).to(self.device, non_blocking=True)
            return x, torch.from_numpy(np.ascontiguousarray(targets)).to(self.device, non_blocking=True)
        x = torch.from_numpy(np.ascontiguousarray(images)).pin_memory().to(self.device, non_blocking=True)
        y = torch.from_numpy(np.ascontiguousarray(targets)).pin_memory().to(self.device, non_blocking=True)
        x = nchw(x).float().div_(255.0).contiguous(memory_format=torch.channels_last)
        return x, y

    def describe(self) -> str:
        net = type(self.net).__name__
        return f"{self.precision}{' + GradScaler' if self.scaler else ''}, {net}"


def make_engine(net: torch.nn.Module, device: torch.device, precision: str = "auto", compile: bool = False) -> Engine:
    """From --precision and --compile; `net` is the model as the loop calls it (maybe DDP-wrapped)."""
    precision = resolve_precision(precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one image size: let cuDNN time its kernels once
    if compile:
        net = torch.compile(net)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return Engine(net, device, precision, scaler)
