"""Images/s of captcha_gen.py with 1 worker and with all cores.

    python bench/gen_speed.py [--count 3000]

Prints one JSON line: {"workers_1": ..., "workers_N": ..., "workers": N, "speedup": ...}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

from _common import emit

import captcha_gen


def rate(count: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON line
            captcha_gen.main(
                ["--train", str(count), "--test", "0", "--predict", "0", "--out", out, "--workers", str(workers), "--seed", "1"]
            )
        return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=3000, help="images per measurement (default: %(default)s)")
    args = p.parse_args()
    n = os.cpu_count() or 1
    one, many = rate(args.count, 1), rate(args.count, n)
    emit({"workers_1": round(one, 1), "workers_N": round(many, 1), "workers": n, "speedup": round(many / one, 2), "count": args.count})


if __name__ == "__main__":
    main()
