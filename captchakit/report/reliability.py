"""What captcha_test.py says of the confidence: calibration error, coverage table, reliability diagram.

The figures come from captchakit.calibrate, over the test set's readings (the confidence each was
printed with, and whether the whole reading was right), so they judge the confidence a user sees.
"""

from __future__ import annotations

import numpy as np

from captchakit import calibrate
from captchakit.report.plots import _figure, _save


def confidence_metrics(confidence, right, calibrated: bool) -> dict:
    """metrics.json's "confidence": whether the model is calibrated, the ECE, the bins and the coverage table."""
    return {
        "calibrated": calibrated,
        "ece": calibrate.ece(confidence, right),
        "mean_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
        "bins": calibrate.reliability(confidence, right),
        "coverage": calibrate.coverage(confidence, right),
    }


def confidence_lines(m: dict, n: int) -> list[str]:
    """The printed lines: the calibration error, then one line per threshold of the coverage table."""
    note = "" if m["calibrated"] else " (the model is uncalibrated: saved before calibration; retrain to calibrate it)"
    lines = [
        f"confidence: mean {m['mean_confidence']:.2%}, expected calibration error {m['ece']:.2%} "
        f"({calibrate.ECE_BINS} equal bins, {n:,} captchas){note}",
        "answering only at confidence >= t:",
    ]
    for row in m["coverage"]:
        acc = "none answered" if row["accuracy"] is None else f"{row['accuracy']:.2%} of them right"
        lines.append(f"  t = {row['threshold']:<4g}  {row['answered']:6.1%} answered, {acc}")
    return lines


def reliability_figure(path, m: dict, n: int) -> None:
    """reliability.png: accuracy against mean confidence per bin (on the diagonal when calibrated), and the bins' counts."""
    fig = _figure(9, 4.2)
    ax, counts = fig.subplots(1, 2)
    bins = m["bins"]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="calibrated")
    ax.bar(centres, [b["accuracy"] for b in bins], width=1 / calibrate.ECE_BINS, alpha=0.35, edgecolor="0.3", label="accuracy per bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="C3", label="mean confidence -> accuracy")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="confidence", ylabel="share read right", title=f"reliability (ECE {m['ece']:.2%})")
    ax.legend(loc="upper left", fontsize=8)
    counts.bar(centres, [b["n"] for b in bins], width=1 / calibrate.ECE_BINS, edgecolor="0.3")
    counts.set(xlim=(0, 1), xlabel="confidence", ylabel="captchas", yscale="log", title=f"readings per bin ({n:,} in all)")
    state = "calibrated" if m["calibrated"] else "uncalibrated model"
    fig.suptitle(f"confidence against accuracy on the test set ({state})")
    fig.tight_layout()
    _save(fig, path)
