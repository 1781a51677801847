"""The few-labels curve: accuracy from 100, 300 or 1,000 labels of a real captcha style.

    python bench/few_labels.py --data ../shared/datasets/lzu_digits5 --labels 100 300 1000
    python bench/few_labels.py --data ../shared/datasets/captcha_images_v2 --labels 100 --unlabelled

For each data set a seeded tenth of its images is the test set; from the rest, the first N of a
seeded order are the labelled images (so 100 of them are among the 300), and the others are the
unlabelled pool. The data set is read in place: the run's folders under --out hold symbolic
links only; the unlabelled pool's links get neutral names (u00000.png ...), so nothing in the
toolkit can read their labels. Each row trains with the default own-data command
(`captcha_train.py --train-dir LABELLED --test-split 0`: the bench keeps its own test set), with
`--unlabelled POOL` in the rows that use it, then tests on the test set. Prints one JSON line per
row: labels, variant, whole-captcha accuracy with its test size and standard error, the calibration
error on the test set (ece), training wall time, and for --unlabelled how many kept pseudo-labels
were wrong. --zero-shot adds a row with no labels at all: the shipped general reader told only the
data set's charset (the characters of its labels), reading case-blind when the labels have one case
only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

from _common import emit

ROOT = Path(__file__).resolve().parents[1]
TEST_SHARE = 0.1


def images_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def split(names: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(test tenth, the rest in a seeded order)."""
    order = names[:]
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * TEST_SHARE)
    return sorted(order[:n_test]), order[n_test:]


def link_folder(folder: Path, source: Path, names: list[str], rename: bool = False) -> dict[str, str]:
    """`folder` with a symbolic link per image; renamed u00000.png ... when asked. Returns link name -> source name."""
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for i, name in enumerate(names):
        link = f"u{i:05d}{Path(name).suffix}" if rename else name
        target = folder / link
        if not target.is_symlink():
            target.symlink_to((source / name).resolve())
        links[link] = name
    return links


def train_and_test(work: Path, variant: str, labelled: Path, test: Path, pool: Path | None, extra: list[str]) -> dict:
    model = work / f"{variant}.pkl"
    cmd = [sys.executable, str(ROOT / "captcha_train.py"), "--train-dir", str(labelled), "--test-split", "0", "--model", str(model)]
    cmd += (["--unlabelled", str(pool)] if pool else []) + extra
    start = time.perf_counter()
    with open(work / f"{variant}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - start
    report = work / f"{variant}.json"
    test_cmd = [sys.executable, str(ROOT / "captcha_test.py"), "--model", str(model), "--data", str(test), "--json", str(report)]
    subprocess.run(test_cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    m = json.loads(report.read_text())
    return {
        "n_test": m["n"],
        "accuracy": round(m["accuracy"], 4),
        "standard_error": round(m["standard_error"], 4),
        "ece": round(m["confidence"]["ece"], 4),  # expected calibration error on the test tenth
        "train_s": round(seconds, 1),
    }


def pseudo_errors(work: Path, variant: str, links: dict[str, str]) -> dict:
    """How many readings the last round kept, and how many of them differ from the hidden labels."""
    path = work / f"{variant}_run" / "pseudo_labels.csv"
    if not path.exists():
        return {"kept": 0, "wrong": 0}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wrong = sum(Path(links[r["file"]]).stem.upper() != r["reading"].upper() for r in rows)
    return {"kept": len(rows), "wrong": wrong}


def zero_shot(source: Path, test: list[str]) -> dict:
    """The general reader on the test tenth, restricted to the labels' characters (no training)."""
    from captchakit.api import load_model
    from captchakit.shipped import GENERAL_MODEL

    labels = [Path(n).stem.split("_")[0] for n in test]
    chars = sorted(set("".join(labels)))
    one_case = not any(c.isupper() for c in chars) or not any(c.islower() for c in chars)
    recognizer = load_model(GENERAL_MODEL, "cpu")
    recognizer.restrict("".join(chars), ignore_case=one_case)
    start = time.perf_counter()
    readings = recognizer.predict_batch([source / n for n in test])
    right = sum(r.text == recognizer.codec.normalize(t) for r, t in zip(readings, labels, strict=True))
    acc = right / len(test)
    se = math.sqrt(acc * (1 - acc) / len(test))
    return {"n_test": len(test), "accuracy": round(acc, 4), "standard_error": round(se, 4), "read_s": round(time.perf_counter() - start, 1)}


def variants_of(args) -> list[str]:
    """labelled-only: the default command (fine-tuned from the general reader when the package ships one);
    scratch: the same with --from-scratch (with --scratch); unlabelled: the default command with --unlabelled."""
    out = [] if args.only_unlabelled else ["labelled-only"] + (["scratch"] if args.scratch else [])
    return out + (["unlabelled"] if args.unlabelled or args.only_unlabelled else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a labelled folder (labels in the file names), read in place")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 300, 1000], help="labelled images per row (default: 100 300 1000)")
    p.add_argument("--unlabelled", action="store_true", help="also run each row with the rest as --unlabelled images")
    p.add_argument("--only-unlabelled", action="store_true", help="run only the --unlabelled rows")
    p.add_argument("--zero-shot", action="store_true", help="also read the test tenth with the general reader, no labels")
    p.add_argument("--scratch", action="store_true", help="also run each row with --from-scratch (no general reader)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test tenth and of the labelled order (default: %(default)s)")
    p.add_argument("--out", default="bench_data/few_labels", help="work folder: links, models, logs (default: %(default)s)")
    p.add_argument("--train-args", default="", help="extra captcha_train.py flags, e.g. '--epochs 50'")
    args = p.parse_args()
    source = Path(args.data)
    test_names, rest = split(images_of(source), args.seed)
    base = Path(args.out) / source.name
    test = base / "test"
    link_folder(test, source, test_names)
    if args.zero_shot:
        emit({"data": source.name, "labels": 0, "variant": "zero-shot", "charset_only": True, **zero_shot(source, test_names)})
    for n in args.labels:
        work = base / f"labels{n}"
        labelled = work / "labelled"
        link_folder(labelled, source, rest[:n])
        pool = work / "pool"
        links = link_folder(pool, source, rest[n:], rename=True)
        for variant in variants_of(args):
            row = {"data": source.name, "labels": n, "variant": variant, "pool": len(links) if variant == "unlabelled" else 0}
            extra = args.train_args.split() + (["--from-scratch"] if variant == "scratch" else [])
            row.update(train_and_test(work, variant, labelled, test, pool if variant == "unlabelled" else None, extra))
            if variant == "unlabelled":
                row.update(pseudo_errors(work, variant, links))
            emit(row)


if __name__ == "__main__":
    main()
