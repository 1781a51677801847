"""--online: captchas drawn fresh every epoch by worker processes, seeded per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dist_probe import launch, samples

import captcha_setting as cs
import captcha_test
import captcha_train
from captcha_setting import Settings
from captchakit.codec import LabelCodec
from captchakit.data.images import load_image
from captchakit.data.synth import CaptchaFactory
from captchakit.train import online as captcha_online

SETTINGS = Settings(charset="0123456789", length=4, width=80, height=32)


def epoch_arrays(data: captcha_online.OnlineSet, epoch: int, rank: int = 0, world: int = 1, batch: int = 8):
    steps, size, batches = data.epoch_plan(epoch, batch, rank, world)
    got = list(batches)
    assert len(got) == steps and all(len(images) == size for images, _ in got)
    return np.concatenate([i for i, _ in got]), np.concatenate([t for _, t in got])


def test_batches_are_the_seeded_captchas_read_by_load_image():
    data = captcha_online.OnlineSet(SETTINGS, 20, seed=5, workers=0)
    images, targets = epoch_arrays(data, 1)
    assert images.shape == (16, 32, 80) and images.dtype == np.uint8  # 2 full batches of 8; the rest dropped
    assert targets.shape == (16, 4) and targets.dtype == np.int64
    # Training draws '0' more often, as a generated train split does.
    factory, codec = CaptchaFactory(SETTINGS, emphasis=cs.TRAIN_EMPHASIS), LabelCodec(SETTINGS)
    for i in (0, 9, 15):
        label, image = factory.make_seeded(5, "online-e1", i)
        assert codec.decode_indices(targets[i]) == label
        assert np.array_equal(images[i], load_image(image, 80, 32))


def test_the_varied_style_streams_the_renderers_captchas_of_every_length():
    varied = Settings(charset="0123456789abcXYZ", length=6, min_length=1, width=96, height=32, keep_aspect=True)
    images, targets = epoch_arrays(captcha_online.OnlineSet(varied, 24, seed=5, workers=0, style="varied"), 1)
    from captchakit.data.render import Renderer, RenderSpec

    codec, source = LabelCodec(varied), Renderer(RenderSpec("0123456789abcXYZ", 1, 6))
    for i in (0, 11, 23):
        label, image = source.make_seeded(5, "online-e1", i)
        assert codec.decode_indices(targets[i]) == label
        assert np.array_equal(images[i], load_image(image, 96, 32, keep_aspect=True))
    assert len({int((t != codec.pad).sum()) for t in targets}) > 2  # several label lengths


def test_same_seed_same_captchas_new_ones_every_epoch_and_seed():
    a = captcha_online.OnlineSet(SETTINGS, 16, seed=5, workers=0)
    first, again = epoch_arrays(a, 1), epoch_arrays(a, 1)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], epoch_arrays(a, 2)[0])
    other_seed = captcha_online.OnlineSet(SETTINGS, 16, seed=6, workers=0)
    assert not np.array_equal(first[0], epoch_arrays(other_seed, 1)[0])


def test_ranks_draw_different_parts_of_the_epoch_whatever_the_workers():
    one = epoch_arrays(captcha_online.OnlineSet(SETTINGS, 32, seed=5, workers=0), 3)[0]
    two_workers = captcha_online.OnlineSet(SETTINGS, 32, seed=5, workers=2)
    r0, r1 = epoch_arrays(two_workers, 3, 0, 2), epoch_arrays(two_workers, 3, 1, 2)
    assert not np.array_equal(r0[0], r1[0])
    # Worker processes change nothing, and the ranks together draw what one process would.
    assert np.array_equal(np.concatenate([r0[0], r1[0]]), one)


def test_online_training_with_a_generated_validation_set(tmp_path, cli):
    model = tmp_path / "model.pkl"
    flags = ["--online", "--online-size", "64", "--online-val", "16", "--workers", "2", "--epochs", "1", "--batch-size", "16"]
    flags += ["--charset", "0123456789", "--width", "80", "--height", "32", "--val-dir", tmp_path / "none", "--model", model]
    code, out, err = cli(captcha_train.main, *flags)
    assert code == 0, err
    assert f"--val-dir {tmp_path / 'none'}: no such folder; checking on 16 generated captchas (seed 0)" in out
    assert "training on 64 images (generated every epoch by 2 worker process(es), seed 0)" in out
    assert "epoch 1/1  loss" in out
    ckpt = torch.load(model, weights_only=True)
    assert ckpt["meta"]["online"] is True and ckpt["settings"]["charset"] == "0123456789"
    # The same seed trains the same model: data, order and weights are all seeded.
    code, _, err = cli(captcha_train.main, *flags[:-1], tmp_path / "again.pkl")
    assert code == 0, err
    again = torch.load(tmp_path / "again.pkl", weights_only=True)
    assert all(torch.equal(ckpt["state_dict"][k], again["state_dict"][k]) for k in ckpt["state_dict"])
    code, out, _ = cli(captcha_test.main, "--model", model, "--generate", "10")
    assert code == 0 and out.startswith("test: 10 captchas, ")


@pytest.mark.parametrize(("flag", "value"), [("--online-size", "0"), ("--online-val", "-1")])
def test_bad_online_counts_get_one_line(flag, value, tmp_path, cli):
    code, out, err = cli(captcha_train.main, "--online", flag, value, "--model", tmp_path / "m.pkl")
    assert code == 2 and err.strip().splitlines()[-1].endswith(f"error: {flag} {value}: use at least 1")
    assert not (tmp_path / "m.pkl").exists()


def test_online_under_two_ranks_draws_different_captchas_per_rank(tiny_data, tmp_path):
    logs = tmp_path / "logs"
    flags = ["--online", "--online-size", "128", "--workers", "1", "--epochs", "1", "--batch-size", "32"]
    flags += ["--val-dir", tiny_data / "test", "--model", tmp_path / "model.pkl"]
    assert launch(logs, flags) == [0, 0], (logs / "err0.txt").read_text()[-2000:]
    r0, r1 = samples(logs, 0)[1], samples(logs, 1)[1]
    assert len(r0) == len(r1) == 64 and not set(r0) & set(r1)
    assert (tmp_path / "model.pkl").exists() and (logs / "out1.txt").read_text() == ""
