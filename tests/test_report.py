"""captcha_test.py's analysis and --report files, --generate and file lists, and training curves."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

import captcha_test
from captcha_setting import Settings
from captchakit import evaluate as evaluation
from captchakit.codec import LabelCodec
from captchakit.report import analysis as captcha_report
from captchakit.report import plots as captcha_plots
from captchakit.train import loop, resume


def analysis_of(codec: LabelCodec, labels: list[str], reads: list[str], confidences: list[float]):
    return captcha_report.analyze(codec, labels, [codec.encode(t) for t in reads], confidences)


def test_confusions_are_counted_position_by_position():
    codec = LabelCodec(Settings(charset="0OAB", length=3))
    a = analysis_of(codec, ["0AB", "0AB", "0BA", "AAA"], ["OAB", "OAA", "OBA", "AAA"], [0.2, 0.9, 0.5, 0.99])
    assert a.confusions() == [("0", "O", 3), ("B", "A", 1)]
    assert a.position_accuracy == [0.25, 1.0, 0.75]
    assert a.character_accuracy() == {"0": (0, 3), "A": (6, 6), "B": (2, 3)}
    assert a.worst_characters(2) == [("0", 0, 3), ("B", 2, 3)]
    assert a.errors == [1, 2, 0]  # misread rows, most confident first; row 3 was read right


def test_a_missing_or_extra_character_is_a_confusion_with_the_pad_class():
    codec = LabelCodec(Settings(charset="AB", length=3, min_length=2))
    a = analysis_of(codec, ["AB", "ABA", "BB"], ["ABA", "AB", "BB"], [0.5, 0.5, 0.5])
    assert a.confusions() == [("A", "(none)", 1), ("(none)", "A", 1)]
    assert a.character_accuracy() == {"A": (2, 3), "B": (4, 4)}  # the pad is not a character
    assert a.errors == [0, 1]


def number(text: str) -> float:
    return float(text.rstrip("%").replace(",", ""))


def parse_printout(out: str) -> dict:
    """The figures captcha_test.py printed, read back independently of captcha_report."""
    summary = re.search(r"^test: ([\d,]+) captchas, ([\d.]+)% exact, ([\d.]+)% of characters", out, re.M)
    misread = re.search(r"^misread: ([\d,]+) of ([\d,]+) captchas$", out, re.M)
    se = re.search(r"^standard error of the accuracy: ([\d.]+)% \(a test of ([\d,]+) captchas\)$", out, re.M)
    positions = re.search(r"^accuracy by position: (.*)$", out, re.M)[1]
    worst = re.search(r"^least well-read characters: (.*)$", out, re.M)[1]
    return {
        "n": int(number(summary[1])),
        "accuracy": number(summary[2]),
        "char_accuracy": number(summary[3]),
        "errors": int(number(misread[1])),
        "standard_error": number(se[1]),
        "positions": [number(p) for p in re.findall(r"\d+: ([\d.]+)%", positions)],
        "confusions": [(t, r, int(n)) for t, r, n in re.findall(r"^  +(\S+) -> (\S+) +(\d+) times?$", out, re.M)],
        "worst": [(c, number(p), int(r), int(t)) for c, p, r, t in re.findall(r"(\S+) ([\d.]+)% \((\d+)/(\d+)\)", worst)],
    }


def test_report_writes_five_files_that_agree_with_the_printout(tiny_model, tiny_data, cli, tmp_path):
    report = tmp_path / "report"
    args = ["--model", tiny_model, "--data", tiny_data / "test", "--report", report, "--json", tmp_path / "m.json"]
    code, out, err = cli(captcha_test.main, *args)
    assert code == 0, err
    printed = parse_printout(out)
    m = json.loads((report / "metrics.json").read_text())
    assert json.loads((tmp_path / "m.json").read_text()) == m
    files = ["confusion.png", "errors.png", "metrics.json", "predictions.csv", "reliability.png"]
    assert sorted(p.name for p in report.iterdir()) == files

    # Every printed figure is in metrics.json, rounded the way it was printed.
    assert printed["n"] == m["n"] == 60
    assert printed["accuracy"] == round(100 * m["accuracy"], 2) and printed["char_accuracy"] == round(100 * m["char_accuracy"], 2)
    assert printed["errors"] == m["errors"] == m["n"] - round(m["accuracy"] * m["n"])
    p = m["accuracy"]  # the binomial standard error, computed here from the printed counts
    assert printed["standard_error"] == round(100 * m["standard_error"], 2) == round(100 * (p * (1 - p) / 60) ** 0.5, 2)
    assert printed["positions"] == [round(100 * p, 1) for p in m["position_accuracy"]]
    assert len(printed["positions"]) == 4
    assert printed["confusions"] == [(c["true"], c["read"], c["count"]) for c in m["confusions"][: captcha_report.TOP_CONFUSIONS]]
    acc = m["character_accuracy"]
    assert [w[0] for w in printed["worst"]] == m["least_well_read"]
    for c, pct, right, total in printed["worst"]:
        assert (right, total) == (acc[c]["right"], acc[c]["total"]) and pct == round(100 * acc[c]["accuracy"], 1)
    # The confusions and the character counts cover every position of every captcha.
    assert sum(c["total"] for c in acc.values()) == 60 * 4
    assert sum(c["count"] for c in m["confusions"]) == sum(c["total"] - c["right"] for c in acc.values())

    with open(report / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and list(rows[0]) == ["file", "truth", "prediction", "confidence", "right"]
    assert all(r["file"].startswith(r["truth"] + "_") for r in rows)
    wrong = [r for r in rows if r["right"] == "0"]
    assert len(wrong) == m["errors"] and all(r["prediction"] != r["truth"] for r in wrong)

    # The gallery shows the most confident mistakes, in that order, as many as it says.
    shown = m["gallery"]["shown"]
    assert shown == min(m["errors"], captcha_report.GALLERY_LIMIT) == len(m["gallery"]["files"])
    conf = {r["file"]: float(r["confidence"]) for r in wrong}
    gallery = [conf[f] for f in m["gallery"]["files"]]
    assert gallery == sorted(gallery, reverse=True)
    assert all(c <= gallery[-1] for f, c in conf.items() if f not in m["gallery"]["files"])
    with Image.open(report / "errors.png") as im:
        grid_rows = math.ceil(shown / captcha_plots.GALLERY_COLUMNS)
        cell = 60 + captcha_plots.BAND + captcha_plots.GAP
        assert abs(im.height - (grid_rows * cell + captcha_plots.GAP) * captcha_plots.SCALE - 70) <= 2
    with Image.open(report / "confusion.png") as im:
        assert im.width > 800 and im.height > 800  # 36 classes, readable cells
    assert f"({shown} shown)" in out


def test_training_writes_one_history_row_and_a_fresh_curve_every_epoch(tiny_model, tmp_path, monkeypatch):
    run = resume.run_files(tiny_model)[0]
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.width == 1100
    calls = []
    monkeypatch.setattr(loop, "write_curves", lambda rows, path: calls.append((len(rows), path.name)))
    history = loop.History(tmp_path)
    history.add(rows[0])
    history.add(rows[1])
    assert calls == [(1, "curves.png"), (2, "curves.png")]


def test_curves_of_a_single_epoch_are_drawn(tmp_path):
    row = {"epoch": "1", "train_loss": "2.1", "val_loss": "1.9", "val_accuracy": "0.25", "val_char_accuracy": "0.6", "elapsed_s": "30"}
    captcha_plots.write_curves([row], tmp_path / "run" / "curves.png")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["curves.png"]


def test_generate_tests_fresh_captchas_and_writes_nothing(tiny_model, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tiny_model.parent.iterdir())
    runs = [cli(captcha_test.main, "--model", tiny_model, "--generate", "9", "--seed", "3") for _ in range(2)]
    for code, out, err in runs:
        assert code == 0, err
        assert out.startswith("test: 9 captchas, ") and re.search(r"^misread: \d+ of 9 captchas$", out, re.M)
    # The same seed draws the same captchas: everything after the (timed) summary line agrees.
    assert runs[0][1].split("\n", 1)[1] == runs[1][1].split("\n", 1)[1]
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in tiny_model.parent.iterdir()) == before


def test_data_takes_one_file_or_a_list_of_files(tiny_model, tiny_data, cli):
    files = sorted((tiny_data / "test").glob("*.png"))[:3]
    code, out, err = cli(captcha_test.main, "--model", tiny_model, "--data", files[0])
    assert code == 0, err
    assert out.startswith("test: 1 captchas, ")
    code, out, _ = cli(captcha_test.main, "--model", tiny_model, "--data", *files)
    assert out.startswith("test: 3 captchas, ") and "misread: " in out


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["--generate", "0"], "captcha_test.py: error: --generate 0: ask for at least 1 captcha"),
        (["--data", "nowhere.png"], "captcha_test.py: error: --data nowhere.png: no such file or folder; "),
    ],
)
def test_bad_test_sets_get_one_line(tiny_model, cli, monkeypatch, args, start):
    monkeypatch.setattr("sys.argv", ["captcha_test.py"])
    code, out, err = cli(captcha_test.main, "--model", tiny_model, *args)
    assert code == 2 and err.startswith(start) and err.count("\n") == 1 and out == ""


def test_an_all_right_test_set_gets_an_empty_gallery(tmp_path):
    codec = LabelCodec(Settings(charset="AB", length=2))
    a = analysis_of(codec, ["AB"], ["AB"], [0.9])
    result = evaluation.EvalResult(1, 1.0, 1.0, 0.1, [1.0, 1.0], [("AB_0.png", "AB", "AB", 0.9)], [[0, 1]])

    class One:
        def batch(self, positions):
            return np.zeros((len(positions), 60, 160), dtype=np.uint8)

    m = captcha_report.write_report(tmp_path, One(), result, a, captcha_report.metrics(result, a))
    assert m["errors"] == 0 and m["gallery"]["shown"] == 0 and m["confusions"] == []
    assert "no confusions: every character was read right" in captcha_report.report_lines(m)
