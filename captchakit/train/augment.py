"""Augmentation for captchas, on whole batches of tensors at once.

Small random shifts, rotations, scaling, shear and a smooth local warp (one affine_grid +
grid_sample call for the whole batch), then blur, contrast, brightness and noise. Never a
flip or a large rotation: a mirrored '2' or an upside-down '6' is another character.
Everything is drawn from one seeded torch.Generator, so a batch augments the same way for
the same (seed, epoch, step).

Training turns it on by default for small data sets (captchakit.train.config.SMALL_DATA), where a
few thousand images would otherwise be learned by heart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Largest change of each kind at strength 1; each image draws its own amount up to it."""

    shift: float = 0.04  # translation, share of the width / height
    rotate: float = 4.0  # degrees
    scale: float = 0.06  # zoom in or out by up to this share
    shear: float = 0.12  # horizontal shear, as a slope
    warp: float = 0.012  # smooth local displacement, share of the image size
    blur: float = 0.6  # blend towards a 3x3 blur
    noise: float = 0.04  # standard deviation of pixel noise (images are in [0, 1])
    contrast: float = 0.25  # contrast factor in 1 +- this
    brightness: float = 0.08  # added to every pixel, +- this

    def scaled(self, strength: float) -> AugmentConfig:
        return replace(self, **{f.name: getattr(self, f.name) * strength for f in fields(self)})


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) * (high - low) + low


def affine_theta(n: int, height: int, width: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices: rotation, shear and scale in pixel space, then a shift.

    Built in pixels and carried into affine_grid's [-1, 1] coordinates (S^-1 M S), so that a
    rotation stays a rotation on a wide 200x50 image instead of turning into a shear.
    """
    angle = _uniform(n, -cfg.rotate, cfg.rotate, gen) * (math.pi / 180)
    zoom = _uniform(n, 1 - cfg.scale, 1 + cfg.scale, gen)
    shear = _uniform(n, -cfg.shear, cfg.shear, gen)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # M = R(angle) @ [[1, shear], [0, 1]] / zoom, mapping output pixels to input pixels.
    m00, m01 = cos, cos * shear - sin
    m10, m11 = sin, sin * shear + cos
    aspect = width / height
    theta = torch.empty(n, 2, 3, device=gen.device)
    theta[:, 0, 0], theta[:, 0, 1] = m00, m01 / aspect
    theta[:, 1, 0], theta[:, 1, 1] = m10 * aspect, m11
    theta[:, 0, 2] = _uniform(n, -cfg.shift, cfg.shift, gen) * 2
    theta[:, 1, 2] = _uniform(n, -cfg.shift, cfg.shift, gen) * 2
    return theta


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(theta, (B, 1, H, W), align_corners=False), built from two broadcast sums.

    An affine map is separable: x' = a*x + (b*y + c). Two (B, 1, W) + (B, H, 1) sums cost a
    small fraction of what F.affine_grid's batched matrix product costs on the CPU.
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    grid = torch.empty(theta.shape[0], height, width, 2, device=theta.device, dtype=theta.dtype)
    for k in range(2):  # k = 0: the x coordinate to sample, k = 1: the y coordinate
        along_x = theta[:, k, 0, None, None] * xs.view(1, 1, width)  # (B, 1, W)
        along_y = theta[:, k, 1, None, None] * ys.view(1, height, 1) + theta[:, k, 2, None, None]  # (B, H, 1)
        torch.add(along_x, along_y, out=grid[..., k])
    return grid


def _blur3(x: torch.Tensor) -> torch.Tensor:
    """A separable [1, 2, 1] / 4 blur of (B, C, H, W), edges replicated (slices: far cheaper than a grouped conv)."""
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = x[..., 1:-1, :] * 0.5 + (x[..., :-2, :] + x[..., 2:, :]) * 0.25
    return x[..., 1:-1] * 0.5 + (x[..., :-2] + x[..., 2:]) * 0.25


def _interp_matrix(n_out: int, n_in: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation with align_corners=True."""
    pos = torch.linspace(0, n_in - 1, n_out, device=like.device, dtype=like.dtype)
    return torch.clamp(1 - (pos[:, None] - torch.arange(n_in, device=like.device, dtype=like.dtype)).abs(), min=0)


def warp_field(field: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 2, h, w) coarse offsets -> (B, H, W, 2), bilinearly upsampled.

    Two small matrix products instead of F.interpolate plus a permuted add, which took a
    sizeable share of an augmented step on the CPU.
    """
    rows = _interp_matrix(height, field.shape[2], field)  # (H, h)
    cols = _interp_matrix(width, field.shape[3], field)  # (W, w)
    return torch.einsum("Hh,bchw,Ww->bHWc", rows, field, cols)


def augment(x: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """x (B, C, H, W) floats in [0, 1] -> a new tensor of the same shape, augmented per image."""
    cfg = cfg or AugmentConfig()
    b, _, h, w = x.shape
    grid = affine_grid(affine_theta(b, h, w, cfg, gen), h, w)  # (B, H, W, 2)
    if cfg.warp > 0:
        # A coarse random field, smoothly upsampled: local stretches like a captcha's own distortion.
        field = torch.randn(b, 2, 3, 8, generator=gen, device=gen.device) * (cfg.warp * 2)
        grid.add_(warp_field(field, h, w))
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.blur > 0:
        out = torch.lerp(out, _blur3(out), _uniform(b, 0, cfg.blur, gen).view(b, 1, 1, 1))
    # Contrast c around 0.5 and brightness d in one pass: x * c + (0.5 - 0.5 * c + d).
    contrast = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, gen).view(b, 1, 1, 1)
    bright = _uniform(b, -cfg.brightness, cfg.brightness, gen).view(b, 1, 1, 1)
    out.mul_(contrast).add_(0.5 - 0.5 * contrast + bright)
    if cfg.noise > 0:
        # Uniform noise of standard deviation std (half-width std * sqrt(3)): cheaper to draw than normal.
        std = _uniform(b, 0, cfg.noise, gen).view(b, 1, 1, 1)
        noise = torch.rand(out.shape, generator=gen, device=gen.device).sub_(0.5)
        out.addcmul_(noise, std * math.sqrt(12))
    return out.clamp_(0, 1).to(x.dtype).contiguous(memory_format=torch.channels_last)


def batch_generator(seed: int, epoch: int, step: int, device) -> torch.Generator:
    """One generator per (seed, epoch, step): a batch augments the same way on a rerun or --resume."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)
    return gen


def shift_batch(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """(B, C, H, W): each image moved its own whole number of pixels sideways, up to k either way.

    Whole pixels keep every stroke as the generator drew it; the edge column fills the gap."""
    b, _, h, w = x.shape
    moves = torch.randint(-k, k + 1, (b, 1), generator=gen, device=x.device)
    columns = (torch.arange(w, device=x.device) - moves).clamp_(0, w - 1)  # (B, W): where each output column reads
    out = x.gather(-1, columns[:, None, None, :].expand(b, x.shape[1], h, w))
    return out.contiguous(memory_format=torch.channels_last)


def augment_batch(x: torch.Tensor, strength: float, shift: int, seed: int, epoch: int, step: int) -> torch.Tensor:
    """The training hook: augment x at `strength` (0: off), else move it sideways by up to `shift`
    whole pixels (the augmentation already shifts); the draws follow (seed, epoch, step)."""
    if not strength and not shift:
        return x
    gen = batch_generator(seed, epoch, step, x.device)
    if strength:
        return augment(x, gen, AugmentConfig().scaled(float(strength)))
    return shift_batch(x, shift, gen)
