"""Own-data benchmark: train on the 1,040 real captchas of captcha_images_v2, test on its test share.

    flock /tmp/bench.lock nice -n 0 python bench/own_data.py

Runs the documented default command for a user's own folder, which holds two seeded shares out
(a validation share that chooses the epoch and stops the run, and a test share nothing in
training touches):

    python captcha_train.py --train-dir DATA --split-seed S --model M
    python captcha_test.py --model M --data DATA          # tests only the test share

and prints one JSON line: whole-captcha accuracy on the test share (the saved model, and the
last epoch's, which no choice of epoch can flatter), the epochs run, minutes of training, the
command.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit

DATA = ROOT.parent / "shared" / "datasets" / "captcha_images_v2"


def run(cmd: list[str]) -> str:
    """Run a script, its progress on stderr; return its stdout."""
    done = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    sys.stderr.write(done.stdout)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done.stdout


def test(model: Path, data: str, report: Path) -> dict:
    """captcha_test.py's figures for `model` on the test share of `data`."""
    run(["captcha_test.py", "--model", str(model), "--data", data, "--json", str(report)])
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="labelled folder (default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out shares (default: %(default)s)")
    p.add_argument("--out", default=None, help="keep model and history here (default: a temporary folder)")
    p.add_argument("train_args", nargs="*", help="extra captcha_train.py flags, after --")
    args = p.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="own_data_"))
    model = out / "model.pkl"
    train = ["captcha_train.py", "--train-dir", args.data, "--split-seed", str(args.split_seed)]
    train += ["--model", str(model), *args.train_args]
    start = time.perf_counter()
    run(train)
    wall = time.perf_counter() - start
    result = test(model, args.data, out / "test.json")
    last = test(out / "model_run" / "last.pkl", args.data, out / "last.json")
    with open(out / "model_run" / "history.csv") as f:
        history = list(csv.DictReader(f))
    emit(
        {
            "bench": "own_data",
            "data": Path(args.data).name,
            "test_images": result["n"],
            "accuracy": result["accuracy"],
            "char_accuracy": result["char_accuracy"],
            "last_epoch_accuracy": last["accuracy"],
            "val_accuracy": max(float(row["val_accuracy"]) for row in history),
            "epochs": len(history),
            "train_minutes": round(float(history[-1]["elapsed_s"]) / 60, 2),
            "wall_minutes": round(wall / 60, 2),
            "command": "python " + " ".join(train[:3] + [f"--split-seed {args.split_seed}"] + args.train_args),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
