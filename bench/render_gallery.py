"""A grid of seeded samples of the varied renderer (captchakit/data/render.py), and how fast it draws them.

    python bench/render_gallery.py [--count 48] [--seed 1] [--out bench_data/render_gallery.png]

Each cell holds one image at its own size (scaled down only if wider than the cell), its label and
its style underneath. Prints one JSON line: {"count": ..., "seconds": ..., "images_per_s": ..., "out": ...};
the seconds cover rendering alone, not the grid.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import ROOT, emit
from PIL import Image, ImageDraw

from captchakit.data.render import RenderSpec, render, style_of
from captchakit.files import atomic_path

CELL = (340, 110)  # room for the widest images (8 characters at 80 px high are scaled down) and two lines of text
COLUMNS = 4


def caption(style) -> str:
    if style.source == "captcha":
        parts = ["captcha library"]
    else:
        parts = [style.font, style.background, style.text, style.colours, *([f"warp {style.warp}"] if style.warp != "none" else [])]
        parts += list(style.noise)
    return ", ".join(parts + [name for name in ("blur", "jpeg", "grey") if getattr(style, name)])


def gallery(samples: list, captions: list[str]) -> Image.Image:
    rows = -(-len(samples) // COLUMNS)
    sheet = Image.new("RGB", (CELL[0] * COLUMNS, CELL[1] * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, ((label, image), text) in enumerate(zip(samples, captions, strict=True)):
        x, y = CELL[0] * (i % COLUMNS) + 4, CELL[1] * (i // COLUMNS) + 4
        if image.width > CELL[0] - 8:
            image = image.resize((CELL[0] - 8, max(1, round(image.height * (CELL[0] - 8) / image.width))), Image.Resampling.BICUBIC)
        sheet.paste(image.convert("RGB"), (x, y))
        draw.text((x, y + 82), label, fill="black")
        draw.text((x, y + 94), text[:56], fill=(90, 90, 90))
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=48, help="samples in the grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the samples (default: %(default)s)")
    p.add_argument("--out", default=str(ROOT / "bench_data" / "render_gallery.png"), help="PNG to write (default: %(default)s)")
    args = p.parse_args()
    spec = RenderSpec()
    start = time.perf_counter()
    samples = [render(spec, args.seed, "gallery", i) for i in range(args.count)]
    seconds = time.perf_counter() - start
    captions = [caption(style_of(spec, args.seed, "gallery", i)) for i in range(args.count)]
    with atomic_path(args.out, suffix=".png") as tmp:
        gallery(samples, captions).save(tmp, format="png")
    rate = args.count / seconds if seconds > 0 else 0.0
    emit({"count": args.count, "seconds": round(seconds, 3), "images_per_s": round(rate, 1), "out": str(Path(args.out))})


if __name__ == "__main__":
    main()
