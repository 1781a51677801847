"""Batch augmentation: shapes and range kept, same seed same batch, never a flip, off means untouched."""

from __future__ import annotations

import pytest
import torch

from captchakit.model import shift_columns
from captchakit.train.augment import AugmentConfig, affine_theta, augment, augment_batch, batch_generator, shift_batch


def ramp(b: int = 64, h: int = 32, w: int = 96) -> torch.Tensor:
    """Dark at the top-left, light at the bottom-right: any flip reverses one of the two slopes."""
    ys = torch.linspace(0, 0.4, h).view(h, 1)
    xs = torch.linspace(0, 0.6, w).view(1, w)
    return (ys + xs).expand(b, 1, h, w).clone()


def test_shape_dtype_range_and_layout_are_kept():
    x = torch.rand(16, 1, 30, 100)
    y = augment(x, batch_generator(0, 1, 2, "cpu"))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(y, x)


def test_same_seed_same_batch_other_seed_other_batch():
    x = ramp(8)
    a = augment(x, batch_generator(5, 3, 1, "cpu"))
    b = augment(x, batch_generator(5, 3, 1, "cpu"))
    c = augment(x, batch_generator(5, 3, 2, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_never_flips(strength):
    y = augment(ramp(), batch_generator(1, 1, 1, "cpu"), AugmentConfig().scaled(strength))
    left, right = y[..., :, :20].mean((1, 2, 3)), y[..., :, -20:].mean((1, 2, 3))
    top, bottom = y[..., :8, :].mean((1, 2, 3)), y[..., -8:, :].mean((1, 2, 3))
    assert bool((left < right).all()) and bool((top < bottom).all())
    theta = affine_theta(1000, 50, 200, AugmentConfig().scaled(strength), batch_generator(2, 0, 0, "cpu"))
    assert bool((theta[:, 0, 0] > 0).all()) and bool((theta[:, 1, 1] > 0).all())
    assert bool((torch.linalg.det(theta[:, :, :2]) > 0).all())  # orientation kept: no mirror image


def test_changes_are_small_the_image_stays_recognisable():
    x = torch.zeros(32, 1, 32, 96) + 1.0
    x[..., 8:24, 20:40] = 0.0  # a dark block: where a character would be
    y = augment(x, batch_generator(3, 0, 0, "cpu"))
    inside = y[..., 12:20, 24:36].mean((1, 2, 3))  # the block's centre stays dark
    outside = y[..., :, 70:].mean((1, 2, 3))  # the empty right side stays light
    assert bool((inside < 0.45).all()) and bool((outside > 0.55).all())


def test_strength_zero_leaves_the_batch_untouched():
    x = torch.rand(4, 1, 16, 48)
    assert augment_batch(x, 0.0, 0, 0, 1, 0) is x
    assert not torch.equal(augment_batch(x, 1.0, 0, 0, 1, 0), x)


def test_the_training_hook_shifts_when_not_augmenting():
    x = torch.rand(16, 1, 16, 48)
    assert augment_batch(x, 0.0, 0, 0, 1, 0) is x
    shifted = augment_batch(x, 0.0, 3, 0, 1, 0)
    assert torch.equal(shifted, shift_batch(x, 3, batch_generator(0, 1, 0, "cpu")))
    augmented = augment_batch(x, 1.0, 3, 0, 1, 0)
    assert torch.equal(augmented, augment_batch(x, 1.0, 0, 0, 1, 0))  # --augment shifts already


def test_rotation_is_a_rotation_on_wide_images():
    """Built in pixels, a rotation keeps lengths: the matrix carried back to pixels is orthogonal times a zoom."""
    cfg = AugmentConfig(shift=0, rotate=10, scale=0, shear=0)
    theta = affine_theta(50, 50, 200, cfg, batch_generator(0, 0, 0, "cpu"))
    s = torch.diag(torch.tensor([100.0, 25.0]))  # half width, half height
    m = s @ theta[:, :, :2] @ torch.linalg.inv(s)
    eye = m @ m.transpose(1, 2)
    assert torch.allclose(eye, torch.eye(2).expand_as(eye), atol=1e-5)


def test_shift_batch_moves_each_image_by_whole_pixels_within_k():
    x = torch.rand(16, 1, 6, 20)
    out = shift_batch(x, 3, batch_generator(0, 1, 2, "cpu"))
    assert torch.equal(out, shift_batch(x, 3, batch_generator(0, 1, 2, "cpu")))  # the same batch moves the same way on --resume
    moves = []
    for src, got in zip(x, out, strict=True):
        (move,) = [d for d in range(-3, 4) if torch.equal(got, shift_columns(src[None], d)[0])]
        moves.append(move)
    assert len(set(moves)) > 1  # each image draws its own move
