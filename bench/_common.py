"""Helpers shared by the benchmarks: the repo on sys.path, the benchmark data set, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH_DATA = ROOT / "bench_data"  # 100,000 train + 2,000 test captchas, seed 2026 (not committed)
BENCH_SEED = 2026


def ensure_bench_data(train: int = 100_000, test: int = 2_000, out: Path = BENCH_DATA) -> Path:
    """Generate (or finish, or reuse) the benchmark data set with captcha_gen.py."""
    cmd = [sys.executable, str(ROOT / "captcha_gen.py"), "--out", str(out), "--train", str(train), "--test", str(test)]
    cmd += ["--predict", "0", "--seed", str(BENCH_SEED)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr)  # stdout carries only the JSON lines
    return Path(out)


def emit(record: dict) -> None:
    """Print one JSON line, the form every benchmark reports in."""
    print(json.dumps(record), flush=True)
