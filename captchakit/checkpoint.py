"""model.pkl: a plain dict of weights, the settings and model config, and training metadata.

Saved atomically (temporary file + os.replace) and loaded with weights_only=True, so a
crafted pickle cannot run code. Nothing outside plain tensors, numbers, strings, lists
and dicts goes in, and no whole model is ever pickled.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import signal
from pathlib import Path

import torch

from captchakit import calibrate
from captchakit.errors import DISK_FULL, UserError
from captchakit.files import atomic_path
from captchakit.model import CaptchaCNN, ModelConfig, check_test_shifts, view_shifts, with_test_shifts
from captchakit.settings import Settings

FORMAT = "captcha-toolkit/1"


HALF_MAX = torch.finfo(torch.float16).max
TENSOR_STATE = ("optimizer", "scheduler", "rng", "ema")  # train_state entries that hold tensors


def plain(value):
    """Numbers, strings, lists and dicts only: what weights_only=True loads back (str subclasses too)."""
    return json.loads(json.dumps(value, default=str))


def _refusal(err: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(err))
    return f"it asks to load {found[1]}" if found else "it holds more than plain data"


def save_checkpoint(
    path,
    model: CaptchaCNN,
    meta: dict,
    train_state: dict | None = None,
    half: bool = False,
    train_config: dict | None = None,
    calibration: dict | None = None,
) -> None:
    """Write `path` in one step: the old file stays whole if anything fails midway.

    `train_config` is the TrainConfig the model was trained with (captchakit.train.config), as a dict;
    `calibration` the confidence's temperature and figures (captchakit.calibrate.Calibration.to_dict()).
    half=True stores the float weights as float16, half the bytes (the shipped model);
    read_checkpoint turns them back into float32, so nothing else sees a difference.
    """
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:  # a tensor beyond float16's range (65504) would turn to inf: it stays float32
        weights = {k: v.half() if v.is_floating_point() and v.abs().max() <= HALF_MAX else v for k, v in weights.items()}
    payload = {
        "format": FORMAT,
        "settings": model.settings.to_dict(),
        "model_config": model.config.to_dict(),
        "state_dict": weights,
        "meta": plain(meta),
    }
    if train_config is not None:
        payload["train_config"] = plain(train_config)
    if calibration is not None:
        payload["calibration"] = plain(calibration)
    if train_state is not None:
        payload["train_state"] = {k: v if k in TENSOR_STATE else plain(v) for k, v in train_state.items()}
    write_checkpoint(path, payload)


def write_checkpoint(path, payload: dict) -> None:
    """torch.save `payload` to `path` atomically, a full disk or read-only folder as a one-line UserError."""
    # Serialized in memory first, then written by Python: on a full disk torch's own file writer fails
    # with a RuntimeError that hides the reason ("unexpected pos ..."), a Python write with OSError(ENOSPC).
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        with atomic_path(path, ".pkl") as tmp:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
            _fault_point(tmp)
    except OSError as err:  # disk full, folder made read-only midway: atomic_path left the old file whole
        why = err.strerror or str(err)
        todo = "free some space" if err.errno in DISK_FULL else "make its folder writable or choose another"
        again = "run again (captcha_train.py --resume goes on from the last saved epoch)"
        raise UserError(f"{path}: cannot save the model ({why}); {todo}, then {again}") from None


FAULT_ENV = "CAPTCHA_FAULT"
_saves: dict[str | None, int] = {}  # saves so far, per file name the fault hook watches


def _fault_point(tmp: str) -> None:
    """Test-only fault hook, inert unless the CAPTCHA_FAULT environment variable is set.

    CAPTCHA_FAULT=kill-during-save[:NAME][:N] makes the N-th save (default 1) of a file called
    NAME (default: any) in this process cut its temporary file to half and kill -9 itself before
    the rename: the one moment a crash could otherwise leave a corrupt model. tests/test_faults.py
    uses it to hit that moment every time, not by luck.
    """
    kind, *rest = os.environ.get(FAULT_ENV, "").split(":")
    if kind != "kill-during-save":
        return
    name = next((r for r in rest if not r.isdigit()), None)
    if name and not Path(tmp).name.startswith(f".{name}."):
        return
    _saves[name] = _saves.get(name, 0) + 1
    if _saves[name] == int(next((r for r in rest if r.isdigit()), 1)):
        os.truncate(tmp, os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def read_checkpoint(path, flag: str = "--model") -> dict:
    """Load the dict from `path` onto the CPU, turning every way it can be unusable into a UserError naming `flag`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag} {path}: file not found; train one with `python captcha_train.py` or pass {flag} PATH")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # a broken byte stream, not a refused class
            raise UserError(f"{flag} {path}: unreadable or truncated (not a pickle); retrain it or restore a good copy") from None
        raise UserError(f"{flag} {path}: refused to load, {_refusal(err)}; use a model.pkl made by captcha_train.py") from None
    except Exception as err:  # garbage bytes make the unpickler fail in many ways (KeyError, EOFError, ...)
        raise UserError(f"{flag} {path}: unreadable or truncated ({type(err).__name__}); retrain it or restore a good copy") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{flag} {path}: not a captcha-toolkit model file; use a model.pkl made by captcha_train.py")
    weights = ckpt.get("state_dict")
    if isinstance(weights, dict):  # float16 weights of a shipped model (save_checkpoint half=True) -> float32
        ckpt["state_dict"] = {k: v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 else v for k, v in weights.items()}
    return ckpt


def model_from_checkpoint(ckpt: dict, path="model.pkl", device="cpu") -> CaptchaCNN:
    """Rebuild the network from the arguments stored with it, load its weights and its confidence's temperature."""
    try:
        settings = Settings.from_dict(ckpt["settings"])
        model = CaptchaCNN(settings, ModelConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["state_dict"])
        calibrate.apply(model, ckpt.get("calibration"))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0][:120]
        raise UserError(f"--model {path}: its weights do not fit its settings ({reason}); retrain it") from None
    return model.to(device).eval()


def load_checkpoint(path, device="cpu", test_shifts: int | None = None) -> tuple[CaptchaCNN, dict]:
    """(model in eval mode on `device`, the checkpoint dict); test_shifts: see --test-shifts."""
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt, path, device)
    if test_shifts is not None:
        check_reading(model, test_shifts)
    return with_test_shifts(model, test_shifts), ckpt


def check_reading(model: CaptchaCNN, k: int) -> None:
    """Refuse, as the user's mistake, a --test-shifts K that `model` cannot read with (too wide, or a CTC head)."""
    try:
        check_test_shifts(view_shifts(k), model.settings.width, model.config.head)
    except ValueError as err:
        raise UserError(f"--test-shifts {k}: {err}") from None
