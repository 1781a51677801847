"""captcha_gen.py: file names, counts, seeding across worker counts, no overwrite, finishing a killed run."""

import re
from pathlib import Path

from PIL import Image

import captcha_gen
import captcha_setting as cs
from captchakit.data import synth

NAME = re.compile(r"^[0-9A-Z]{4}_\d{6}\.png$")


def files(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` (hidden ones too): name -> content."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def generate(cli, out: Path, *flags) -> str:
    code, stdout, _ = cli(captcha_gen.main, "--out", out, *flags)
    assert code == 0
    return stdout


def test_tiny_data_has_the_asked_counts_names_and_size(tiny_data):
    for split, count in (("train", 300), ("test", 60), ("predict", 20)):
        names = sorted(p.name for p in (tiny_data / split).iterdir() if p.suffix == ".png")
        assert len(names) == count
        assert all(NAME.match(n) for n in names), names[:3]
        assert sorted(int(n[5:11]) for n in names) == list(range(count))  # ID = index in the split, each once
    with Image.open(next((tiny_data / "test").glob("*.png"))) as image:
        assert image.format == "PNG" and image.size == (160, 60)


def test_seed_gives_the_same_bytes_for_one_or_two_workers_and_another_seed_differs(tmp_path, cli):
    flags = ("--train", "10", "--test", "3", "--predict", "0")
    generate(cli, tmp_path / "w1", *flags, "--seed", "5", "--workers", "1")
    generate(cli, tmp_path / "w2", *flags, "--seed", "5", "--workers", "2")
    generate(cli, tmp_path / "s6", *flags, "--seed", "6", "--workers", "2")
    for split in ("train", "test"):
        one, two, other = (files(tmp_path / run / split) for run in ("w1", "w2", "s6"))
        assert len(one) == (10 if split == "train" else 3)
        assert one == two
        assert set(one.values()).isdisjoint(other.values())
    # test/ is not a copy of train/: each split draws its own images.
    assert files(tmp_path / "w1" / "train").keys().isdisjoint(files(tmp_path / "w1" / "test").keys())


def test_two_images_with_the_same_text_are_both_kept(tmp_path, cli):
    # Two one-character labels for 8 images: the same text must come up several times.
    generate(cli, tmp_path, "--train", "8", "--test", "0", "--predict", "0", "--charset", "AB", "--length", "1", "--seed", "1")
    names = sorted(files(tmp_path / "train"))
    assert len(names) == 8 and {n[0] for n in names} <= {"A", "B"}
    assert sorted(int(n[2:8]) for n in names) == list(range(8))
    with Image.open(tmp_path / "train" / names[0]) as image:
        assert image.size == (160, 60)


def test_a_rerun_finishes_a_killed_run_without_duplicating(tmp_path, cli):
    flags = ("--train", "12", "--test", "0", "--predict", "0", "--seed", "3", "--workers", "2")
    generate(cli, tmp_path, *flags)
    complete = files(tmp_path / "train")
    assert len(complete) == 12
    # What a killed run leaves: some images missing, and a half-written temporary file.
    gone = sorted(complete)[::4]
    for name in gone:
        (tmp_path / "train" / name).unlink()
    (tmp_path / "train" / ".tmp-7.png").write_bytes(b"\x89PNG half")
    out = generate(cli, tmp_path, *flags)
    assert f"done: {len(gone)} images written" in out
    assert files(tmp_path / "train") == complete  # the same images, no temporaries, no duplicates
    out = generate(cli, tmp_path, *flags)
    assert "train: 12 images already in" in out and "done: 0 images written" in out


def test_other_size_and_charset(tmp_path, cli):
    generate(cli, tmp_path, "--train", "3", "--test", "0", "--predict", "0", "--charset", "0123456789", "--length", "6",
             "--width", "200", "--height", "50", "--seed", "2")  # fmt: skip
    names = sorted(files(tmp_path / "train"))
    assert all(re.match(r"^\d{6}_\d{6}\.png$", n) for n in names) and len(names) == 3
    with Image.open(tmp_path / "train" / names[0]) as image:
        assert image.size == (200, 50)


def share(folder: Path, char: str) -> float:
    """The share of `char` among the characters of the labels in `folder`."""
    labels = "".join(p.name.split("_")[0] for p in folder.glob("*.png"))
    return labels.count(char) / len(labels)


def test_the_train_split_draws_emphasised_characters_more_often_and_test_stays_uniform(tmp_path, cli):
    # TRAIN_EMPHASIS holds '0' at w (6): with charset "0A" a training character is '0' w times in w + 1.
    w = cs.TRAIN_EMPHASIS["0"]
    out = generate(cli, tmp_path / "default", "--train", "100", "--test", "100", "--predict", "0", "--charset", "0A", "--seed", "1")
    assert f"the train split draws 0:{w:g}" in out
    assert share(tmp_path / "default" / "train", "0") > w / (w + 1) - 0.07  # 400 characters: 0.86 +- 0.02 at w = 6
    assert 0.4 < share(tmp_path / "default" / "test", "0") < 0.6
    flags = ("--train", "100", "--test", "0", "--predict", "0", "--charset", "0A", "--seed", "1")
    generate(cli, tmp_path / "none", *flags, "--emphasis", "none")
    assert 0.4 < share(tmp_path / "none" / "train", "0") < 0.6
    generate(cli, tmp_path / "a4", *flags, "--emphasis", "A:4")
    assert share(tmp_path / "a4" / "train", "A") > 0.72  # 0.8 +- 0.03


def test_emphasis_flag_parsing():
    assert synth.parse_emphasis(None, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") == {"O": 6.0, "0": 6.0}
    assert synth.parse_emphasis(None, "ABC") == {}  # the defaults' characters outside the charset are left out
    assert synth.parse_emphasis("none", "ABC") == {}
    parsed = synth.parse_emphasis("AB:2, C:0.5", "ABC")
    assert parsed == {"A": 2.0, "B": 2.0, "C": 0.5}
    assert synth.emphasis_text(parsed) == "AB:2,C:0.5"
    assert synth.parse_emphasis(synth.emphasis_text(parsed), "ABC") == parsed
    assert synth.emphasis_text({}) == "none"
