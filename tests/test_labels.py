"""Labels files (CSV or TSV filename,label): the accepted forms, each bad file's one error line,
the counts of what was skipped, and --labels through train, test and predict."""

from __future__ import annotations

import pytest
from owndata_data import draw

import captcha_predict
import captcha_test
import captcha_train
from captchakit.data.labels import match_folder, read_labels_file, write_labels_file
from captchakit.errors import UserError


def labels_of(tmp_path, text: str, name: str = "labels.csv", **kw):
    path = tmp_path / name
    path.write_bytes(text.encode(kw.get("encoding", "utf-8")))
    return read_labels_file(path)


def error(tmp_path, text: str, name: str = "labels.csv") -> str:
    with pytest.raises(UserError) as info:
        labels_of(tmp_path, text, name)
    return str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "filename,label\na.png,AB12\nb.png,C3D4\n",  # CSV with a header
        "a.png,AB12\nb.png,C3D4\n",  # no header
        "a.png\tAB12\r\nb.png\tC3D4\r\n",  # TSV, Windows line ends
        "\ufeffimage,text\n\n a.png , AB12 \nimages/b.png,C3D4\n",  # BOM, blank line, spaces, a path
        'file,label\n"a.png","AB12"\nb.png,C3D4\n',  # quoted
    ],
)
def test_accepted_forms_give_the_same_labels(tmp_path, text):
    assert labels_of(tmp_path, text).labels == {"a.png": "AB12", "b.png": "C3D4"}


def test_header_and_delimiter_are_detected(tmp_path):
    lf = labels_of(tmp_path, "name\tlabel\na.png\tA\n")
    assert lf.header and lf.delimiter == "\t"
    lf = labels_of(tmp_path, "a.png,A\nb.png,B\n")
    assert not lf.header and lf.delimiter == ","


@pytest.mark.parametrize(
    "text, line",
    [
        ("a.png;AB12\nb.png;C3D4\n", "line 1: fields are separated by a semicolon; use a comma or a tab (filename,label)"),
        ("a.png AB12\n", "line 1: fields are separated by a space; use a comma or a tab (filename,label)"),
        ("a.png|AB12\n", "line 1: fields are separated by a vertical bar; use a comma or a tab (filename,label)"),
        ("justonefield\n", "line 1: one field 'justonefield', expected filename,label separated by a comma or a tab"),
        ("a.png,AB12\nb.png,C3,D4\n", "line 2: 3 field(s), expected 2 (filename,label) separated by a comma"),
        ("a.png,AB12\nb.png\n", "line 2: 1 field(s), expected 2 (filename,label) separated by a comma"),
        (
            "a.png,AB12\nb.png,C3D4\na.png,XY12\n",
            "line 3: a.png is listed again with another label ('XY12' here, 'AB12' on line 1); keep one line per file",
        ),
        ("filename,label\n,AB12\n", "line 2: empty file name; every line needs filename,label"),
        ("\n\n", "the file is empty; write one filename,label line per image"),
        ("filename,label\n", "no entries after the header; write one filename,label line per image"),
        ("a.png,\nb.png,\n", "every label is empty; fill in the second column (filename,label)"),
    ],
)
def test_each_bad_labels_file_gets_one_clear_line(tmp_path, text, line):
    where = f"--labels {tmp_path / 'labels.csv'}"
    assert error(tmp_path, text) == (f"{where} {line}" if line.startswith("line") else f"{where}: {line}")


def test_unreadable_labels_files(tmp_path):
    with pytest.raises(UserError) as info:
        read_labels_file(tmp_path / "none.csv")
    assert str(info.value) == f"--labels {tmp_path / 'none.csv'}: file not found; pass a CSV or TSV file of filename,label lines"
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UserError) as info:
        read_labels_file(tmp_path / "bin.csv", "--val-labels")
    assert str(info.value) == f"--val-labels {tmp_path / 'bin.csv'}: not a UTF-8 text file; save it as CSV or TSV text"


def test_what_training_can_go_on_without_is_counted(tmp_path):
    lf = labels_of(tmp_path, "a.png,AB\nb.png,\nc.png,CD\nc.png,CD\nghost.png,EF\nd,GH\n")
    assert lf.empty == ["b.png"] and lf.repeated == 1
    matched = match_folder(lf, ["a.png", "b.png", "c.png", "d.jpg"], "imgs")
    assert matched.labels == {"a.png": "AB", "c.png": "CD", "d.jpg": "GH"}  # 'd' finds the one image with that stem
    path = tmp_path / "labels.csv"
    assert matched.notes(lf, "imgs") == [
        f"{path}: 1 file name(s) not found in imgs, ignored (first: ghost.png)",
        f"{path}: 1 entry(ies) with an empty label, skipped (first: b.png)",
        f"{path}: 1 repeated line(s) ignored",
    ]


def test_a_labels_file_for_another_folder_stops(tmp_path):
    lf = labels_of(tmp_path, "x.png,AB\ny.png,CD\n")
    with pytest.raises(UserError) as info:
        match_folder(lf, ["a.png"], "imgs")
    assert str(info.value) == (
        f"--labels {tmp_path / 'labels.csv'}: none of its 2 file names is an image in imgs (first: x.png); "
        "pass the folder that this labels file describes"
    )


def test_write_then_read_round_trip(tmp_path):
    labels = {"b.png": "X,Y", "a.png": "AB"}
    for name in ("out.csv", "out.tsv"):
        write_labels_file(tmp_path / name, labels)
        assert read_labels_file(tmp_path / name).labels == labels


@pytest.fixture(scope="module")
def opaque(tmp_path_factory):
    """60 captchas named 0000.png ... with their labels only in labels.csv (plus one empty label, one stray line)."""
    folder = tmp_path_factory.mktemp("opaque")
    labels = draw(folder, 60, seed=4, name=lambda label, i: f"{i:04d}")
    lines = ["filename,label"] + [f"{k},{v}" for k, v in labels.items() if k != "0007.png"] + ["0007.png,", "gone.png,AB12"]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_labels_file_through_train_test_and_predict(opaque, tmp_path, cli):
    model, labels = tmp_path / "m.pkl", opaque / "labels.csv"
    # No --labels: a folder's own labels.csv is read (as captcha_label.py writes it).
    args = ["--train-dir", opaque, "--val-split", "0.25", "--model", model]
    code, out, _ = cli(captcha_train.main, *args, "--epochs", "1", "--batch-size", "16", "--threads", "2")
    assert code == 0 and f"labels from {labels}" in out
    assert "charset '123ABC' (6), length 4" in out  # read off the labels file, not the names 0000...
    assert f"{labels}: 1 file name(s) not found in {opaque}, ignored (first: gone.png)" in out
    assert f"{labels}: 1 entry(ies) with an empty label, skipped (first: 0007.png)" in out
    assert f"skipped 1 unusable file(s) in {opaque}: 0007.png (no label)" in out
    assert "15 images for validation" in out and "11 as a test share" in out  # 59 usable: a fifth of them, 11
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", opaque)
    assert code == 0 and f"labels from {labels}, the folder's own labels file" in out and "test: 11 captchas" in out
    code, out, _ = cli(captcha_test.main, "--model", model, "--data", opaque, "--all-images")
    assert code == 0 and "test: 59 captchas" in out
    code, out, err = cli(captcha_predict.main, "--model", model, "--labels", labels, opaque)
    assert code == 0 and len(out.strip().splitlines()) == 60 and " of 59 labelled images" in err


def test_bad_labels_file_stops_training_with_exit_2(opaque, tmp_path, cli):
    bad = tmp_path / "bad.csv"
    bad.write_text("0000.png;AB12\n")
    code, _, err = cli(captcha_train.main, "--train-dir", opaque, "--labels", bad, "--val-split", "0.2", "--model", tmp_path / "m.pkl")
    assert code == 2 and err.strip().endswith(
        f"error: --labels {bad} line 1: fields are separated by a semicolon; use a comma or a tab (filename,label)"
    )
    assert not (tmp_path / "m.pkl").exists()
