"""How well a model's confidence is calibrated on a test set, fitted several ways.

    python bench/calibration.py MODEL:TEST [MODEL:TEST ...] [--pool]

For each model trained with a validation share (captcha_train.py --train-dir without --val-dir),
fits the temperature on that share (as training does at its end) three ways and prints, per
way, the temperature and the expected calibration error (10 bins) on the labelled folder TEST:
  - path_plain: the best column path's probability (a CTC head; an attention head's product of
    positions otherwise), fitted on the share alone: what models before session 12 stored;
  - path_views: the same confidence, fitted on the share and calibrate.VIEWS augmented views of each;
  - now: the confidence and fit of captchakit.calibrate today.
`perfect_mean`/`perfect_p90` are the ECE a perfectly calibrated model would show on the same test
confidences (each reading drawn right with the probability it states, 2,000 draws): the noise
floor of the figure on a test set that small. --pool adds one line over all the test readings.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _common import emit

from captchakit import calibrate as cal
from captchakit.api import load_model
from captchakit.checkpoint import read_checkpoint
from captchakit.data.sets import load_labelled
from captchakit.export.ship import validation_share

DRAWS = 2_000


def floor(confidence: np.ndarray) -> tuple[float, float]:
    """Mean and 90th percentile of the ECE of readings drawn right with the probability stated."""
    rng = np.random.default_rng(0)
    draws = [cal.ece(confidence, rng.random(len(confidence)) < confidence) for _ in range(DRAWS)]
    return round(float(np.mean(draws)), 4), round(float(np.percentile(draws, 90)), 4)


def study(model_path: str, test_dir: str) -> tuple[dict, np.ndarray, np.ndarray]:
    model = load_model(model_path, "cpu").model
    codec = model.codec
    val = validation_share(model, read_checkpoint(model_path).get("meta", {}))
    test = load_labelled(test_dir, codec, "TEST", quiet=True)
    outputs, right = cal.readings(model, val, "cpu", views=cal.VIEWS)
    plain = slice(0, len(val))
    t_out, t_right = cal.readings(model, test, "cpu")
    row = {"model": model_path, "test": test_dir, "val": len(val), "n": len(test), "accuracy": round(float(t_right.float().mean()), 4)}
    before = copy.copy(codec)  # the same codec reading the best path, as models before session 12 were fitted
    before.best_path = True
    for name, (o, r) in (("path_plain", (outputs[plain], right[plain])), ("path_views", (outputs, right))):
        t = cal.fit_temperature(o, r, before)
        row[name] = {"temperature": round(t, 3), "ece": round(cal.ece(before.confidences(t_out, t), t_right), 4)}
    now = cal.calibrate(model, val, "cpu")
    conf = codec.confidences(t_out).numpy()
    row["now"] = {
        "temperature": round(now.temperature, 3),
        "ece": round(cal.ece(conf, t_right), 4),
        "mean_confidence": round(float(conf.mean()), 4),
    }
    row["perfect_mean"], row["perfect_p90"] = floor(conf)
    return row, conf, t_right.numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", metavar="MODEL:TEST", help="a model.pkl with a validation share, and a labelled test folder")
    p.add_argument("--pool", action="store_true", help="also print the ECE over all the test readings together")
    args = p.parse_args()
    torch.set_num_threads(1)
    confs, rights = [], []
    for pair in args.pairs:
        model_path, _, test_dir = pair.partition(":")
        row, conf, right = study(model_path, test_dir)
        emit(row)
        confs.append(conf)
        rights.append(right)
    if args.pool:
        c, r = np.concatenate(confs), np.concatenate(rights)
        mean, p90 = floor(c)
        emit(
            {
                "pooled": len(args.pairs),
                "n": len(c),
                "accuracy": round(float(r.mean()), 4),
                "ece": round(cal.ece(c, r), 4),
                "perfect_mean": mean,
                "perfect_p90": p90,
            }
        )


if __name__ == "__main__":
    main()
