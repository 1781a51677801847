"""`captcha_dataset.py check` and `split`: the report's lines, every unusable file's reason, seeded splits."""

from __future__ import annotations

import os
import shutil

import pytest
from owndata_data import draw

import captcha_dataset
from captchakit.data import folders as own
from captchakit.data.images import list_images


@pytest.fixture
def messy(tmp_path):
    """24 good captchas plus one of each problem a user's folder has."""
    folder = tmp_path / "messy"
    labels = draw(folder, 24, seed=5)
    first = sorted(labels)[0]
    shutil.copy(folder / first, folder / "C3B2_copy.png")  # same bytes as another file
    (folder / "AB12_broken.png").write_bytes(b"this is not a png")
    shutil.copy(folder / first, folder / "_nolabel.png")
    shutil.copy(folder / first, folder / "AZ12_x.png")  # Z: outside --charset
    shutil.copy(folder / first, folder / "ABC_short.png")
    (folder / "notes.txt").write_text("not an image")
    return folder, labels


def lines_of(cli, *args):
    code, out, err = cli(captcha_dataset.main, *args)
    assert code == 0, err
    return out.strip().splitlines()


def test_check_reports_counts_sizes_labels_duplicates_and_unusable_files(messy, cli):
    folder, labels = messy
    first = sorted(labels)[0]
    out = lines_of(cli, "check", folder, "--charset", "ABC123", "--length", "4", "--rare", "3")
    assert out[0] == f"{folder}: 29 images, 25 usable, 4 unusable"
    assert out[1] == "other files, ignored: 1 (notes.txt)"
    assert out[2] == "image sizes: 64x32 (25); median 64x32"
    assert out[3] == "image modes: RGB (25)"
    assert out[4] == "label lengths: 4 (25)"
    assert out[5] == "charset (6): 123ABC"
    assert out[6].startswith("characters seen fewer than 3 times: ")
    copies = ["C3B2_copy.png", "_nolabel.png", "AZ12_x.png", "ABC_short.png", first]
    assert out[7] == "duplicates (same bytes): 1 group(s), 4 extra file(s)"
    assert out[8] == "  " + " = ".join(sorted(copies))
    assert out[9] == "unusable files: 4"
    assert out[10].startswith("  AB12_broken.png: not a readable image (cannot identify image file")
    assert out[11:] == [
        "  ABC_short.png: label 'ABC' has 3 characters, expected 4",
        "  AZ12_x.png: label 'AZ12' has characters outside the charset: 'Z'",
        "  _nolabel.png: no label",
    ]


def test_check_without_charset_reads_it_off_and_lists_rare_characters(messy, cli):
    folder, _ = messy
    out = lines_of(cli, "check", folder, "--rare", "2")
    assert out[0] == f"{folder}: 29 images, 27 usable, 2 unusable"
    assert "label lengths: 3 (1), 4 (26)" in out
    assert "charset (7): 123ABCZ" in out
    assert "characters seen fewer than 2 times: 'Z' 1" in out


def test_check_with_a_labels_file(tmp_path, cli):
    folder = tmp_path / "opaque"
    labels = draw(folder, 12, seed=6, name=lambda label, i: f"img{i:02d}")
    rows = [f"{k},{v.lower()}" for k, v in labels.items()][:-1] + ["ghost.png,AB12"]
    (tmp_path / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    out = lines_of(cli, "check", folder, "--labels", tmp_path / "labels.csv", "--ignore-case")
    assert out[0] == f"{tmp_path / 'labels.csv'}: 1 file name(s) not found in {folder}, ignored (first: ghost.png)"
    assert out[1] == f"{folder}: 12 images, 11 usable, 1 unusable"
    assert "charset (6): 123ABC" in out
    assert out[-1] == f"  {sorted(labels)[-1]}: no label"


def test_check_errors_are_one_line(tmp_path, cli):
    code, _, err = cli(captcha_dataset.main, "check", tmp_path / "nothere")
    assert code == 2 and err.strip().endswith(
        f"error: folder {tmp_path / 'nothere'}: folder not found; generate one with `python captcha_gen.py` or pass another folder"
    )
    code, _, err = cli(captcha_dataset.main, "check", tmp_path)
    assert code == 2 and err.strip().endswith(f"error: folder {tmp_path}: no images found; pass the folder that holds the captcha images")
    (tmp_path / "a.png").write_bytes(b"x")
    code, _, err = cli(captcha_dataset.main, "check", tmp_path, "--length", "4-2")
    assert code == 2 and err.strip().endswith("error: --length 4-2: give a number or MIN-MAX with 1 <= MIN <= MAX")


@pytest.fixture
def plain(tmp_path):
    folder = tmp_path / "plain"
    return folder, sorted(draw(folder, 30, seed=7))


def test_split_moves_a_seeded_tenth_the_same_as_val_split(plain, cli):
    folder, names = plain
    out = lines_of(cli, "split", folder, "--test", "0.1", "--seed", "3")
    assert out == [f"moved 30 images of {folder}: 27 to {folder / 'train'}, 3 to {folder / 'test'} (seed 3)"]
    test = [e.name for e in list_images(folder / "test")]
    assert test == own.split_names(names, 0.1, 3, "--test", folder)[1]
    assert len(list_images(folder / "train")) == 27 and not list_images(folder)


def test_split_link_leaves_the_folder_and_writes_labels_per_part(tmp_path, cli):
    folder = tmp_path / "src"
    labels = draw(folder, 20, seed=8, name=lambda label, i: f"{i:03d}")
    (tmp_path / "labels.tsv").write_text("".join(f"{k}\t{v}\n" for k, v in labels.items()))
    out = lines_of(cli, "split", folder, "--test", "0.25", "--link", "--out", tmp_path / "parts", "--labels", tmp_path / "labels.tsv")
    assert out[0] == f"linked 20 images of {folder}: 15 to {tmp_path / 'parts' / 'train'}, 5 to {tmp_path / 'parts' / 'test'} (seed 0)"
    assert len(list_images(folder)) == 20
    test = tmp_path / "parts" / "test"
    assert all(os.path.islink(test / e.name) for e in list_images(test))
    written = (test / "labels.csv").read_text().splitlines()
    assert written[0] == "filename,label" and len(written) == 6
    assert all(labels[row.split(",")[0]] == row.split(",")[1] for row in written[1:])


def test_split_errors_are_one_line(plain, tmp_path, cli):
    folder, names = plain
    code, _, err = cli(captcha_dataset.main, "split", folder, "--test", "0.01")
    assert code == 2 and err.strip().endswith(
        f"error: --test 0.01: {folder} has 30 usable image(s), too few to hold 1% out; "
        "label more images or pass a separate validation folder"
    )
    (folder / "test").mkdir()
    held = own.split_names(names, 0.1, 0, "--test", folder)[1]
    shutil.copy(folder / held[0], folder / "test" / held[0])
    code, _, err = cli(captcha_dataset.main, "split", folder, "--test", "0.1")
    assert code == 2 and err.strip().endswith(f"error: {folder / 'test' / held[0]}: already exists; split into empty folders (--out OUT)")
    assert len(list_images(folder)) == 30  # nothing moved
    folder.chmod(0o555)
    try:
        code, _, err = cli(captcha_dataset.main, "split", folder)
        assert code == 2 and err.strip().endswith(
            f"error: folder {folder}: read-only, its files cannot be moved; add --link --out OUT to link them instead"
        )
    finally:
        folder.chmod(0o755)
