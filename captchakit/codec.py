"""The one label codec: text <-> per-position class indices, and network output -> text.

The position heads (attention, flat) end in `length * num_classes` logits: one softmax block per
character position. For variable-length labels the last class of each block means "no
character"; labels are padded on the right with it, and decoding drops it.

The CTC head (`LabelCodec(settings, ctc=True)`) ends in (N, T, num_classes) log-probabilities,
one row per image column; the last class is CTC's blank ("no character here"), which also pads
the targets, so the same (N, length) targets serve both (`ctc_targets` adds their lengths).
Decoding takes the best class of each column, merges repeats and drops blanks (greedy CTC); a
text of a length no label has (the settings' min_length to length) is read again as the best
column path of a length that labels have (captchakit.ctc_paths).
"""

from __future__ import annotations

from captchakit import ctc_paths
from captchakit.settings import Settings


class LabelError(ValueError):
    """A label that this codec cannot encode (unknown character or wrong length)."""


class LabelCodec:
    def __init__(self, settings: Settings, ctc: bool = False, temperature: float = 1.0, best_path: bool = False):
        self.settings = settings
        # Logits are divided by it before the softmax that gives the confidence; the texts read do
        # not depend on it. captchakit.calibrate fits it on validation images (1.0: uncalibrated).
        self.temperature = temperature
        # A CTC model calibrated before session 12 (or never) keeps the confidence it was fitted on:
        # its best column path's probability (captchakit.calibrate.Calibration.best_path).
        self.best_path = best_path
        self.charset = settings.charset
        self.length = settings.length
        self.min_length = settings.min_length
        self.ignore_case = settings.ignore_case
        self.ctc = ctc
        # CTC always needs its blank; it takes the pad's index, so targets are the same either way.
        self.pad = len(self.charset) if settings.variable_length or ctc else None
        self.blank = self.pad if ctc else None
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

    def rows_from(self, source: LabelCodec) -> list[int | None]:
        """For each of this codec's classes, the class of `source` that means the same (the same
        character, read case-blind where this codec is; pad/blank to pad/blank), or None."""
        index = {c: i for i, c in enumerate(source.charset)}
        # A case-blind codec's charset is upper case; a source without a letter's capital lends its small one.
        rows: list[int | None] = [index.get(c, index.get(c.lower()) if self.ignore_case else None) for c in self.charset]
        if self.pad is not None:
            rows.append(source.pad)
        return rows

    def decode_indices(self, indices) -> str:
        return "".join(self.charset[i] for i in indices if i != self.pad)

    def ctc_targets(self, targets):
        """(N, length) targets of encode_batch -> (the same targets, (N,) label lengths) for ctc_loss."""
        return targets, (targets != self.pad).sum(1) if self.pad is not None else targets.new_full(targets.shape[:1], self.length)

    def decode(self, logits):
        """Logits (N, length*num_classes), or a CTC head's (N, T, num_classes) -> list of (text, confidence)."""
        texts = self.texts(logits)
        return list(zip(texts, self.confidences(logits, texts=texts).tolist(), strict=True))

    def texts(self, logits) -> list[str]:
        """The texts read: the best class of each position (CTC: of each column, then collapsed)."""
        scores = logits.detach().float().reshape(logits.shape[0], -1, self.num_classes)
        return self.spell(scores.argmax(-1), scores if self.ctc else None)

    def spell(self, idx, scores=None) -> list[str]:
        """(N, length) class indices -> texts; a CTC model's (N, T) column paths are collapsed, and
        given its (N, T, num_classes) scores (logits or log-probabilities), a text of a length no
        label has is read again as the best column path of a length that labels have
        (`path_of_length`): a character held over a blank, or two merged into one, is the CTC
        reader's usual slip. Only those rows are turned into log-probabilities."""
        if not self.ctc:
            return [self.decode_indices(row) for row in idx.tolist()]
        texts = [self.collapse(row) for row in idx.tolist()]
        for i, text in enumerate(texts):
            if scores is not None and not self.min_length <= len(text) <= self.length:
                logp = scores[i].float().log_softmax(-1).cpu().numpy()  # (T, num_classes)
                path = ctc_paths.path_of_length(logp, self.blank, self.min_length, self.length)
                texts[i] = text if path is None else self.collapse(path)
        return texts

    def probabilities(self, logits, temperature: float | None = None):
        """(N, length or T, num_classes): the softmax of each position (or column) of the logits
        divided by the temperature."""
        t = self.temperature if temperature is None else temperature
        return (logits.detach().float().reshape(logits.shape[0], -1, self.num_classes) / t).softmax(-1)

    def log_probabilities(self, logits, temperature: float | None = None):
        """The log of `probabilities`, kept finite: what the CTC passes over the columns read."""
        return self.probabilities(logits, temperature).clamp_min(1e-30).log()

    def confidences(self, logits, temperature: float | None = None, texts: list[str] | None = None):
        """(N,) float tensor: the probability of each text read (`texts`, if already read), after
        dividing the logits by the temperature. Positions count as independent: the product of their
        winning probabilities. A CTC head sums over every column path that spells the text: at a
        character's edge, blank or character is a near tie that changes nothing read, and the best
        path alone would count it as doubt (docs/BENCHMARKS.md, "Calibrated confidence"); divided by
        the probability of any text of the labels' lengths, it is the text's probability given that.

        At temperature 1 it is the model's own probability of the whole text: label smoothing leaves
        it well under the accuracy. With the temperature fitted on validation images
        (captchakit.calibrate) it estimates the probability that the reading is right."""
        if not self.ctc or self.best_path:
            return self.probabilities(logits, temperature).amax(-1).prod(-1)
        logp = self.log_probabilities(logits, temperature)  # (N, T, K), read by both passes
        spelt = self.spelled(logp, texts if texts is not None else self.texts(logits))
        return (spelt / self.in_lengths(logp)).clamp_(0.0, 1.0)

    def in_lengths(self, logp):
        """(N,) the probability, under a CTC head's (N, T, num_classes) log-probabilities, of spelling a
        text of a length that labels have: the confidence is the text's probability given that, since
        a label never has another length (1 where no path of T columns can)."""
        mass = ctc_paths.length_mass(logp, self.blank, self.min_length, self.length)
        return mass.where(mass > 0, mass.new_ones(()))

    def spelled(self, logp, texts: list[str]):
        """(N,) the probability of each of `texts` under a CTC head's (N, T, num_classes)
        log-probabilities, summed over every path of T columns that collapses to it (the CTC forward pass)."""
        import torch  # here, not above: captcha_gen.py and captcha_dataset.py use the codec without torch
        import torch.nn.functional as F

        n, columns = logp.shape[:2]
        targets = torch.full((n, max([1, *map(len, texts)])), self.blank, dtype=torch.long)
        for i, text in enumerate(texts):
            targets[i, : len(text)] = torch.tensor([self._index[c] for c in text], dtype=torch.long)
        lengths = torch.tensor([len(text) for text in texts], dtype=torch.long)
        nll = F.ctc_loss(logp.transpose(0, 1), targets, torch.full((n,), columns), lengths, blank=self.blank, reduction="none")
        return (-nll).exp().clamp_(0.0, 1.0)

    def collapse(self, path: list[int]) -> str:
        """A CTC path of class indices -> text: repeats merged, then blanks dropped ('aa-a' -> 'aa')."""
        kept = [c for i, c in enumerate(path) if c != self.blank and (i == 0 or c != path[i - 1])]
        return "".join(self.charset[c] for c in kept)

    def aligned(self, truth: str, guess: str) -> list[int]:
        """`guess`'s class indices laid over `truth`'s positions, for the report: a dropped character
        reads as the pad class where it should stand, a wrong one as itself; extra characters take
        the free positions after the truth's end, as far as `length` allows. (length,) indices."""
        out = [self.pad] * self.length
        extra = []
        for i, j in alignment(truth, guess):
            if i is not None:
                out[i] = self.pad if j is None else self._index.get(guess[j], self.pad)
            else:
                extra.append(self._index.get(guess[j], self.pad))
        free = range(len(truth), self.length)
        for slot, cls in zip(free, extra, strict=False):
            out[slot] = cls
        return out


def alignment(a: str, b: str) -> list[tuple[int | None, int | None]]:
    """A cheapest edit alignment of `a` onto `b`: (i, j) pairs, i None for a character only `b`
    has (inserted), j None for one only `a` has (dropped). Labels are short: plain dynamic programming."""
    n, m = len(a), len(b)
    cost = [[i + j if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + (a[i - 1] != b[j - 1]), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs, i, j = [], n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (a[i - 1] != b[j - 1]):
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    return pairs[::-1]


def edit_distance(a: str, b: str) -> int:
    """Characters dropped, added or changed to turn `a` into `b` (Levenshtein)."""
    return sum(1 for i, j in alignment(a, b) if i is None or j is None or a[i] != b[j])


class RestrictedCodec(LabelCodec):
    """Reads a model's outputs as texts of another, smaller charset (zero-shot reading of a site
    with a general reader): each class of `charset` takes the probability of the model's class for
    the same character (for both of its cases when `ignore_case`), the model's other characters are
    never read, and the probabilities are renormalised over what is left. Only reads: the model's
    own codec still encodes its training targets."""

    def __init__(self, base: LabelCodec, charset: str, ignore_case: bool = False):
        import torch  # here, as in encode_batch: the codec itself loads without torch

        chars = "".join(dict.fromkeys(charset.upper() if ignore_case else charset))
        settings = base.settings.with_(charset=chars, ignore_case=ignore_case)
        super().__init__(settings, ctc=base.ctc, temperature=base.temperature, best_path=base.best_path)
        self.base = base
        self.merge = torch.zeros(base.num_classes, self.num_classes)  # (K_model, K_read): which model classes feed each
        for k, c in enumerate(self.charset):
            for variant in {c, c.lower()} if ignore_case else {c}:
                if variant in base._index:
                    self.merge[base._index[variant], k] = 1.0
        if self.pad is not None and base.pad is not None:
            self.merge[base.pad, self.pad] = 1.0
        self.unknown = "".join(c for k, c in enumerate(self.charset) if not self.merge[:, k].any())

    def probabilities(self, logits, temperature: float | None = None):
        """(N, length or T, K_read): the model's softmax per position or column, merged and renormalised."""
        merged = self.base.probabilities(logits, self.temperature if temperature is None else temperature) @ self.merge
        return merged / merged.sum(-1, keepdim=True).clamp_min(1e-12)

    def texts(self, logits) -> list[str]:
        logp = self.log_probabilities(logits)
        return self.spell(logp.argmax(-1), logp if self.ctc else None)
