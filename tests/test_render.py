"""The varied renderer (captchakit/data/render.py) and captcha_gen.py --style varied, on tiny samples."""

import io
import json
import pickle
import re
import string
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import captcha_gen
from captchakit.data import render as rd
from captchakit.data.images import load_image

SPEC = rd.RenderSpec()


def png(image: Image.Image) -> bytes:
    """The bytes captcha_gen.py writes for `image`."""
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    return buffer.getvalue()


def error_line(result) -> str:
    """The message of the one `PROG: error: MESSAGE` line a failed command printed."""
    code, out, err = result
    assert code == 2, (out, err)
    (line,) = err.strip().splitlines()
    return line.partition(": error: ")[2]


@pytest.fixture(scope="module")
def styles() -> list[rd.Style]:
    return [rd.style_of(SPEC, 0, "train", i) for i in range(400)]


def test_the_same_seed_split_and_index_give_the_same_bytes_and_others_differ():
    label, image = rd.render(SPEC, 5, "train", 3)
    again = rd.render(SPEC, 5, "train", 3)
    assert again[0] == label and png(again[1]) == png(image)
    others = [rd.render(SPEC, 5, "train", 4), rd.render(SPEC, 5, "test", 3), rd.render(SPEC, 6, "train", 3)]
    assert all(png(other) != png(image) for _, other in others)
    assert [label for label, _ in rd.rendered(SPEC, 3, 5, "train")] == [rd.render(SPEC, 5, "train", i)[0] for i in range(3)]


def test_labels_keep_to_the_lengths_and_the_charset_and_sizes_vary_like_real_captchas():
    drawn = list(rd.rendered(SPEC, 200, 1, "train"))
    assert {len(label) for label, _ in drawn} == set(range(3, 9))
    assert set("".join(label for label, _ in drawn)) <= set(string.digits + string.ascii_letters)
    assert any(c.islower() for label, _ in drawn for c in label) and any(c.isupper() for label, _ in drawn for c in label)
    heights = [image.height for _, image in drawn]
    assert min(heights) >= rd.HEIGHTS[0] and max(heights) <= rd.HEIGHTS[1] and len(set(heights)) > 20
    per_char = [image.width / len(label) for label, image in drawn]
    assert 12 < np.median(per_char) < 60
    modes = [image.mode for _, image in drawn]
    assert {"RGB", "L"} == set(modes) and modes.count("RGB") > modes.count("L")
    small = rd.RenderSpec(charset="aB3", min_length=2, max_length=2, height=40)
    for label, image in rd.rendered(small, 20, 1, "train"):
        assert len(label) == 2 and set(label) <= set("aB3") and image.height == 40


def test_every_style_branch_is_drawn_across_a_seeded_sample(styles):
    varied = [s for s in styles if s.source == "varied"]
    assert {s.source for s in styles} == {"captcha", "varied"}
    assert {s.font for s in varied} == set(rd.fonts_for(SPEC.charset))
    assert {s.background for s in varied} == set(rd.BACKGROUND_WEIGHTS)
    assert {s.text for s in varied} == set(rd.TEXT_WEIGHTS)
    assert {s.colours for s in varied} == set(rd.COLOUR_WEIGHTS)
    assert {s.warp for s in varied} == set(rd.WARP_WEIGHTS)
    assert {kind for s in varied for kind in s.noise} == set(rd.NOISE_SHARES) and any(not s.noise for s in varied)
    for flag in ("blur", "jpeg", "grey"):
        assert {getattr(s, flag) for s in styles} == {True, False}, flag


def test_every_branch_renders_a_readable_image(styles):
    """One image for each value of each choice (every font too), drawn and read as training reads it."""
    firsts = {}
    for index, style in enumerate(styles):
        for key in (style.source, style.font, style.background, style.text, style.colours, style.warp, *style.noise):
            firsts.setdefault(key, index)
        for flag in ("blur", "jpeg", "grey"):
            if getattr(style, flag):
                firsts.setdefault(flag, index)
    for index in sorted(set(firsts.values())):
        label, image = rd.render(SPEC, 0, "train", index)
        assert image.mode == ("L" if styles[index].grey else "RGB"), index
        assert load_image(image, 160, 60).shape == (60, 160)
        pixels = load_image(png(image), 128, 64, keep_aspect=True, channels=3)
        assert pixels.shape == (64, 128, 3) and pixels.std() > 5, (index, styles[index])  # not a blank image


def test_the_spec_refuses_what_it_cannot_draw_and_names_its_fonts():
    named = ["DejaVu Sans Bold Oblique", "DejaVu Serif Italic", "DejaVu Sans Mono", "STIXGeneral Bold", "Computer Modern Typewriter"]
    assert set(named) | {rd.CAPTCHA_LIBRARY_FONT} <= set(rd.font_names())
    assert len(rd.fonts_for(SPEC.charset)) == len(rd.font_names())
    assert rd.fonts_for("中") == ()
    with pytest.raises(ValueError, match="none has '中'"):
        rd.RenderSpec(charset="ab中")
    with pytest.raises(ValueError, match="min_length <= max_length"):
        rd.RenderSpec(min_length=5, max_length=3)
    with pytest.raises(ValueError, match="at least 16"):
        rd.RenderSpec(height=8)
    renderer = pickle.loads(pickle.dumps(rd.Renderer(SPEC)))  # what a spawned worker process gets
    assert png(renderer.make_seeded(2, "train", 0)[1]) == png(rd.render(SPEC, 2, "train", 0)[1])


def test_captcha_gen_writes_varied_sets_named_by_their_labels(tmp_path, cli):
    code, out, _ = cli(captcha_gen.main, "--style", "varied", "--train", "6", "--test", "2", "--predict", "0", "--seed", "4",
                       "--workers", "1", "--out", tmp_path)  # fmt: skip
    assert code == 0 and "varied style" in out and "done: 8 images written" in out
    names = sorted(p.name for p in (tmp_path / "train").iterdir())
    assert len(names) == 6 and all(re.fullmatch(r"[0-9A-Za-z]{3,8}_\d{6}\.png", n) for n in names), names
    for name in names:
        label, index = name[:-4].split("_")
        drawn_label, image = rd.render(SPEC, 4, "train", int(index))
        assert label == drawn_label and (tmp_path / "train" / name).read_bytes() == png(image)
    code, _, _ = cli(captcha_gen.main, "--style", "varied", "--train", "3", "--test", "0", "--predict", "0", "--seed", "4",
                     "--workers", "1", "--out", tmp_path / "short", "--charset", "xY7", "--max-length", "2", "--height", "36")  # fmt: skip
    for path in (tmp_path / "short" / "train").iterdir():
        assert re.fullmatch(r"[xY7]{2}_\d{6}\.png", path.name) and Image.open(path).height == 36


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--min-length", "6", "--max-length", "4"), "--min-length 6 and --max-length 4: use 1 <= --min-length <= --max-length"),
        (
            ("--charset", "ab中文"),
            f"--charset: the charset 'ab中文' cannot be drawn by the {len(rd.font_names())} fonts of the varied style: none has '中文'",
        ),
        (("--charset", "ab_"), "--charset: '_' cannot be in the LABEL part of a LABEL_ID.png file name; leave it out"),
        (("--width", "100"), "--width: the varied style does not take it (each image is as wide as its text needs); leave it out"),
        (("--height", "10"), "--height 10: use at least 16 pixels"),
        (("--length", "5", "--max-length", "6"), "--max-length 6 and --length 5: they are the same flag; give one"),
    ],
)
def test_captcha_gen_varied_mistakes_are_one_line(tmp_path, cli, flags, expected):
    assert error_line(cli(captcha_gen.main, "--style", "varied", "--train", "1", "--out", tmp_path, *flags)) == expected
    assert not (tmp_path / "train").exists()


def test_the_gallery_script_writes_one_grid_and_one_json_line(tmp_path):
    out = tmp_path / "gallery.png"
    proc = subprocess.run([sys.executable, ROOT / "bench" / "render_gallery.py", "--count", "5", "--out", out],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout)
    assert record["count"] == 5 and record["images_per_s"] > 0 and record["out"] == str(out)
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.width > sheet.height > 0
