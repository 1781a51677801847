"""Measure a model on a labelled set: whole-captcha and per-character accuracy, loss.

`evaluate()` is the one scoring function: captcha_test.py, the checks after every training
epoch and captcha_export.py --ship all call it, and captchakit.report analyses what it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from captchakit.data.images import to_tensor
from captchakit.data.sets import LabelledSet


@dataclass
class EvalResult:
    n: int
    accuracy: float  # whole captcha right
    char_accuracy: float  # characters right
    loss: float
    position_accuracy: list[float]
    predictions: list[tuple[str, str, str, float]] = field(default_factory=list)  # file, truth, guess, confidence
    guesses: list[list[int]] = field(default_factory=list)  # (N, length) class indices picked, pad included; with predictions

    def summary(self, name: str = "test") -> str:
        return f"{name}: {self.n:,} captchas, {self.accuracy:.2%} exact, {self.char_accuracy:.2%} of characters"


@torch.inference_mode()
def evaluate(model, data: LabelledSet, device, batch_size: int = 256, keep_predictions: bool = False) -> EvalResult:
    """Run `model` on `device` over every image of `data` in eval mode; exact and per-character accuracy."""
    model.eval()
    codec = model.codec
    targets = torch.from_numpy(data.targets(codec))  # (N, length)
    k, length = codec.num_classes, codec.length
    loss_sum, exact, chars, char_total = 0.0, 0, 0, 0
    per_position = torch.zeros(length)
    predictions, guesses = [], []
    for start in range(0, len(data), batch_size):
        positions = np.arange(start, min(start + batch_size, len(data)))
        logits = model(to_tensor(data.batch(positions)).to(device)).float().cpu()  # (B, length*k)
        t = targets[start : start + len(positions)]
        loss_sum += F.cross_entropy(logits.view(-1, k), t.reshape(-1), reduction="sum").item()
        guess = logits.view(-1, length, k).argmax(-1)  # (B, length)
        right = guess == t
        exact += int(right.all(1).sum())
        per_position += right.float().sum(0)
        counted = t != codec.pad if codec.pad is not None else torch.ones_like(right)
        counted |= guess != codec.pad if codec.pad is not None else counted
        chars += int((right & counted).sum())
        char_total += int(counted.sum())
        if keep_predictions:
            guesses += guess.tolist()
            for j, (text, conf) in enumerate(codec.decode(logits)):
                predictions.append((data.names[start + j], data.labels[start + j], text, conf))
    n = len(data)
    return EvalResult(
        n=n,
        accuracy=exact / n,
        char_accuracy=chars / max(char_total, 1),
        loss=loss_sum / (n * length),
        position_accuracy=(per_position / n).tolist(),
        predictions=predictions,
        guesses=guesses,
    )
