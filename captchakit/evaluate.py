"""Measure a model on a labelled set: whole-captcha and per-character accuracy, loss.

`evaluate()` is the one scoring function: captcha_test.py, the checks after every training
epoch and captcha_export.py --ship all call it, and captchakit.report analyses what it keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from captchakit.codec import edit_distance
from captchakit.data.images import to_tensor
from captchakit.data.sets import LabelledSet


@dataclass
class EvalResult:
    n: int
    accuracy: float  # whole captcha right
    # Characters right: per position, the padding not counted where both truth and guess have it;
    # for CTC, whose texts need not line up, 1 - (edit distance to the truth) / (true characters).
    char_accuracy: float
    loss: float
    position_accuracy: list[float]
    predictions: list[tuple[str, str, str, float]] = field(default_factory=list)  # file, truth, guess, confidence
    # (N, length) class indices picked, pad included; with predictions. CTC: the read text laid
    # over the true one (LabelCodec.aligned), a dropped character as the pad class.
    guesses: list[list[int]] = field(default_factory=list)

    @property
    def standard_error(self) -> float:
        """The binomial standard error of `accuracy`: how far another draw of n captchas would typically read."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.n) if self.n else 0.0

    def summary(self, name: str = "test") -> str:
        return f"{name}: {self.n:,} captchas, {self.accuracy:.2%} exact, {self.char_accuracy:.2%} of characters"


def model_outputs(model, data: LabelledSet, device, batch_size: int = 256) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(first position, input batch (B, C, H, W) on `device`, outputs (B, ...) float on the CPU) for each
    batch of `data`, the model in eval mode; callers iterate under torch.inference_mode()."""
    model.eval()
    for start in range(0, len(data), batch_size):
        x = to_tensor(data.batch(np.arange(start, min(start + batch_size, len(data))))).to(device)
        yield start, x, model(x).float().cpu()


@torch.inference_mode()
def evaluate(model, data: LabelledSet, device, batch_size: int = 256, keep_predictions: bool = False) -> EvalResult:
    """Run `model` on `device` over every image of `data` in eval mode; exact and per-character accuracy."""
    codec = model.codec
    targets = torch.from_numpy(data.targets(codec))  # (N, length)
    length = codec.length
    loss_sum, exact, chars, char_total = 0.0, 0, 0, 0
    per_position = torch.zeros(length)
    predictions, guesses = [], []
    for start, _, logits in model_outputs(model, data, device, batch_size):  # logits (B, length*k); CTC: (B, T, k)
        t = targets[start : start + len(logits)]
        loss_sum += model.loss(logits, t, reduction="sum").item()
        decoded = codec.decode(logits) if codec.ctc or keep_predictions else []
        if codec.ctc:
            guess, hits, right_chars, counted = score_texts(codec, t, data.labels[start : start + len(logits)], decoded)
        else:
            guess, hits, right_chars, counted = score_positions(codec, logits, t)
        exact, chars, char_total = exact + hits, chars + right_chars, char_total + counted
        per_position += (guess == t).float().sum(0)
        if keep_predictions:
            guesses += guess.tolist()
            for j, (text, conf) in enumerate(decoded):
                predictions.append((data.names[start + j], data.labels[start + j], text, conf))
    n = len(data)
    return EvalResult(
        n=n,
        accuracy=exact / n,
        char_accuracy=max(chars, 0) / max(char_total, 1),
        loss=loss_sum / (n * length),
        position_accuracy=(per_position / n).tolist(),
        predictions=predictions,
        guesses=guesses,
    )


def score_positions(codec, logits: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """A position head's batch: (guess (B, length), exact, characters right, characters counted)."""
    guess = logits.view(-1, codec.length, codec.num_classes).argmax(-1)  # (B, length)
    right = guess == t
    counted = t != codec.pad if codec.pad is not None else torch.ones_like(right)
    counted |= guess != codec.pad if codec.pad is not None else counted
    return guess, int(right.all(1).sum()), int((right & counted).sum()), int(counted.sum())


def score_texts(codec, t: torch.Tensor, labels: list[str], decoded) -> tuple[torch.Tensor, int, int, int]:
    """A CTC batch, scored on the decoded texts: (guess laid over the truth, exact, true characters
    less the edit distance, true characters)."""
    texts = [text for text, _ in decoded]
    guess = torch.tensor([codec.aligned(a, b) for a, b in zip(labels, texts, strict=True)], dtype=torch.long).reshape_as(t)
    exact = sum(a == b for a, b in zip(labels, texts, strict=True))
    total = sum(len(a) for a in labels)
    return guess, exact, total - sum(edit_distance(a, b) for a, b in zip(labels, texts, strict=True)), total
