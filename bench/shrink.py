"""Shrink a folder of labelled images by hand, as a user would before training: the baseline for
the working-size comparison (docs/BENCHMARKS.md, "Working resolution").

    python bench/shrink.py --src bench_data/c640/train --out bench_data/c640/train_160x60 --width 160 --height 60

Every image is resized to exactly WIDTH x HEIGHT with Pillow's Lanczos filter (the aspect ratio
is not kept, as a plain resize does) and saved under the same name, so label files and seeded
shares pick the same images. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import emit
from PIL import Image

from captchakit.settings import IMAGE_EXTENSIONS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", required=True, help="folder of images to shrink")
    p.add_argument("--out", required=True, help="folder the shrunk copies are written to (created)")
    p.add_argument("--width", type=int, default=160, help="width of the copies (default: %(default)s)")
    p.add_argument("--height", type=int, default=60, help="height of the copies (default: %(default)s)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, count = time.perf_counter(), 0
    for path in sorted(Path(args.src).iterdir()):
        if path.name.lower().endswith(IMAGE_EXTENSIONS):
            with Image.open(path) as im:
                im.convert("RGB").resize((args.width, args.height), Image.Resampling.LANCZOS).save(out / path.name)
            count += 1
    seconds = round(time.perf_counter() - start, 1)
    emit({"src": args.src, "out": str(out), "count": count, "size": f"{args.width}x{args.height}", "seconds": seconds})


if __name__ == "__main__":
    main()
