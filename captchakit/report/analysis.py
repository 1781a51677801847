"""What a model gets wrong: per-position and per-character accuracy, confusions, report files.

    python captcha_test.py --report reports/          # errors.png, confusion.png, reliability.png, metrics.json, predictions.csv

`analyze()` compares, position by position, the class indices the codec gives the true
labels with the classes the model picked (the "no character" class of variable-length
labels included), so confusions such as `0 -> O` or `7 -> (none)` are counted exactly as
evaluate() scores them. A CTC model's text is first laid over the truth by edit distance, so
a dropped character reads `7 -> (none)` where it should stand. The printed lines and
metrics.json come from the same Analysis, so they cannot disagree. Pictures are drawn by
captchakit.report.plots (matplotlib, imported lazily).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captchakit.codec import LabelCodec
from captchakit.files import atomic_path
from captchakit.report import plots
from captchakit.report.reliability import confidence_lines, confidence_metrics, reliability_figure

NONE_NAME = "(none)"  # how the codec's "no character" class is written
TOP_CONFUSIONS = 10  # confusions printed (metrics.json keeps them all)
WORST_CHARACTERS = 5  # least well-read characters printed
GALLERY_LIMIT = 48  # misread captchas drawn in errors.png, most confident first


@dataclass
class Analysis:
    """Where a model fails on one test set; built by analyze()."""

    codec: LabelCodec
    truth: np.ndarray  # (N, length) class indices of the labels
    guess: np.ndarray  # (N, length) class indices the model picked
    matrix: np.ndarray  # (K, K) counts over all positions: rows true class, columns read class
    position_accuracy: list[float]  # (length,) share of captchas right at each position
    errors: list[int]  # rows misread (any position wrong), most confident first

    def class_name(self, index: int) -> str:
        return NONE_NAME if index == self.codec.pad else self.codec.charset[index]

    def confusions(self) -> list[tuple[str, str, int]]:
        """(true, read, times) for every off-diagonal pair seen, most frequent first."""
        t, g = np.nonzero(self.matrix * (1 - np.eye(len(self.matrix), dtype=self.matrix.dtype)))
        pairs = [(int(self.matrix[i, j]), i, j) for i, j in zip(t.tolist(), g.tolist(), strict=True)]
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        return [(self.class_name(i), self.class_name(j), n) for n, i, j in pairs]

    def character_accuracy(self) -> dict[str, tuple[int, int]]:
        """char -> (times read right, times it occurs) for every character of the labels."""
        out = {}
        for i, c in enumerate(self.codec.charset):
            total = int(self.matrix[i].sum())
            if total:
                out[c] = (int(self.matrix[i, i]), total)
        return out

    def worst_characters(self, limit: int = WORST_CHARACTERS) -> list[tuple[str, int, int]]:
        """(char, right, total), lowest accuracy first (more occurrences first on ties)."""
        rows = [(c, r, t) for c, (r, t) in self.character_accuracy().items()]
        rows.sort(key=lambda x: (x[1] / x[2], -x[2], x[0]))
        return rows[:limit]


def confusion_matrix(truth: np.ndarray, guess: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, L) true and read class indices -> (K, K) counts, rows true, columns read."""
    flat = truth.reshape(-1).astype(np.int64) * num_classes + guess.reshape(-1)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def analyze(codec: LabelCodec, labels: list[str], guesses, confidences: list[float], texts: list[str] | None = None) -> Analysis:
    """`labels`: the true texts; `guesses`: (N, length) class indices the model picked (pad included).

    `texts`, the texts read, also mark a row wrong: a CTC model's guesses are its text laid over
    the truth (LabelCodec.aligned), which cannot show every extra character."""
    truth = np.asarray([codec.encode(t) for t in labels], dtype=np.int64).reshape(-1, codec.length)
    guess = np.asarray(guesses, dtype=np.int64).reshape(-1, codec.length)
    right = truth == guess  # (N, length)
    misread = np.asarray([a != b for a, b in zip(labels, texts, strict=True)] if texts is not None else [False] * len(truth), dtype=bool)
    wrong_rows = np.flatnonzero(~right.all(1) | misread)
    # Most confident mistakes first: those are the ones a threshold on confidence cannot catch.
    errors = sorted(wrong_rows.tolist(), key=lambda i: (-confidences[i], i))
    return Analysis(
        codec=codec,
        truth=truth,
        guess=guess,
        matrix=confusion_matrix(truth, guess, codec.num_classes),
        position_accuracy=right.mean(0).tolist() if len(truth) else [0.0] * codec.length,
        errors=errors,
    )


def analyze_result(codec: LabelCodec, result) -> Analysis:
    """Analysis of an EvalResult made with keep_predictions=True."""
    labels = [p[1] for p in result.predictions]
    return analyze(codec, labels, result.guesses, [p[3] for p in result.predictions], [p[2] for p in result.predictions])


def metrics(result, analysis: Analysis, source: str = "", model: str = "", calibrated: bool = False) -> dict:
    """Every figure captcha_test.py prints, at full precision, plus the full lists behind them."""
    wrong = set(analysis.errors)
    right = [i not in wrong for i in range(result.n)]
    confidence = confidence_metrics([p[3] for p in result.predictions], right, calibrated) if result.predictions else None
    return {
        "model": str(model),
        "data": source,
        "n": result.n,
        "accuracy": result.accuracy,
        "standard_error": result.standard_error,
        "char_accuracy": result.char_accuracy,
        "loss": result.loss,
        "errors": len(analysis.errors),
        "position_accuracy": analysis.position_accuracy,
        "confusions": [{"true": t, "read": r, "count": n} for t, r, n in analysis.confusions()],
        "character_accuracy": {c: {"right": r, "total": t, "accuracy": r / t} for c, (r, t) in analysis.character_accuracy().items()},
        "least_well_read": [c for c, _, _ in analysis.worst_characters()],
        "confidence": confidence,
    }


def report_lines(m: dict) -> list[str]:
    """The lines printed after the summary, from metrics() so that the JSON agrees with them."""
    positions = "  ".join(f"{i + 1}: {a:.1%}" for i, a in enumerate(m["position_accuracy"]))
    se = f"standard error of the accuracy: {m['standard_error']:.2%} (a test of {m['n']:,} captchas)"
    lines = [f"misread: {m['errors']:,} of {m['n']:,} captchas", se, f"accuracy by position: {positions}"]
    confusions = m["confusions"][:TOP_CONFUSIONS]
    if confusions:
        lines.append(f"most frequent confusions (true -> read), {len(confusions)} of {len(m['confusions'])}:")
        tw, rw = (max(len(c[k]) for c in confusions) for k in ("true", "read"))
        cw = len(str(confusions[0]["count"]))
        lines += [f"  {c['true']:>{tw}} -> {c['read']:<{rw}}  {c['count']:>{cw}} time{'s' * (c['count'] != 1)}" for c in confusions]
    else:
        lines.append("no confusions: every character was read right")
    acc = m["character_accuracy"]
    worst = [f"{c} {acc[c]['accuracy']:.1%} ({acc[c]['right']}/{acc[c]['total']})" for c in m["least_well_read"]]
    if worst:
        lines.append("least well-read characters: " + ", ".join(worst))
    if m.get("confidence"):
        lines += confidence_lines(m["confidence"], m["n"])
    return lines


def write_json(path, m: dict) -> None:
    with atomic_path(path, ".json") as tmp:
        Path(tmp).write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_predictions(path, result, analysis: Analysis) -> None:
    """One row per captcha: file, truth, prediction, confidence, right (1/0 as evaluate() scores it)."""
    wrong = set(analysis.errors)
    with atomic_path(path, ".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "truth", "prediction", "confidence", "right"])
        for i, (name, truth, text, conf) in enumerate(result.predictions):
            writer.writerow([name, truth, text, f"{conf:.6g}", 0 if i in wrong else 1])


def write_report(folder, data, result, analysis: Analysis, m: dict) -> dict:
    """errors.png, confusion.png, metrics.json and predictions.csv in `folder`; returns the metrics written."""
    folder = Path(folder)
    shown = analysis.errors[:GALLERY_LIMIT]
    plots.error_gallery(folder / "errors.png", data.batch(np.asarray(shown, dtype=np.int64)), analysis, shown, result)
    plots.confusion_figure(folder / "confusion.png", analysis)
    if m.get("confidence"):
        reliability_figure(folder / "reliability.png", m["confidence"], m["n"])
    m = {**m, "gallery": {"shown": len(shown), "files": [result.predictions[i][0] for i in shown]}}
    write_predictions(folder / "predictions.csv", result, analysis)
    write_json(folder / "metrics.json", m)
    return m


def add_report_args(parser) -> None:
    """captcha_test.py's flags for the report and for test sets other than a folder."""
    g = parser.add_argument_group("report and test set")
    g.add_argument("--report", default=None, metavar="DIR", help="write errors.png, confusion.png, metrics.json and predictions.csv here")
    g.add_argument(
        "--generate",
        type=int,
        default=None,
        metavar="N",
        help="test on N freshly drawn captchas in the model's settings instead of --data; writes nothing",
    )
    g.add_argument("--seed", type=int, default=None, help="with --generate: draw the same captchas every time (default: random)")


def source_name(args) -> str:
    if args.generate is not None:
        return f"{args.generate} generated captchas" + (f", seed {args.seed}" if args.seed is not None else "")
    return " ".join(map(str, args.data))


def after_test(args, data, result, codec: LabelCodec, calibrated: bool = False) -> dict:
    """Print the analysis lines after the summary, then write --json and --report if asked."""
    analysis = analyze_result(codec, result)
    m = metrics(result, analysis, source_name(args), args.model, calibrated)
    for line in report_lines(m):
        print(line)
    if args.report:
        m = write_report(args.report, data, result, analysis, m)
        files = "confusion.png, reliability.png, metrics.json, predictions.csv"
        print(f"report: errors.png ({m['gallery']['shown']} shown), {files} in {args.report}")
    if args.json:
        write_json(args.json, m)
    return m
