"""Which misread captchas a person can read: blind sheets of a model's errors, then a score of one's readings.

    python bench/ambiguity.py sheets --report DIR [--count 10000] [--out SHEETS]
    python bench/ambiguity.py score --report DIR --readings SHEETS/readings.csv

`sheets` draws again the misread captchas of `bench/accuracy.py --report DIR` (the same seeded
10,000, in the default style, at twice their size) onto numbered sheets, without their labels or
the model's reading, and writes readings.csv with empty `reading` and `unsure` columns. A person
fills them in, looking only at the sheets: their best reading, and the positions (1-based,
space-separated) of characters they could not really decide. `score` then counts, among the
model's errors: read right and sure (the model's own failures), read right but unsure, read as
the model read them, and read otherwise. All but the first are ambiguous to the eye: the limit
this style sets on whole-captcha accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from _common import emit
from accuracy import STEER_SEED, STEER_SPLIT

from captchakit.checkpoint import load_checkpoint
from captchakit.data.synth import CaptchaFactory
from captchakit.errors import UserError, run_cli

PER_SHEET, COLUMNS, ZOOM = 12, 3, 2


def misread(report: Path) -> list[dict]:
    """The rows of DIR/predictions.csv whose reading is wrong, in the captchas' order."""
    path = report / "predictions.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found; write it with python bench/accuracy.py --report {report}")
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row["right"] == "0"]


def redraw(report: Path, rows: list[dict]) -> list:
    """The captchas named in `rows` (generated_NNNNNN) drawn again in the reported model's style, as PIL images."""
    model, _ = load_checkpoint(json.loads((report / "metrics.json").read_text())["model"], "cpu")
    factory = CaptchaFactory(model.codec.settings)
    images = []
    for row in rows:
        label, image = factory.make_seeded(STEER_SEED, STEER_SPLIT, int(row["file"].rsplit("_", 1)[1]))
        if model.codec.normalize(label) != row["truth"]:
            raise UserError(f"{report}: its captchas are not bench/accuracy.py's; write the report again with it")
        images.append(image)
    return images


def draw_sheets(images: list, out: Path) -> list[Path]:
    """Numbered sheets of the images, PER_SHEET to a sheet, each ZOOM times its size."""
    from PIL import Image, ImageDraw

    sheets = []
    if not images:
        return sheets
    w, h = images[0].width * ZOOM, images[0].height * ZOOM
    for start in range(0, len(images), PER_SHEET):
        batch = images[start : start + PER_SHEET]
        rows_n = -(-len(batch) // COLUMNS)
        sheet = Image.new("RGB", (COLUMNS * (w + 10), rows_n * (h + 30)), "white")
        pen = ImageDraw.Draw(sheet)
        for k, image in enumerate(batch):
            x, y = (k % COLUMNS) * (w + 10), (k // COLUMNS) * (h + 30)
            pen.text((x + 4, y + 4), f"#{start + k + 1}", fill="black")
            sheet.paste(image.convert("RGB").resize((w, h)), (x, y + 24))
        sheets.append(out / f"sheet_{start // PER_SHEET + 1:02d}.png")
        sheet.save(sheets[-1])
    return sheets


def filled(readings: Path) -> bool:
    """Whether a readings.csv holds any reading (a reader's work, which sheets must not overwrite)."""
    if not readings.is_file():
        return False
    with readings.open(newline="") as f:
        return any((r.get("reading") or "").strip() for r in csv.DictReader(f))


def score(rows: list[dict], readings: Path) -> dict:
    """Counts of the person's readings against the truth and the model's reading."""
    if not readings.is_file():
        raise UserError(f"{readings}: not found; write it with python bench/ambiguity.py sheets, then fill it in")
    with readings.open(newline="") as f:
        person = {r["number"]: (r["reading"].strip().upper(), (r.get("unsure") or "").strip()) for r in csv.DictReader(f)}
    counts = dict.fromkeys(["right_sure", "right_unsure", "as_model", "other"], 0)
    for number, row in enumerate(rows, 1):
        said, unsure = person.get(str(number), ("", ""))
        if not said:
            raise UserError(f"{readings}: no reading for #{number}; fill in every row (your best guess, its doubts in `unsure`)")
        if said == row["truth"]:
            counts["right_unsure" if unsure else "right_sure"] += 1
        else:
            counts["as_model" if said == row["prediction"] else "other"] += 1
    return {"misread": len(rows), **{f"person_{k}": v for k, v in counts.items()}, "ambiguous": len(rows) - counts["right_sure"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Blind sheets of a model's misread captchas, and the score of a person's readings of them.")
    p.add_argument("step", choices=["sheets", "score"], help="sheets: draw the sheets and readings.csv; score: count the readings")
    p.add_argument("--report", type=Path, required=True, help="folder written by bench/accuracy.py --report")
    p.add_argument("--out", type=Path, help="folder for the sheets and readings.csv (default: REPORT/blind)")
    p.add_argument("--readings", type=Path, help="with score: the filled-in readings.csv")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = misread(args.report)
    if args.step == "score":
        if args.readings is None:
            raise UserError("score needs --readings FILE: the readings.csv that sheets wrote, filled in")
        emit({"report": str(args.report), **score(rows, args.readings)})
        return
    out = args.out or args.report / "blind"
    if filled(out / "readings.csv"):
        raise UserError(f"{out / 'readings.csv'}: it holds a reader's readings; score them, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    sheets = draw_sheets(redraw(args.report, rows), out)
    with (out / "readings.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["number", "reading", "unsure"], *[[n, "", ""] for n in range(1, len(rows) + 1)]])
    emit({"report": str(args.report), "misread": len(rows), "sheets": [str(s) for s in sheets]})


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
