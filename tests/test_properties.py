"""Property-based tests (hypothesis): the label codec and the parsers that read labels from names and files.

Rules settled here (README, "File formats"): a label in a file name is the text before the first '_'
or white space, after the last path part and its extension are dropped; case and Unicode are kept as
the file system gives them; names that start with '.' are hidden and never read as images.
"""

from __future__ import annotations

import re
import string

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from script_runner import tally

import captcha_gen
from captcha_setting import IMAGE_EXTENSIONS, Settings
from captchakit.codec import LabelCodec, LabelError
from captchakit.data import writer
from captchakit.data.images import is_image_name, label_from_name
from captchakit.data.labels import read_labels_file, write_labels_file

FAST = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])

# Any character a charset may hold: no white space (Settings refuses it), no surrogates.
charset_chars = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="\x1c\x1d\x1e\x1f\x85")
charsets = st.lists(charset_chars, min_size=1, max_size=40, unique=True).map("".join).filter(lambda s: not any(c.isspace() for c in s))


@st.composite
def task_and_label(draw):
    """(Settings, a valid label for it): any charset, fixed or variable length."""
    charset = draw(charsets)
    length = draw(st.integers(1, 8))
    min_length = draw(st.integers(1, length))
    s = Settings(charset=charset, length=length, min_length=min_length)
    n = draw(st.integers(min_length, length))
    label = "".join(draw(st.lists(st.sampled_from(charset), min_size=n, max_size=n)))
    return s, label


def one_hot_logits(codec: LabelCodec, indices: list[int]) -> torch.Tensor:
    """(1, length * num_classes) logits whose argmax per position is `indices`."""
    logits = torch.full((codec.length, codec.num_classes), -10.0)
    logits[torch.arange(codec.length), torch.tensor(indices)] = 10.0
    return logits.reshape(1, -1)


# --- The codec ---


@FAST
@given(task_and_label())
def test_any_label_over_the_charset_round_trips(case):
    s, label = case
    codec = LabelCodec(s)
    indices = codec.encode(label)
    assert len(indices) == s.length
    assert all(0 <= i < codec.num_classes for i in indices)
    assert codec.decode_indices(indices) == label
    ((text, confidence),) = codec.decode(one_hot_logits(codec, indices))
    assert text == label and 0.99 < confidence <= 1.0
    assert codec.encode_batch([label, label]).shape == (2, s.length)
    tally("labels round-tripped through the codec")


@FAST
@given(st.text(alphabet=string.ascii_uppercase + string.digits, min_size=4, max_size=4), st.data())
def test_ignore_case_folds_lower_case_to_the_charset(label, data):
    s = Settings(charset=string.digits + string.ascii_uppercase, length=4, ignore_case=True)
    codec = LabelCodec(s)
    flips = data.draw(st.lists(st.booleans(), min_size=4, max_size=4))
    typed = "".join(c.lower() if flip else c for c, flip in zip(label, flips, strict=True))
    assert codec.encode(typed) == codec.encode(label)
    assert codec.decode_indices(codec.encode(typed)) == label


@FAST
@given(task_and_label(), st.data())
def test_a_character_outside_the_charset_is_refused_by_name(case, data):
    s, label = case
    stranger = data.draw(st.characters(blacklist_categories=("Cs",)).filter(lambda c: c not in s.charset))
    position = data.draw(st.integers(0, len(label) - 1))
    bad = label[:position] + stranger + label[position + 1 :]
    with pytest.raises(LabelError) as err:
        LabelCodec(s).encode(bad)
    message = str(err.value)
    assert message.startswith(f"label {bad!r} has characters outside the charset: ")
    assert repr(stranger)[1:-1] in message and "\n" not in message
    tally("labels outside the charset refused")


@FAST
@given(task_and_label(), st.data())
def test_a_label_of_the_wrong_length_is_refused_with_the_expected_length(case, data):
    s, _ = case
    n = data.draw(st.integers(0, s.length + 5).filter(lambda n: not s.min_length <= n <= s.length))
    bad = "".join(data.draw(st.lists(st.sampled_from(s.charset), min_size=n, max_size=n)))
    want = str(s.length) if s.min_length == s.length else f"{s.min_length}-{s.length}"
    with pytest.raises(LabelError, match=re.escape(f"label {bad!r} has {n} characters, expected {want}")):
        LabelCodec(s).encode(bad)
    tally("labels of a wrong length refused")


@FAST
@given(charsets.filter(lambda c: c != c.upper()))
def test_ignore_case_with_a_lower_case_charset_is_refused_up_front(charset):
    # Found by these tests: every label was upper-cased, then refused as outside such a charset.
    with pytest.raises(ValueError, match="with ignore_case the charset must be upper case"):
        Settings(charset=charset, length=4, ignore_case=True)


# --- Labels in file names ---

# Characters a label in a file name may hold: no '_' or white space (they end the label), no '/'.
name_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="_/\\\x00").filter(lambda c: not c.isspace())
labels_in_names = st.text(name_chars, min_size=1, max_size=12)
extensions = st.sampled_from([*IMAGE_EXTENSIONS, *(e.upper() for e in IMAGE_EXTENSIONS)])


@FAST
@given(labels_in_names, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=12), extensions)
def test_the_label_is_the_text_before_the_first_underscore(label, rest, ext):
    # LABEL_anything.ext: anything may hold more underscores, dots, spaces, any Unicode.
    assert label_from_name(f"{label}_{rest}{ext}") == label
    assert label_from_name(f"some dir/sub.d/{label}_{rest}{ext}") == label
    tally("file names parsed", 2)


@FAST
@given(labels_in_names, extensions)
def test_a_plain_label_name_is_the_whole_stem(label, ext):
    # LABEL.ext, dots inside the label included ('AB.12.png' -> 'AB.12').
    assume(not label.startswith("."))  # '.AB.png' is a hidden file; see the next test
    assert label_from_name(f"{label}{ext}") == label
    assert is_image_name(f"{label}{ext}")
    tally("file names parsed")


@FAST
@given(labels_in_names, st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), max_size=8), extensions)
def test_white_space_ends_the_label_like_an_underscore(label, rest, ext):
    # Downloads add ' (2)' or ' copy' to a name; the label is what came before.
    for space in (" ", "\t", "\u3000"):
        assert label_from_name(f"{label}{space}{rest}{ext}") == label
    tally("file names parsed", 3)


@pytest.mark.parametrize(
    "name, label",
    [
        ("AB12_000123.png", "AB12"),
        ("AB12.png", "AB12"),
        ("AB12 (2).png", "AB12"),
        ("AB12 copy.JPG", "AB12"),
        ("AB_12_3.png", "AB"),
        ("__1.png", ""),  # no label: counted as unusable, never guessed
        ("AB.12.png", "AB.12"),
        ("AB12.png.png", "AB12.png"),
        ("ÄÖ€漢_7.webp", "ÄÖ€漢"),
        ("AB12", "AB12"),
        ("dir.v2/AB12_1.png", "AB12"),
    ],
)
def test_odd_names_documented_in_the_readme(name, label):
    assert label_from_name(name) == label
    tally("file names parsed")


def test_hidden_files_are_never_read_as_images():
    assert not is_image_name(".AB12_1.png") and not is_image_name(".tmp-7.png")


@FAST
@given(st.text(string.digits + string.ascii_uppercase + "-+=ÄЖ漢", min_size=1, max_size=8), st.integers(0, 10**7))
def test_generated_names_parse_back_to_their_label_and_id(label, index):
    # captcha_gen names files LABEL_ID.png and finds existing IDs with its own pattern: both must agree.
    name = f"{label}_{index:0{writer.id_width(index + 1)}d}.png"
    match = writer.NAME_RE.match(name)
    assert match and match["label"] == label_from_name(name) == label and int(match["id"]) == index
    tally("file names parsed")


@pytest.mark.parametrize("unsafe", list("_/.\\"))
def test_gen_refuses_a_charset_that_cannot_live_in_file_names(unsafe, cli):
    flags = ("--train", "1", "--test", "0", "--predict", "0", "--out", "/nonexistent")
    code, _, err = cli(captcha_gen.main, "--charset", f"AB{unsafe}C", *flags)
    assert code == 2 and f": error: --charset: {unsafe!r} cannot be in the LABEL part of a LABEL_ID.png file name; " in err


# --- Labels files ---

# Any Unicode, commas, tabs, quotes and Unicode line separators included; not '/' or '\\' (folders are
# dropped), no white space at either end (it is stripped), no control characters (csv writes a lone
# '\r' unquoted, and no real label or file name holds one).
file_names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1, max_size=16)
file_names = file_names.filter(lambda n: n == n.strip())
label_texts = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
label_texts = label_texts.filter(lambda t: t == t.strip() and t != "")


@FAST
@given(st.dictionaries(file_names.map(lambda n: n + ".png"), label_texts, min_size=1, max_size=6), st.sampled_from([".csv", ".tsv"]))
def test_labels_files_round_trip(tmp_path_factory, labels, suffix):
    # Names and labels with commas, tabs, quotes, dots and any Unicode come back exactly.
    path = tmp_path_factory.mktemp("labels") / f"labels{suffix}"
    write_labels_file(path, labels)
    parsed = read_labels_file(path)
    assert parsed.labels == labels and parsed.header and not parsed.empty
    tally("labels files round-tripped")


def test_labels_file_names_lose_their_folders(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,label\nimages/0001.png,AB12\nC:\\data\\0002.png,CD34\n")
    assert read_labels_file(path).labels == {"0001.png": "AB12", "0002.png": "CD34"}
