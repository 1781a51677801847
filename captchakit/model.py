"""The CNN: a stack of 3x3 conv + BatchNorm + ReLU blocks, then one linear head.

The head ends in `length * num_classes` logits: one softmax block per character position
(one-hot multi-label), or, for the CTC head (captchakit/ctc.py), in per-column
log-probabilities that CTC aligns to the text. Written for a 2-core CPU first: no dropout on convolution feature
maps (drawing their masks adds to every CPU step: docs/BENCHMARKS.md, study item 1),
stride-2 blocks that shrink the map early, and channels_last memory for the fast oneDNN
convolution kernels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from captchakit.codec import LabelCodec
from captchakit.ctc import CTCHead, ctc_loss, output_columns
from captchakit.settings import Settings


@dataclass(frozen=True)
class ModelConfig:
    """The network's own arguments; stored in model.pkl so loading needs no flags."""

    # Space-to-depth factor of the stem: 2 turns (1, 60, 160) into (4, 30, 80) without losing
    # a pixel, so no conv or BatchNorm ever runs at full resolution (there, BatchNorm and
    # ReLU cost more than the convolution itself on a CPU).
    stem: int = 2
    # One conv block per entry: output channels and stride. For 160x60 the maps are
    # 15x40 (32), 8x20 (64), 8x20 (96), 4x10 (128), 4x10 (192): width is spent where the
    # map is small and cheap; the study in docs/BENCHMARKS.md chose it (96 rather than 128
    # at 8x20 trains faster and reads as well: study item 12).
    channels: tuple[int, ...] = (32, 64, 96, 128, 192)
    strides: tuple[int, ...] = (2, 2, 1, 2, 1)
    # "attention": each character position pools the columns of the last map with its own
    # attention and one classifier, shared by all positions, reads the pooled vector.
    # "flat": one linear layer over the whole flattened map (the classic design; it must learn
    # every character at every place separately, and memorises far more).
    # "ctc": per-column log-probabilities read by CTC (captchakit/ctc.py): the columns align
    # themselves to the text, so labels of several lengths need no positions; the default for
    # variable-length data sets (docs/BENCHMARKS.md, "Variable length").
    head: str = "attention"
    head_dim: int = 256  # attention and CTC heads: width of each column's vector
    ctc_split: int = 0  # CTC head: output columns per column of the last map; 0: enough for the longest label
    ctc_recurrent: bool = True  # CTC head: a bidirectional GRU over the columns before the classifier
    hidden: int = 0  # flat head: width of a hidden linear layer before the output, 0 for none
    dropout: float = 0.1  # on the head's inputs only, never on conv maps
    # Out of training, read each image also moved this many pixels sideways and average the
    # views' log-probabilities per position: a small ensemble, since each view meets the
    # stride-16 grid at another phase. (-3, 0, 3) costs 3 forward passes; what it gains is in
    # docs/BENCHMARKS.md, study item 13. (0,) reads it once.
    test_shifts: tuple[int, ...] = (0,)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        clean = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        clean.setdefault("head", "flat")  # models saved before the attention head had the flat one
        return cls(**clean)


class AttentionHead(nn.Module):
    """(N, C, H, W) features -> (N, length * num_classes) logits.

    Each of the W columns becomes a `dim` vector (a 1x1 conv over its C*H values). Each character
    position scores every column (a 3-wide conv over the column vectors, plus a learned bias per
    position and column, so the order of the characters is known), softmaxes the scores over the
    columns and takes the weighted mean of the column vectors. One linear classifier, shared by
    all positions, reads each mean: a character is recognised the same way wherever it stands.
    """

    def __init__(self, channels: int, height: int, width: int, length: int, num_classes: int, dim: int, dropout: float):
        super().__init__()
        self.columns = nn.Sequential(nn.Conv1d(channels * height, dim, 1, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.scores = nn.Conv1d(dim, length, 3, padding=1)
        self.position = nn.Parameter(torch.zeros(length, width))
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        columns = self.columns(features.flatten(1, 2))  # (N, C*H, W) -> (N, dim, W)
        weights = torch.softmax(self.scores(columns) + self.position, dim=-1)  # (N, length, W)
        pooled = torch.bmm(weights, columns.transpose(1, 2))  # (N, length, dim)
        return self.classify(self.dropout(pooled)).flatten(1)  # (N, length * num_classes)


def shift_columns(x: torch.Tensor, shift: int) -> torch.Tensor:
    """(N, C, H, W) moved `shift` columns right (left if negative); the edge column fills the gap."""
    if shift > 0:
        return torch.cat([x[..., :1].expand(-1, -1, -1, shift), x[..., :-shift]], dim=-1)
    if shift < 0:
        return torch.cat([x[..., -shift:], x[..., -1:].expand(-1, -1, -1, -shift)], dim=-1)
    return x


def conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CaptchaCNN(nn.Module):
    """Input (N, C, H, W) floats in [0, 1], C = settings.channels; output (N, length * num_classes) logits
    (the CTC head: (N, T, num_classes) per-column log-probabilities)."""

    def __init__(self, settings: Settings, config: ModelConfig | None = None):
        super().__init__()
        self.settings = settings
        self.config = config = config or ModelConfig()
        self.codec = LabelCodec(settings, ctc=config.head == "ctc")
        check_test_shifts(config.test_shifts, settings.width, config.head)
        if len(config.channels) != len(config.strides):
            raise ValueError("ModelConfig.channels and strides must have the same length")
        if settings.height % config.stem or settings.width % config.stem:
            # PixelUnshuffle needs whole blocks; the settings' size is what every image is resized to.
            raise ValueError(f"image size {settings.width}x{settings.height} must be a multiple of the stem factor {config.stem}")
        blocks: list[nn.Module] = [nn.PixelUnshuffle(config.stem)] if config.stem > 1 else []
        c_in = config.stem * config.stem * settings.channels  # space-to-depth of every input channel: only the first conv sees C
        for c_out, stride in zip(config.channels, config.strides, strict=True):
            blocks.append(conv_block(c_in, c_out, stride))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        h, w = self.feature_size(settings.height, settings.width)
        if config.head == "attention":
            self.head = AttentionHead(c_in, h, w, settings.length, self.codec.num_classes, config.head_dim, config.dropout)
            return
        if config.head == "ctc":
            split = output_columns(w, settings.length, config.ctc_split)
            self.head = CTCHead(c_in, h, self.codec.num_classes, config.head_dim, split, config.dropout, config.ctc_recurrent)
            return
        if config.head != "flat":
            raise ValueError(f"ModelConfig.head must be 'attention', 'ctc' or 'flat', not {config.head!r}")
        flat = c_in * h * w
        head: list[nn.Module] = [nn.Flatten(), nn.Dropout(config.dropout)]
        if config.hidden:
            head += [nn.Linear(flat, config.hidden), nn.ReLU(inplace=True), nn.Dropout(config.dropout)]
            flat = config.hidden
        head.append(nn.Linear(flat, self.codec.num_outputs))
        self.head = nn.Sequential(*head)

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size after the conv stack: each stride-2 block halves it, rounding up."""
        height, width = height // self.config.stem, width // self.config.stem
        for stride in self.config.strides:
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
        return height, width

    def adopt(self, state: dict, source: LabelCodec) -> tuple[int, int]:
        """Fine-tuning: copy every tensor of another model's `state` that fits this network; the
        classifier of an attention or CTC head takes, class by class, the rows of the characters
        both charsets share (`source`: that model's codec). Returns (tensors copied, classes taken)."""
        own = self.state_dict()
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("head.classify.")}
        self.load_state_dict(fits, strict=False)
        if self.config.head not in ("ctc", "attention") or "head.classify.weight" not in state:
            return len(fits), 0
        split = getattr(self.head, "split", 1)  # the CTC head's outputs per column; the attention head has one
        rows = self.codec.rows_from(source)
        weight, bias = state["head.classify.weight"], state["head.classify.bias"]
        return len(fits), take_classes(self.head.classify, split, weight, bias, rows, source.num_classes)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
        """This head's loss against (B, length) targets of the codec: training and evaluate() both call it.

        Position heads: cross-entropy per character position. CTC: captchakit.ctc.ctc_loss
        (per character slot; label smoothing does not apply, the blank already absorbs doubt)."""
        if self.config.head == "ctc":
            return ctc_loss(outputs, targets, self.codec, reduction)
        k = self.codec.num_classes
        return F.cross_entropy(outputs.view(-1, k).float(), targets.view(-1), label_smoothing=label_smoothing, reduction=reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) * 4.0  # [0, 1] -> roughly zero mean, unit spread
        shifts = self.config.test_shifts
        if self.training or shifts == (0,):
            return self.head(self.features(x))
        # The stride-16 grid meets each view's strokes at another phase: averaging the views is a
        # small ensemble. (V*N, 1, H, W) in, (V, N, length, classes) log-probabilities out.
        views = torch.cat([shift_columns(x, s) for s in shifts])
        logp = self.head(self.features(views)).view(len(shifts), x.shape[0], self.settings.length, -1).log_softmax(-1)
        return logp.mean(0).flatten(1)  # (N, length * num_classes), usable as logits


def check_test_shifts(shifts: tuple[int, ...], width: int, head: str = "attention") -> None:
    if not shifts or not all(isinstance(s, int) and abs(s) < width // 2 for s in shifts):
        raise ValueError(f"shifts must be whole pixels under {width // 2} (half the image width), not {shifts}; 3 is a good choice")
    if head == "ctc" and shifts != (0,):
        # A shifted view moves the columns a character aligns to: averaging views column by column
        # would split one character's peak over two columns and drop it.
        raise ValueError("a CTC model reads each image once (shifted views do not align column by column); leave it out or use 0")


def view_shifts(k: int) -> tuple[int, ...]:
    """--test-shifts K as the shifts of the views: (-K, 0, K), or (0,) for 0."""
    return (-k, 0, k) if k else (0,)


def with_test_shifts(model: CaptchaCNN, k: int | None) -> CaptchaCNN:
    """The model, reading each image also moved k pixels left and right (None: as it was saved)."""
    if k is not None:
        shifts = view_shifts(k)
        check_test_shifts(shifts, model.settings.width, model.config.head)
        model.config = replace(model.config, test_shifts=shifts)
    return model


@torch.no_grad()
def take_classes(linear: nn.Linear, split: int, weight: torch.Tensor, bias: torch.Tensor, rows: list[int | None], k_src: int) -> int:
    """Copy another classifier of K_src classes (`weight` (split * K_src, dim), `bias`) into `linear`
    (split * K, dim) class by class: class k gets the source's class rows[k] in each of the `split`
    slots; None keeps its fresh weights. Returns the classes copied (0 when slots or widths differ)."""
    k = linear.out_features // split
    if weight.shape[0] != split * k_src or weight.shape[1] != linear.in_features or len(rows) != k:
        return 0
    mine_w, mine_b = linear.weight.view(split, k, -1), linear.bias.view(split, k)  # views: writes land in linear
    src_w, src_b = weight.view(split, k_src, -1), bias.view(split, k_src)
    copied = [(c, r) for c, r in enumerate(rows) if r is not None and r < k_src]
    for c, r in copied:
        mine_w[:, c] = src_w[:, r]
        mine_b[:, c] = src_b[:, r]
    return len(copied)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
