"""The torch device, chosen once per run."""

from __future__ import annotations

from captchakit.errors import UserError


def choose_device(name: str = "auto"):
    """Pick the torch device once: auto means CUDA, then MPS, then CPU."""
    import torch

    name = (name or "auto").lower()
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if name == "mps" and not mps_ok:
        raise UserError("--device mps: MPS is not available on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise UserError(f"--device {name}: unknown device; use auto, cpu, cuda or mps")
    return torch.device(name)
