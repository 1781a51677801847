"""Never trust input: crafted model files, crafted caches and images, and every script's bad-input paths.

Each script runs as a real process (tests/script_runner.py): the checks are on its exit status and
on the exact stderr a user sees.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from script_runner import one_error_line, run_script, tally

from captchakit import api
from captchakit.checkpoint import FORMAT
from captchakit.data import cache, images
from captchakit.errors import UserError

SCRIPTS_WITH_MODELS = ["captcha_test.py", "captcha_predict.py", "captcha_train.py", "captcha_export.py"]


class MarkerPayload:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a stranger's file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def crafted_model(path: Path, marker: Path, zip_format: bool = True) -> Path:
    """A model.pkl that looks right and creates `marker` if unpickled without weights_only."""
    payload = {"format": FORMAT, "settings": {}, "model_config": {}, "state_dict": {"w": MarkerPayload(marker)}, "meta": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if zip_format:
        torch.save(payload, path)  # torch's own zip container, as a real model.pkl
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # a bare pickle
    return path


@pytest.fixture(params=[True, False], ids=["torch-zip", "bare-pickle"])
def crafted(request, tmp_path) -> tuple[Path, Path]:
    """(crafted model.pkl, marker path) after proving the file really does run code when trusted."""
    control = tmp_path / "control-marker"
    probe = crafted_model(tmp_path / "probe.pkl", control, request.param)
    if request.param:
        torch.load(probe, weights_only=False)  # the unsafe load this project never does
    else:
        pickle.loads(probe.read_bytes())
    assert control.is_dir(), "the crafted file is not dangerous: the test would prove nothing"
    marker = tmp_path / "MARKER"
    return crafted_model(tmp_path / "evil" / "model.pkl", marker, request.param), marker


def refusal(path: Path) -> str:
    return f"--model {path}: refused to load, it asks to load posix.mkdir; use a model.pkl made by captcha_train.py"


@pytest.mark.parametrize("script", SCRIPTS_WITH_MODELS)
def test_crafted_model_pkl_is_refused_and_runs_nothing(script, crafted, tiny_data, tmp_path):
    evil, marker = crafted
    args = {
        "captcha_test.py": ("--model", evil, "--data", tiny_data / "test"),
        "captcha_predict.py": ("--model", evil, tiny_data / "predict"),
        "captcha_train.py": (
            "--resume", "--model", evil, "--train-dir", tiny_data / "train", "--val-dir", tiny_data / "test", "--device", "cpu",
        ),
        "captcha_export.py": ("--model", evil, "--slim", tmp_path / "slim.pkl"),
    }[script]  # fmt: skip
    # captcha_test.py runs in a fresh interpreter, the others forked: both are real processes.
    result = run_script(script, *args, logs=tmp_path / "logs", fresh=script == "captcha_test.py")
    assert one_error_line(result, script) == refusal(evil)
    assert not marker.exists()
    tally("crafted model files refused")


def test_crafted_last_pkl_is_refused_on_resume(crafted, tiny_data, tiny_model, tmp_path):
    evil, marker = crafted
    model = tmp_path / "run" / "model.pkl"
    model.parent.mkdir()
    model.write_bytes(tiny_model.read_bytes())  # a good model.pkl; the crafted file is the resume state
    last = model.parent / "model_run" / "last.pkl"
    last.parent.mkdir()
    last.write_bytes(evil.read_bytes())
    args = ("--resume", "--model", model, "--train-dir", tiny_data / "train", "--val-dir", tiny_data / "test", "--device", "cpu")
    result = run_script("captcha_train.py", *args, logs=tmp_path / "logs")
    assert one_error_line(result, "captcha_train.py") == refusal(last)
    assert not marker.exists()
    tally("crafted model files refused")


def test_crafted_model_is_refused_by_the_python_api(crafted):
    evil, marker = crafted
    with pytest.raises(UserError, match="refused to load, it asks to load posix.mkdir"):
        api.load_model(evil, "cpu")
    assert not marker.exists()


def test_server_refuses_a_crafted_model_before_listening(crafted, tmp_path):
    evil, marker = crafted
    result = run_script("captcha_server.py", "--model", evil, "--port", 0, logs=tmp_path / "logs", timeout=60)
    assert one_error_line(result, "captcha_server.py") == refusal(evil)
    assert not marker.exists()
    tally("crafted model files refused")


def test_a_crafted_data_cache_is_rebuilt_not_unpickled(tiny_data, tmp_path):
    # A data set from a stranger may ship its own .captcha_cache: an object array that would run code.
    folder = tmp_path / "stranger"
    folder.mkdir()
    for src in sorted((tiny_data / "test").glob("*.png"))[:6]:
        (folder / src.name).write_bytes(src.read_bytes())
    marker, (w, h) = tmp_path / "MARKER", (160, 60)
    stash = folder / cache.CACHE_DIR
    stash.mkdir()
    np.save(stash / f"{cache.cache_key(w, h, False, 1)}.npy", np.array([MarkerPayload(marker)], dtype=object), allow_pickle=True)
    names = [e.name for e in images.list_images(folder)]
    fingerprint = cache._fingerprint(images.list_images(folder), cache.cache_key(w, h, False, 1))
    meta = {"fingerprint": fingerprint, "names": names, "unreadable": {}, "crc": 0}
    (stash / f"{cache.cache_key(w, h, False, 1)}.json").write_text(__import__("json").dumps(meta))
    packed = cache.pack_folder(folder, w, h, quiet=True)
    assert not marker.exists()
    assert packed.images.dtype == np.uint8 and packed.images.shape == (6, h, w) and packed.images.any()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_a_decompression_bomb_is_refused_without_decoding(tiny_model, tmp_path):
    # 40,000 x 40,000 pixels declared in 60 bytes: decoding it would take 1.6 GB.
    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))
    result = run_script("captcha_predict.py", "--model", tiny_model, bomb, logs=tmp_path / "logs")
    message = one_error_line(result, "captcha_predict.py")
    assert message.startswith(f"{bomb}: not a readable image (Image size (1600000000 pixels) exceeds limit")
    tally("bad inputs tried")


# --- Every script's bad inputs: exit status 2, one line on stderr, its first words checked ---


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_data, tiny_model) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    empty = root / "empty"
    empty.mkdir()
    junk = root / "junk"
    junk.mkdir()
    (junk / "ABCD_000001.png").write_text("not an image\n")
    (junk / "ABCE_000002.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    notes = root / "notes.txt"
    notes.write_text("not a captcha\n")
    truncated = root / "truncated.pkl"
    truncated.write_bytes(tiny_model.read_bytes()[:5000])
    return {
        "data": tiny_data, "model": tiny_model, "empty": empty, "junk": junk, "notes": notes, "truncated": truncated,
        "missing": root / "missing", "under_file": notes / "sub", "out": root / "out",
    }  # fmt: skip


def T(data):  # noqa: N802 - short on purpose: the tables below read as command lines
    return ("--train-dir", data / "train", "--val-dir", data / "test", "--device", "cpu", "--epochs", 1)


# (script, args from the `bad` paths, expected start of the message after "SCRIPT: error: ")
BAD_INPUTS = {
    "gen: negative count": ("captcha_gen.py", lambda b: ("--train", -1), "--train -1: a count cannot be negative"),
    "gen: not a number": ("captcha_gen.py", lambda b: ("--train", "abc"), "argument --train: invalid int value: 'abc'; see --help"),
    "gen: unknown flag": ("captcha_gen.py", lambda b: ("--bogus",), "unrecognized arguments: --bogus; see --help"),
    "gen: no workers": ("captcha_gen.py", lambda b: ("--workers", 0), "--workers 0: use at least 1"),
    "gen: repeated charset": ("captcha_gen.py", lambda b: ("--charset", "AAB"), "settings: the charset 'AAB' repeats a character"),
    "gen: tiny image": ("captcha_gen.py", lambda b: ("--width", 8), "settings: the image size must be at least 16x16"),
    "gen: out under a file": (
        "captcha_gen.py",
        lambda b: ("--out", b["under_file"], "--train", 1),
        "--out {under_file}: cannot write there",
    ),
    "train: missing folder": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--train-dir", b["missing"]),
        "--train-dir {missing}: folder not found",
    ),
    "train: empty folder": ("captcha_train.py", lambda b: (*T(b["data"]), "--train-dir", b["empty"]), "--train-dir {empty}: no images"),
    "train: only junk": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--train-dir", b["junk"]),
        "--train-dir {junk}: none of its 2 images",
    ),
    "train: zero epochs": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--epochs", 0),
        "argument --epochs: 0 is too small; use at least 1",
    ),
    "train: zero batch": ("captcha_train.py", lambda b: (*T(b["data"]), "--batch-size", 0), "argument --batch-size: 0 is too small"),
    "train: zero lr": ("captcha_train.py", lambda b: (*T(b["data"]), "--lr", 0), "argument --lr: 0 is too small; use more than 0"),
    "train: negative threads": ("captcha_train.py", lambda b: (*T(b["data"]), "--threads", -1), "argument --threads: -1 is too small"),
    "train: unknown device": ("captcha_train.py", lambda b: (*T(b["data"]), "--device", "tpu"), "--device tpu: unknown device"),
    "train: bad model config": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--model-config", "{oops"),
        "--model-config: not a valid JSON",
    ),
    "train: nothing to resume": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--resume", "--model", b["out"] / "m.pkl"),
        "--resume: nothing to resume at",
    ),
    "train: truncated resume": (
        "captcha_train.py",
        lambda b: (*T(b["data"]), "--resume", "--model", b["truncated"]),
        "--model {truncated}: unreadable or truncated",
    ),
    "test: missing model": ("captcha_test.py", lambda b: ("--model", b["missing"]), "--model {missing}: file not found"),
    "test: text as model": ("captcha_test.py", lambda b: ("--model", b["notes"]), "--model {notes}: "),
    "test: truncated model": ("captcha_test.py", lambda b: ("--model", b["truncated"]), "--model {truncated}: unreadable or truncated"),
    "test: missing data": ("captcha_test.py", lambda b: ("--model", b["model"], "--data", b["missing"]), "--data {missing}: "),
    "test: only junk": ("captcha_test.py", lambda b: ("--model", b["model"], "--data", b["junk"]), "--data {junk}: none of its 2 images"),
    "test: zero batch": ("captcha_test.py", lambda b: ("--model", b["model"], "--batch-size", 0), "argument --batch-size: 0 is too small"),
    "test: json under a file": (
        "captcha_test.py",
        lambda b: ("--model", b["model"], "--data", b["data"] / "test", "--json", b["under_file"] / "m.json"),
        "--json {under_file}: cannot write there",
    ),
    "predict: missing path": ("captcha_predict.py", lambda b: ("--model", b["model"], b["missing"]), "{missing}: no such file or folder"),
    "predict: not an image": ("captcha_predict.py", lambda b: ("--model", b["model"], b["notes"]), "{notes}: not a readable image"),
    "predict: zero batch": ("captcha_predict.py", lambda b: ("--model", b["model"], "--batch-size", 0), "argument --batch-size: 0 is too"),
    "predict: truncated model": (
        "captcha_predict.py",
        lambda b: ("--model", b["truncated"]),
        "--model {truncated}: unreadable or truncated",
    ),
    "export: nothing to do": (
        "captcha_export.py",
        lambda b: ("--model", b["model"]),
        "nothing to do: give --onnx OUT, --slim OUT, --ship OUT or --ship-general OUT",
    ),
    "export: missing model": (
        "captcha_export.py",
        lambda b: ("--model", b["missing"], "--slim", b["out"] / "s.pkl"),
        "--model {missing}: ",
    ),
    "server: bad port": ("captcha_server.py", lambda b: ("--model", b["model"], "--port", 70000), "--port 70000: not a TCP port"),
    "server: zero max bytes": (
        "captcha_server.py",
        lambda b: ("--model", b["model"], "--max-bytes", 0),
        "--max-bytes 0: must be at least 1",
    ),
    "dataset: missing folder": (
        "captcha_dataset.py",
        lambda b: ("check", b["missing"]),
        "folder {missing}: folder not found; generate one with `python captcha_gen.py` or pass another folder",
    ),
    "dataset: empty folder": ("captcha_dataset.py", lambda b: ("check", b["empty"]), "folder {empty}: no images found"),
    "dataset: bad length": ("captcha_dataset.py", lambda b: ("check", b["data"] / "test", "--length", "x"), "--length x: give a number or"),
    "dataset: no command": ("captcha_dataset.py", lambda b: (), "the following arguments are required"),
    "dataset: split missing folder": ("captcha_dataset.py", lambda b: ("split", b["missing"]), "folder {missing}: folder not found; "),
    "dataset: split empty folder": ("captcha_dataset.py", lambda b: ("split", b["empty"]), "folder {empty}: no images found; "),
    "dataset: split share of 2": (
        "captcha_dataset.py",
        lambda b: ("split", b["data"] / "test", "--test", 2, "--link", "--out", b["out"] / "split"),
        "--test 2.0: give a share between 0 and 1",
    ),
    "dataset: split out under a file": (
        "captcha_dataset.py",
        lambda b: ("split", b["data"] / "test", "--link", "--out", b["under_file"]),
        "--out {under_file}: cannot write there",
    ),
    "predict: empty folder": ("captcha_predict.py", lambda b: ("--model", b["model"], b["empty"]), "{empty}: no images found"),
    "server: zero max images": (
        "captcha_server.py",
        lambda b: ("--model", b["model"], "--max-images", 0),
        "--max-images 0: must be at least 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_exit_2_and_one_line(case, bad, tmp_path):
    script, make_args, start = BAD_INPUTS[case]
    result = run_script(script, *make_args(bad), logs=tmp_path / "logs", timeout=120)
    message = one_error_line(result, script)
    assert message.startswith(start.format(**{k: str(v) for k, v in bad.items()})), message
    tally("bad inputs tried")
