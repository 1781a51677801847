"""The packed uint8 cache: built once, reused while the folder is unchanged, rebuilt otherwise."""

import json
import shutil

import numpy as np
import pytest

from captcha_setting import Settings
from captchakit.codec import LabelCodec
from captchakit.data import cache as cd
from captchakit.data.images import load_image
from captchakit.data.sets import load_labelled


@pytest.fixture
def folder(tiny_data, tmp_path):
    """A private copy of 40 tiny test images, so tests may change it."""
    dst = tmp_path / "imgs"
    dst.mkdir()
    for src in sorted((tiny_data / "test").glob("*.png"))[:40]:
        shutil.copy(src, dst / src.name)
    return dst


@pytest.fixture
def decodes(monkeypatch):
    """Counts how many images were decoded from files (0 when the cache is used)."""
    count = {"n": 0}
    real = cd._decode_all

    def counting(folder, names, *args, **kwargs):
        count["n"] += len(names)
        return real(folder, names, *args, **kwargs)

    monkeypatch.setattr(cd, "_decode_all", counting)
    return count


def test_cache_matches_direct_decoding_and_is_reused(folder, decodes):
    first = cd.pack_folder(folder, 160, 60)
    assert decodes["n"] == 40 and first.images.shape == (40, 60, 160) and first.images.dtype == np.uint8
    for name, row in zip(first.names[:5], first.images[:5], strict=True):
        assert np.array_equal(row, load_image(folder / name, 160, 60))
    again = cd.pack_folder(folder, 160, 60)
    assert decodes["n"] == 40, "an unchanged folder must not be decoded again"
    assert again.names == first.names and np.array_equal(np.asarray(again.images), np.asarray(first.images))


def test_cache_is_per_image_size(folder, decodes):
    cd.pack_folder(folder, 160, 60)
    small = cd.pack_folder(folder, 80, 30)
    assert small.images.shape == (40, 30, 80) and decodes["n"] == 80


@pytest.mark.parametrize("change", ["add", "remove", "rewrite"])
def test_a_changed_folder_is_rebuilt(folder, decodes, change):
    cd.pack_folder(folder, 160, 60)
    victim = sorted(folder.glob("*.png"))[0]
    if change == "add":
        shutil.copy(victim, folder / "ZZZZ_999999.png")
    elif change == "remove":
        victim.unlink()
    else:
        data = victim.read_bytes()
        victim.write_bytes(data + b"\0")  # same name, new size: another file
    packed = cd.pack_folder(folder, 160, 60)
    assert decodes["n"] == 80 + (1 if change == "add" else -1 if change == "remove" else 0)
    assert len(packed.names) == {"add": 41, "remove": 39, "rewrite": 40}[change]


@pytest.mark.parametrize("damage", ["flip-bytes", "truncate-array", "bad-index"])
def test_a_corrupt_cache_is_rebuilt_not_trusted(folder, decodes, damage):
    good = np.array(cd.pack_folder(folder, 160, 60).images)
    npy, index = folder / cd.CACHE_DIR / "160x60.npy", folder / cd.CACHE_DIR / "160x60.json"
    if damage == "flip-bytes":
        raw = bytearray(npy.read_bytes())
        raw[-100:] = bytes(255 - b for b in raw[-100:])
        npy.write_bytes(bytes(raw))
    elif damage == "truncate-array":
        npy.write_bytes(npy.read_bytes()[:5000])
    else:
        index.write_text(json.dumps({"fingerprint": "x"})[:7])
    packed = cd.pack_folder(folder, 160, 60)
    assert decodes["n"] == 80, "the damaged cache must be rebuilt from the images"
    assert np.array_equal(np.asarray(packed.images), good)


def test_unreadable_files_are_listed_with_a_reason(folder):
    (folder / "BROKEN_000001.png").write_bytes(b"not a png")
    sorted(folder.glob("*.png"))[1].write_bytes(sorted(folder.glob("*.png"))[1].read_bytes()[:200])  # truncated
    data = load_labelled(folder, LabelCodec(Settings()), "--data")
    reasons = dict(data.skipped)
    assert len(data) == 39 and "BROKEN_000001.png" in reasons and len(reasons) == 2
    assert "skipped 2 unusable file(s)" in data.describe_skipped()
