"""Pseudo-labels from unlabelled images: captcha_train.py --unlabelled, on tiny real folders."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from owndata_data import draw

import captcha_train
from captchakit.checkpoint import load_checkpoint, read_checkpoint
from captchakit.data.sets import in_memory
from captchakit.train import pseudo

FAST = ["--epochs", "2", "--batch-size", "16", "--threads", "2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """60 labelled captchas, and 40 more of the same style under names that carry no label."""
    root = tmp_path_factory.mktemp("pseudo")
    draw(root / "labelled", 60, seed=1)
    hidden = draw(root / "pool", 40, seed=2, name=lambda label, i: f"img{i:03d}")
    return root, hidden


def kept_rows(model_path) -> list[dict]:
    with open(model_path.parent / f"{model_path.stem}_run" / "pseudo_labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_unlabelled_rounds_keep_readings_and_train_again(folders, tmp_path, cli):
    root, hidden = folders
    model = tmp_path / "m.pkl"
    args = ["--train-dir", root / "labelled", "--unlabelled", root / "pool", "--pseudo-rounds", "2", "--pseudo-threshold", "0"]
    code, out, err = cli(captcha_train.main, *args, "--model", model, *FAST)
    assert code == 0, err
    assert "pseudo-labels: 40 unlabelled images" in out
    kept = [line for line in out.splitlines() if line.startswith("round 1: kept ")]
    assert len(kept) == 1 and kept[0].endswith("of 40 readings (confidence >= 0, same when shifted)")
    rows = kept_rows(model)
    assert {r["file"] for r in rows} <= set(hidden) and all(r["round"] in ("1", "2") for r in rows)
    assert "round 1: validation" in out  # every round is judged on the labelled validation share
    meta = read_checkpoint(model)["meta"]
    assert meta["split"]["folder"].endswith("labelled")  # the test share of the labelled run is still the one tested
    assert "calibration" in read_checkpoint(model)


def test_the_labelled_folder_itself_as_unlabelled_leaves_its_labelled_images_out(folders, tmp_path, cli):
    root, _ = folders
    mixed = tmp_path / "mixed"
    labels = draw(mixed, 50, seed=3)
    draw(mixed, 30, seed=4, name=lambda label, i: f"x{i:03d}")  # no label in the name, none in labels.csv
    (mixed / "labels.csv").write_text("file,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    model = tmp_path / "m.pkl"
    code, out, err = cli(captcha_train.main, "--train-dir", mixed, "--unlabelled", mixed, "--pseudo-rounds", "1", "--model", model, *FAST)
    assert code == 0, err
    assert "pseudo-labels: 30 unlabelled images" in out  # the 50 labelled (train, validation and test shares) are not read


def test_only_sure_and_shift_steady_readings_are_kept(tiny_model, tiny_data):
    model, _ = load_checkpoint(tiny_model, "cpu")
    images = np.stack([np.asarray(p) for p in _pngs(tiny_data)])
    data = in_memory("pool", images, [f"{i}.png" for i in range(len(images))], [""] * len(images))
    everything = pseudo.read_surely(model, data, "cpu", threshold=0.0)
    assert everything  # a reading that does not move with the image is kept at threshold 0
    assert pseudo.read_surely(model, data, "cpu", threshold=1.01) == []
    out = model(torch.from_numpy(images[:, None].astype(np.float32) / 255)).float()
    confidences = model.codec.confidences(out).tolist()
    middle = sorted(confidences)[len(confidences) // 2]
    some = pseudo.read_surely(model, data, "cpu", threshold=middle)
    assert {p for p, _, _ in some} <= {p for p, _, c in everything if c >= middle}
    assert all(c >= middle for _, _, c in some)


def test_a_round_is_judged_by_validation_only_when_the_share_can_tell():
    # 50 validation images and more: a round that validates worse than the best so far is turned down
    assert pseudo.adopts(0.96, 0.96, 50) and pseudo.adopts(0.98, 0.96, 200)
    assert not pseudo.adopts(0.95, 0.96, 50)
    assert pseudo.verdict(False, 200) == "not kept"
    # 20 images: one of them is 5 points, noise rather than judgement, so the round is kept
    assert pseudo.adopts(0.95, 1.0, 20)
    assert pseudo.verdict(True, 20) == "kept (20 validation images are too few to judge a round by)"


def _pngs(tiny_data):
    from PIL import Image

    return [Image.open(p).convert("L") for p in sorted((tiny_data / "predict").glob("*.png"))]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unlabelled", "nowhere"], "--unlabelled nowhere"),
        (["--unlabelled", ".", "--online"], "--unlabelled: --online"),
        (["--unlabelled", ".", "--pseudo-threshold", "2"], "--pseudo-threshold"),
    ],
)
def test_unlabelled_mistakes_get_one_line_and_no_model(extra, message, folders, tmp_path, cli):
    root, _ = folders
    model = tmp_path / "m.pkl"
    code, _, err = cli(captcha_train.main, "--train-dir", root / "labelled", "--model", model, *extra, *FAST)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not model.exists()
