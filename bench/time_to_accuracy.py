"""Time to accuracy of the default training command on 100,000 generated captchas.

    python bench/time_to_accuracy.py [--train N --test N --data DIR] [-- extra captcha_train.py flags]

Generates (or reuses) bench_data/: 100,000 training and 2,000 test captchas, seed 2026.
Then runs `python captcha_train.py --train-dir bench_data/train --val-dir bench_data/test`
with the defaults and prints one JSON line per epoch (elapsed wall time since the command
started, whole-captcha test accuracy, each image read once), then a summary line with the
accuracy reached by 10, 20 and 30 minutes, the saved model's accuracy read with its views
(`read_with_views`; None when it reads once), the total wall time and the training process's
peak memory.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DATA, ROOT, emit, ensure_bench_data

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) .*val: [\d,]+ captchas, ([\d.]+)% exact, ([\d.]+)% of characters")
# The saved model read as it will be read (captcha_train.py --test-shifts): after the last epoch.
VIEWS_LINE = re.compile(r"^read with views .*val: [\d,]+ captchas, ([\d.]+)% exact")


def accuracy_by(epochs: list[dict], minutes: float) -> float | None:
    """Best accuracy among the epochs finished within `minutes` (what a user stopping then would have)."""
    done = [e["accuracy"] for e in epochs if e["elapsed_s"] <= minutes * 60]
    return max(done) if done else None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=100_000, help="training captchas (default: %(default)s)")
    p.add_argument("--test", type=int, default=2_000, help="test captchas (default: %(default)s)")
    p.add_argument("--data", type=Path, default=BENCH_DATA, help="folder for the data set and model (default: bench_data/)")
    p.add_argument("extra", nargs="*", help="flags passed on to captcha_train.py, after --")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    data = ensure_bench_data(args.train, args.test, args.data)
    model = data / "model.pkl"
    cmd = [sys.executable, "-u", str(ROOT / "captcha_train.py"), "--train-dir", str(data / "train")]
    cmd += ["--val-dir", str(data / "test"), "--model", str(model), *args.extra]
    start, epochs, read = time.perf_counter(), [], None
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
            match = EPOCH_LINE.match(line)
            if match:
                record = {"epoch": int(match[1]), "elapsed_s": round(time.perf_counter() - start, 1)}
                record.update(accuracy=float(match[3]) / 100, char_accuracy=float(match[4]) / 100)
                epochs.append(record)
                emit(record)
            views = VIEWS_LINE.match(line)
            read = float(views[1]) / 100 if views else read
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"training failed with exit status {proc.returncode}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    emit(
        {
            "final_accuracy": max(e["accuracy"] for e in epochs),
            "read_with_views": read,
            "minutes": round(total / 60, 2),
            "acc_at_10_min": accuracy_by(epochs, 10),
            "acc_at_20_min": accuracy_by(epochs, 20),
            "acc_at_30_min": accuracy_by(epochs, 30),
            "epochs": len(epochs),
            "peak_rss_mb": round(peak_mb),
            "command": " ".join(["python", "captcha_train.py", *cmd[3:]]).replace(str(ROOT) + "/", ""),
        }
    )


if __name__ == "__main__":
    main()
