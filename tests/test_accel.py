"""The GPU path's decisions (captcha_accel), checked on a CPU with CUDA's answers mocked.

No GPU is needed: what is tested is which precision, scaler, copies and wrapper the engine
chooses, and that on a CPU it trains bit for bit like the plain fp32 loop.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import captcha_train
from captcha_setting import Settings
from captchakit.codec import LabelCodec
from captchakit.data.images import to_tensor
from captchakit.errors import UserError
from captchakit.model import CaptchaCNN, ModelConfig
from captchakit.train import engine as captcha_accel
from captchakit.train import loop
from captchakit.train.config import TrainConfig

CUDA = torch.device("cuda", 0)
SETTINGS = Settings(charset="0123456789", length=4, width=80, height=32)


def train_config(*flags: str) -> TrainConfig:
    return TrainConfig.from_args(captcha_train.build_parser().parse_args(list(flags)))


def engine_for(net, device, *flags: str) -> captcha_accel.Engine:
    """make_engine as captcha_train.py calls it with these flags."""
    config = train_config(*flags)
    return captcha_accel.make_engine(net, device, config.precision, config.compile)


def cuda_engine(monkeypatch, bf16: bool, *flags: str) -> captcha_accel.Engine:
    """make_engine for a CUDA device on a GPU whose bfloat16 support is `bf16`."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)  # restored after the test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler('cuda') warns that CUDA is missing here
        return engine_for(torch.nn.Linear(2, 2), CUDA, *flags)


CASES = [(True, "bf16", torch.bfloat16, False), (False, "fp16", torch.float16, True)]


@pytest.mark.parametrize(("bf16", "precision", "dtype", "scaled"), CASES)
def test_cuda_autocasts_to_bf16_where_supported_else_fp16_with_a_grad_scaler(monkeypatch, bf16, precision, dtype, scaled):
    engine = cuda_engine(monkeypatch, bf16)
    assert engine.precision == precision
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
    assert isinstance(engine.scaler, torch.amp.GradScaler) if scaled else engine.scaler is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast('cuda') warns that CUDA is missing here
        cast = engine.autocast()
    assert isinstance(cast, torch.autocast) and cast.device == "cuda" and cast.fast_dtype == dtype
    assert torch.backends.cudnn.benchmark is True


def test_cuda_precision_flags_override_auto_or_are_refused(monkeypatch):
    assert cuda_engine(monkeypatch, True, "--precision", "fp16").precision == "fp16"
    fp32 = cuda_engine(monkeypatch, True, "--precision", "fp32")
    assert fp32.precision == "fp32" and fp32.scaler is None
    with fp32.autocast():
        assert not torch.is_autocast_enabled("cuda")
    with pytest.raises(UserError, match=r"^--precision bf16: this GPU does not support bfloat16; use --precision fp16 or auto$"):
        cuda_engine(monkeypatch, False, "--precision", "bf16")
    with pytest.raises(UserError, match=r"^--precision bf16: mixed precision is for CUDA GPUs; use --precision auto or fp32 on mps$"):
        captcha_accel.resolve_precision("bf16", torch.device("mps"))


class RecordingScaler:
    """Stands in for GradScaler: records the order of the calls of a scaled step."""

    def __init__(self):
        self.calls: list[str] = []

    def scale(self, loss):
        self.calls.append("scale")
        return loss * 1024.0

    def step(self, optimizer):
        self.calls.append("step")
        optimizer.step()

    def update(self):
        self.calls.append("update")


def test_fp16_step_scales_the_loss_then_steps_through_the_scaler_and_updates_it():
    net = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = RecordingScaler()
    engine = captcha_accel.Engine(net, torch.device("cpu"), "fp16", scaler)
    loss = net(torch.ones(2, 3)).sum()
    engine.backward_step(loss, optimizer)
    assert scaler.calls == ["scale", "step", "update"]
    assert torch.allclose(net.bias.grad, torch.tensor([2048.0]))  # backward ran on the scaled loss


def test_cuda_batches_cross_as_uint8_from_pinned_memory_without_blocking(monkeypatch):
    sent: list[tuple] = []
    pinned: list[torch.dtype] = []

    def pin_memory(self):
        pinned.append(self.dtype)
        return self

    def to(self, device, non_blocking=False):  # a CPU stand-in for the host-to-GPU copy
        sent.append((self.dtype, device, non_blocking))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    engine = captcha_accel.Engine(torch.nn.Identity(), CUDA, "bf16")
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    x, y = engine.to_device(images, np.ones((2, 3), np.int64))
    monkeypatch.undo()
    assert pinned == [torch.uint8, torch.int64]
    assert sent == [(torch.uint8, CUDA, True), (torch.int64, CUDA, True)]  # a quarter of float32's bytes
    # Turned into floats on the device: the same values and layout as the CPU path's to_tensor.
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, to_tensor(images)) and torch.equal(y, torch.ones(2, 3, dtype=torch.int64))


def test_compile_wraps_the_called_network_and_leaves_the_saved_module_plain():
    model = CaptchaCNN(SETTINGS, ModelConfig())
    engine = engine_for(model, torch.device("cpu"), "--compile")
    assert engine.net is not model and engine.net._orig_mod is model  # compiled lazily, on the first call
    assert engine.precision == "fp32" and engine.scaler is None
    assert not any(k.startswith("_orig_mod.") for k in model.state_dict())  # model.pkl keeps plain names


def batches(n: int, seed: int):
    rng = np.random.default_rng(seed)
    codec = LabelCodec(SETTINGS)
    for _ in range(n):
        images = rng.integers(0, 256, (16, SETTINGS.height, SETTINGS.width), dtype=np.uint8)
        labels = ["".join(rng.choice(list(SETTINGS.charset), SETTINGS.length)) for _ in range(16)]
        yield images, np.stack([codec.encode(label) for label in labels])


def trained_weights(use_engine: bool) -> tuple[dict, list[float]]:
    """Three steps from seed 0: through the engine (default flags) or the plain fp32 loop."""
    torch.manual_seed(0)
    model = CaptchaCNN(SETTINGS, ModelConfig()).to(memory_format=torch.channels_last).train()
    config = train_config()
    optimizer, scheduler = loop.make_optimizer(model, config, 3)
    engine = engine_for(model, torch.device("cpu")) if use_engine else None
    losses = []
    for images, targets in batches(3, seed=1):
        if engine:
            x, y = engine.to_device(images, targets)
        else:
            x, y = to_tensor(images), torch.from_numpy(targets)
        losses.append(loop.train_step(model, x, y, optimizer, scheduler, config.label_smoothing, engine))
    return model.state_dict(), losses


def test_on_a_cpu_the_engine_trains_bit_for_bit_like_the_plain_fp32_loop():
    plain, plain_losses = trained_weights(use_engine=False)
    accel, accel_losses = trained_weights(use_engine=True)
    assert accel_losses == plain_losses
    assert plain.keys() == accel.keys() and all(torch.equal(plain[k], accel[k]) for k in plain)
