"""The CTC head: per-column log-probabilities that align themselves to the text.

The attention head gives every character position its own softmax block, and variable-length
labels are padded with a "no character" class: the network must learn where the k-th character
of a 4-, 5- or 6-character captcha starts, and a misplaced guess drops or doubles a character.
Connectionist temporal classification (Graves et al., 2006) reads the image column by column
instead: each column gives a probability for every character and for a blank ("none here"),
and the loss sums over every way the columns can spell the label, so no position is ever
located by hand. Reading (captchakit.codec.LabelCodec.decode) takes each column's best class,
merges repeats and drops blanks, and keeps the text to the labels' lengths. Which head wins on
variable-length styles, and by how much: docs/BENCHMARKS.md, "Variable length: CTC against the
attention head".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from captchakit.codec import LabelCodec


def output_columns(width: int, length: int, split: int) -> int:
    """Output columns per column of the last map: `split`, or 0 for enough to spell the longest
    label with a blank between every two characters (2 * length + 1 columns), and at least 2."""
    return split if split else max(2, math.ceil((2 * length + 1) / width))


class CTCHead(nn.Module):
    """(N, C, H, W) features -> (N, W * split, num_classes) log-probabilities.

    Each of the W columns becomes a `dim` vector (a 1x1 conv over its C*H values, as in the
    attention head). With `recurrent`, a bidirectional GRU adds to each column what stands left
    and right of it, so the two halves of a wide character agree on one reading. A linear layer
    gives `split` outputs per column: the last map's columns are 16 pixels apart, too coarse for
    long labels, which need a blank between repeated characters.
    """

    def __init__(self, channels: int, height: int, num_classes: int, dim: int, split: int, dropout: float, recurrent: bool):
        super().__init__()
        self.num_classes, self.split = num_classes, split
        self.columns = nn.Sequential(nn.Conv1d(channels * height, dim, 1, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.context = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True) if recurrent else None
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(dim, split * num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        columns = self.columns(features.flatten(1, 2)).transpose(1, 2)  # (N, C*H, W) -> (N, W, dim)
        if self.context is not None:
            columns = columns + self.context(columns)[0]  # residual: the column itself stays the main cue
        out = self.classify(self.dropout(columns))  # (N, W, split * K)
        return out.reshape(out.shape[0], -1, self.num_classes).log_softmax(-1)  # (N, W * split, K)


def ctc_loss(logp: torch.Tensor, targets: torch.Tensor, codec: LabelCodec, reduction: str = "mean") -> torch.Tensor:
    """CTC loss of (B, T, K) log-probabilities against (B, length) blank-padded targets.

    "sum": nats summed over the batch; "mean": divided by B * length, per character slot, the
    scale of the position heads' cross-entropy that evaluate() reports for every head. A label
    the columns cannot spell (more characters and blanks than columns) adds nothing rather than
    an infinite loss.
    """
    targets, lengths = codec.ctc_targets(targets)
    b, t = logp.shape[:2]
    inputs = torch.full((b,), t, dtype=torch.long, device=logp.device)
    total = F.ctc_loss(logp.float().transpose(0, 1), targets, inputs, lengths, blank=codec.blank, reduction="sum", zero_infinity=True)
    return total if reduction == "sum" else total / (b * codec.length)
