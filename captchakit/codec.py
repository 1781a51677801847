"""The one label codec: text <-> per-position class indices, and network output -> text.

The network ends in `length * num_classes` logits: one softmax block per character
position. For variable-length labels the last class of each block means "no character";
labels are padded on the right with it, and decoding drops it.
"""

from __future__ import annotations

from captchakit.settings import Settings


class LabelError(ValueError):
    """A label that this codec cannot encode (unknown character or wrong length)."""


class LabelCodec:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.charset = settings.charset
        self.length = settings.length
        self.min_length = settings.min_length
        self.ignore_case = settings.ignore_case
        self.pad = len(self.charset) if settings.variable_length else None
        self.num_classes = len(self.charset) + (1 if self.pad is not None else 0)
        self._index = {c: i for i, c in enumerate(self.charset)}

    @property
    def num_outputs(self) -> int:
        return self.length * self.num_classes

    def normalize(self, text: str) -> str:
        """The label as the model reads it (upper case when case is ignored)."""
        return text.upper() if self.ignore_case else text

    def problem(self, text: str) -> str | None:
        """Why `text` cannot be a label for this codec, or None when it can."""
        text = self.normalize(text)
        if not self.min_length <= len(text) <= self.length:
            want = str(self.length) if self.min_length == self.length else f"{self.min_length}-{self.length}"
            return f"label {text!r} has {len(text)} characters, expected {want}"
        bad = sorted({c for c in text if c not in self._index})
        if bad:
            return f"label {text!r} has characters outside the charset: {''.join(bad)!r}"
        return None

    def encode(self, text: str) -> list[int]:
        """'A3' -> [10, 3] (+ padding to `length`); raises LabelError for a bad label."""
        problem = self.problem(text)
        if problem:
            raise LabelError(problem)
        text = self.normalize(text)
        return [self._index[c] for c in text] + [self.pad] * (self.length - len(text))

    def encode_batch(self, texts):
        """A list of labels -> LongTensor (N, length)."""
        import torch  # here, not above: captcha_gen.py and captcha_dataset.py use the codec without torch

        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long).reshape(-1, self.length)

    def decode_indices(self, indices) -> str:
        return "".join(self.charset[i] for i in indices if i != self.pad)

    def decode(self, logits):
        """Logits (N, length*num_classes) -> list of (text, confidence).

        Confidence is the product of the per-position winning probabilities: the model's
        probability of the whole text, given that positions are independent.
        """
        probs = logits.detach().float().reshape(-1, self.length, self.num_classes).softmax(-1)
        best, idx = probs.max(-1)  # (N, length) each
        conf = best.prod(-1)
        return [(self.decode_indices(row), float(c)) for row, c in zip(idx.tolist(), conf.tolist(), strict=True)]
