"""Shared fixtures: a tiny generated data set, a tiny trained model, and a CLI runner.

Everything is small on purpose: tests check behaviour, benchmarks under bench/ measure speed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cdp_browser import ensure_chromium

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import captcha_gen  # noqa: E402
import captcha_train  # noqa: E402
from captchakit.errors import run_cli  # noqa: E402
from captchakit.train import finetune  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def no_general_reader(tmp_path_factory):
    """Training in this process starts small sets from random weights, as a user's --from-scratch:
    the tests of other features stay apart from the shipped general reader's weights and size.
    tests/test_finetune.py sets a reader of its own; the bench tests' subprocesses use the shipped one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "GENERAL_MODEL", tmp_path_factory.mktemp("none") / "general.pkl")
        yield


@pytest.fixture
def cli(capsys):
    """cli(module_main, *args) -> (exit status, stdout, stderr), as the command line would give them."""

    def run(main, *args):
        capsys.readouterr()
        code = run_cli(main, [str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """dataset-like folder with train/ (300), test/ (60) and predict/ (20) images, seed 7."""
    out = tmp_path_factory.mktemp("data")
    captcha_gen.main(["--train", "300", "--test", "60", "--predict", "20", "--out", str(out), "--seed", "7", "--workers", "2"])
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A model.pkl trained for 2 epochs on tiny_data (far from accurate, but real)."""
    path = tmp_path_factory.mktemp("model") / "model.pkl"
    captcha_train.main(
        [
            "--train-dir", str(tiny_data / "train"), "--val-dir", str(tiny_data / "test"),
            "--epochs", "2", "--batch-size", "32", "--model", str(path),
        ]
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium for the page tests (tests/cdp_browser.py), or a skip that says why not."""
    path, why_not = ensure_chromium()  # installs Debian's package when missing (CI runs as root)
    if path is None:
        pytest.skip(why_not)
    return path
