"""The benchmarks stay runnable: each runs on tiny data and prints the JSON line it documents.

These check the output's form only; the figures come from full runs (docs/BENCHMARKS.md).
"""

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from captchakit.checkpoint import read_checkpoint


def run_bench(*args, timeout=300):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_train_speed_reports_images_per_second_for_both_models(tiny_data):
    (record,) = run_bench(ROOT / "bench/train_speed.py", "--seconds", "0.5", "--reference", "--data", tiny_data / "train")
    assert record["img_per_s"] > 0 and record["reference_img_per_s"] > 0
    # The speed-up is the ratio of the two printed rates, rounded to one decimal.
    assert abs(record["speedup"] - record["img_per_s"] / record["reference_img_per_s"]) <= 0.05 + 1e-9


def test_gen_speed_reports_one_and_all_workers():
    (record,) = run_bench(ROOT / "bench/gen_speed.py", "--count", "20")
    assert record["workers_1"] > 0 and record["workers_N"] > 0 and record["count"] == 20


def test_time_to_accuracy_reports_every_epoch_and_a_summary(tmp_path):
    out = run_bench(ROOT / "bench/time_to_accuracy.py", "--train", "96", "--test", "16", "--data", tmp_path, "--", "--epochs", "2",
                    "--batch-size", "32", "--from-scratch")  # fmt: skip
    epochs, summary = out[:-1], out[-1]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(0 <= e["accuracy"] <= 1 for e in epochs)
    assert summary["epochs"] == 2 and summary["peak_rss_mb"] > 0 and (tmp_path / "model.pkl").exists()
    # From scratch, a position head (not the general reader's CTC): it reads with three views, the figure captcha_test.py prints.
    saved = read_checkpoint(tmp_path / "model.pkl")
    assert tuple(saved["model_config"]["test_shifts"]) == (-3, 0, 3)
    assert summary["read_with_views"] == pytest.approx(saved["meta"]["val_accuracy"], abs=5e-5)


@pytest.fixture(scope="module")
def steer_report(tiny_model, tmp_path_factory):
    """bench/accuracy.py's JSON line and --report folder for 40 captchas read by the tiny model (read once, by two tests)."""
    report = tmp_path_factory.mktemp("steer") / "report"
    (record,) = run_bench(ROOT / "bench/accuracy.py", "--model", tiny_model, "--count", "40", "--device", "cpu", "--report", report)
    return record, report


def test_accuracy_reports_the_standard_error_and_the_errors_by_kind(steer_report):
    record, report = steer_report
    # --report: captcha_test.py's report of the same captchas, its gallery of the misread ones first.
    assert json.loads((report / "metrics.json").read_text())["errors"] == record["misread_captchas"]
    assert (report / "errors.png").stat().st_size > 0 and len((report / "predictions.csv").read_text().splitlines()) == 41
    p, n = record["accuracy"], record["n"]
    assert n == 40 and record["misread_captchas"] == round(n * (1 - p))
    assert abs(record["standard_error"] - (p * (1 - p) / n) ** 0.5) < 1e-5
    # A near-untrained model misreads characters, and every misread character is counted once.
    wrong = round(n * 4 * (1 - record["char_accuracy"]))
    assert record["pair_char_errors"] + record["other_char_errors"] == wrong > 0


def test_few_labels_reports_each_variant_and_counts_wrong_pseudo_labels(tmp_path):
    from owndata_data import draw

    draw(tmp_path / "style", 80, seed=9)  # labels in the names: the bench hides them from the pool
    args = ["--data", tmp_path / "style", "--labels", "40", "--unlabelled", "--scratch", "--zero-shot", "--out", tmp_path / "work"]
    zero, *rows = run_bench(ROOT / "bench/few_labels.py", *args, "--train-args", "--epochs 1 --batch-size 8 --pseudo-threshold 0")
    assert zero["variant"] == "zero-shot" and zero["labels"] == 0 and zero["n_test"] == 8 and 0 <= zero["accuracy"] <= 1
    assert [r["variant"] for r in rows] == ["labelled-only", "scratch", "unlabelled"]
    assert all(r["n_test"] == 8 and r["labels"] == 40 and 0 <= r["accuracy"] <= 1 for r in rows)
    pool = rows[2]["pool"]
    assert pool == 80 - 8 - 40 and 0 <= rows[2]["wrong"] <= rows[2]["kept"] <= pool
    names = [p.name for p in (tmp_path / "work" / "style" / "labels40" / "pool").iterdir() if p.suffix == ".png"]
    assert len(names) == pool and all(re.fullmatch(r"u\d{5}\.png", n) for n in names)  # neutral names: no label to read
    # bench/calibration.py refits the labelled-only model on its validation share as training did at its
    # end: the same calibration error on the same test tenth.
    pair = f"{tmp_path / 'work' / 'style' / 'labels40' / 'labelled-only.pkl'}:{tmp_path / 'work' / 'style' / 'test'}"
    row, pooled = run_bench(ROOT / "bench/calibration.py", pair, "--pool")
    assert row["n"] == pooled["n"] == 8 and row["accuracy"] == pooled["accuracy"] == rows[0]["accuracy"]
    assert row["now"]["ece"] == pytest.approx(rows[0]["ece"], abs=1e-4) == pooled["ece"]
    assert 0 <= row["perfect_mean"] <= 1 and 0 <= row["perfect_p90"] <= 1 and {"path_plain", "path_views"} <= row.keys()


def test_ambiguity_draws_the_misread_captchas_blind_and_scores_a_persons_readings(steer_report, tmp_path):
    (_, report), blind = steer_report, tmp_path / "blind"
    lines = (report / "predictions.csv").read_text().splitlines()[1:]
    wrong = [line.split(",") for line in lines if line.endswith(",0")]
    (sheets,) = run_bench(ROOT / "bench/ambiguity.py", "sheets", "--report", report, "--out", blind)
    assert sheets["misread"] == len(wrong) > 0 and len(sheets["sheets"]) == -(-len(wrong) // 12)
    # The sheets hold no label: the template asks for every reading.
    assert (blind / "readings.csv").read_text().splitlines() == ["number,reading,unsure", *[f"{n},," for n in range(1, len(wrong) + 1)]]
    # A person who reads every one as the model did, but the first right and sure of it.
    rows = [[n, truth if n == 1 else guess, ""] for n, (_, truth, guess, _, _) in enumerate(wrong, 1)]
    (blind / "readings.csv").write_text("number,reading,unsure\n" + "".join(f"{n},{r},{u}\n" for n, r, u in rows))
    (score,) = run_bench(ROOT / "bench/ambiguity.py", "score", "--report", report, "--readings", blind / "readings.csv")
    assert (score["person_right_sure"], score["person_as_model"], score["ambiguous"]) == (1, len(wrong) - 1, len(wrong) - 1)
    # Drawing the sheets again would wipe those readings: refused, and they stay.
    kept = (blind / "readings.csv").read_text()
    assert "holds a reader's readings" in refused("sheets", "--report", report, "--out", blind)
    assert (blind / "readings.csv").read_text() == kept
    # A row left empty is a user's mistake: one line, exit 2.
    (blind / "readings.csv").write_text("number,reading,unsure\n1,,\n")
    assert "no reading for #1" in refused("score", "--report", report, "--readings", blind / "readings.csv")


def refused(*args) -> str:
    """bench/ambiguity.py's stderr for a user's mistake: exit status 2 and one line, no traceback."""
    proc = subprocess.run([sys.executable, "bench/ambiguity.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr
