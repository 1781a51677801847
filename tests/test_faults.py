"""Never lose work: kill -9 generation and training at random and chosen moments, fill the disk, make
the output read-only; then check that nothing was lost, duplicated or left half-written.

The scripts run as real processes (tests/script_runner.py); what each test showed, with the counts
of a real run, is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import csv
import errno
import os
import random
import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from PIL import Image
from script_runner import one_error_line, run_script, start_script, tally, wait_for

import captcha_gen
import captcha_test
import captcha_train
from captcha_setting import Settings
from captchakit.data import synth, writer
from captchakit.data.cache import pack_folder
from captchakit.errors import run_cli
from captchakit.files import TMP_MARK
from captchakit.train import resume

GEN_COUNTS = {"train": 200, "test": 16, "predict": 8}
GEN_ARGS = ("--train", 200, "--test", 16, "--predict", 8, "--seed", 5, "--workers", 2)
EPOCHS = 4


# --- Generated folders ---


def check_split(folder: Path, count: int) -> dict[str, bytes]:
    """Exactly IDs 0..count-1, once each, every image whole; no temporaries. Returns name -> bytes."""
    names = sorted(os.listdir(folder))
    assert not [n for n in names if n.startswith(writer.TMP_PREFIX)], "temporary files left"
    matches = [writer.NAME_RE.match(n) for n in names]
    assert all(matches), [n for n, m in zip(names, matches, strict=True) if not m]
    ids = sorted(int(m["id"]) for m in matches)
    assert ids == list(range(count)), "missing or duplicated IDs"
    for name in names:
        with Image.open(folder / name) as image:
            image.verify()  # structure and CRCs
        with Image.open(folder / name) as image:
            image.load()  # every pixel decodes
    tally("generated images checked (verify + load)", len(names))
    return {n: (folder / n).read_bytes() for n in names}


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def gen_reference(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The same command run without a fault: the bytes every resumed run must end with."""
    out = tmp_path_factory.mktemp("gen_ref")
    result = run_script("captcha_gen.py", *GEN_ARGS, "--out", out, logs=out.parent / f"{out.name}-logs")
    assert result.code == 0, result.stderr
    return {split: check_split(out / split, n) for split, n in GEN_COUNTS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("target, seed", [("main process", 101), ("process group", 202), ("main process", 303)])
def test_gen_killed_at_a_random_moment_then_rerun_ends_exactly_as_an_unbroken_run(tmp_path, gen_reference, target, seed):
    out, logs = tmp_path / "data", tmp_path / "logs"
    run = start_script("captcha_gen.py", *GEN_ARGS, "--out", out, logs=logs)
    train = out / "train"
    assert wait_for(lambda: train.is_dir() and any(n.endswith(".png") for n in os.listdir(train)), run=run), run.stderr
    workers = children(run.pid)
    time.sleep(random.Random(seed).uniform(0.0, 0.5))  # a seeded random moment once images flow
    run.kill(group=target == "process group")
    assert run.wait() == -9, "the run ended before the kill: nothing was injected"
    tally("captcha_gen.py runs killed with kill -9")
    # Pool workers die with the main process, not orphaned to keep writing beside the rerun.
    assert wait_for(lambda: not any(alive(p) for p in workers), timeout=10), "orphaned pool workers"
    left = [n for s in GEN_COUNTS if (out / s).is_dir() for n in os.listdir(out / s)]
    assert len(left) < sum(GEN_COUNTS.values())
    temps = sum(n.startswith(writer.TMP_PREFIX) for n in left)
    tally("whole images present when killed", len(left) - temps)
    tally("half-written temporaries left by the kill (removed by the rerun)", temps)
    again = run_script("captcha_gen.py", *GEN_ARGS, "--out", out, logs=logs)
    assert again.code == 0, again.stderr
    tally("captcha_gen.py runs resumed")
    for split, count in GEN_COUNTS.items():
        assert check_split(out / split, count) == gen_reference[split], f"{split}: not byte-identical to the unbroken run"
        tally("images byte-identical to the unbroken run", count)


@pytest.mark.slow
def test_gen_on_a_full_disk_fails_with_one_line_and_leaves_no_partial_image(tmp_path, gen_reference):
    out, logs = tmp_path / "data", tmp_path / "logs"
    # RLIMIT_FSIZE: the first write past 3,000 bytes fails with EFBIG, as a full disk fails with ENOSPC.
    full = run_script("captcha_gen.py", *GEN_ARGS, "--out", out, logs=logs, fsize=3000)
    assert full.code == 2 and "Traceback" not in full.stderr, full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"captcha_gen.py: error: --out {out / 'train'}: cannot write images (File too large); "), last
    leftovers = os.listdir(out / "train")
    assert not [n for n in leftovers if n.startswith(writer.TMP_PREFIX)]
    for name in leftovers:  # whatever fitted is whole
        with Image.open(out / "train" / name) as image:
            image.load()
    again = run_script("captcha_gen.py", *GEN_ARGS, "--out", out, logs=logs)
    assert again.code == 0, again.stderr
    for split, count in GEN_COUNTS.items():
        assert check_split(out / split, count) == gen_reference[split]
    tally("disk-full runs stopped with one line, nothing half-written")
    tally("disk-full runs finished by running the same command again")


class StuckImage:
    """A captcha whose save() fails (index 0) or hangs midway (every other index), written by a real pool.

    Image 0's worker waits until another worker has half-written its temporary, then hits a full disk;
    the pool then terminates that other worker in the middle of its write. The same moment the
    RLIMIT_FSIZE run above reaches only by luck, reached every time.
    """

    def __init__(self, index: int):
        self.index = index

    def save(self, path, format):  # PIL's signature
        Path(path).write_bytes(b"\x89PNG half an image")
        if self.index:
            time.sleep(60)  # "still writing" when the pool terminates this worker
            return
        folder = Path(path).parent
        wait_for(lambda: any(p.name != Path(path).name for p in folder.glob(f"{writer.TMP_PREFIX}*")), timeout=30)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_gen_worker_failing_midway_leaves_no_temporary_of_any_worker(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(synth.CaptchaFactory, "make_seeded", lambda self, seed, split, index: ("ABCD", StuckImage(index)))
    started = time.monotonic()
    code, _, err = cli(captcha_gen.main, "--train", 40, "--test", 0, "--predict", 0, "--out", tmp_path, "--workers", 2)
    folder = tmp_path / "train"
    assert code == 2 and "Traceback" not in err, err
    want = f"error: --out {folder}: cannot write images (No space left on device); free some space, then run the same command to finish"
    assert err.strip().splitlines()[-1].endswith(want), err
    assert time.monotonic() - started < 30, "the stuck worker was waited for, not terminated"
    assert os.listdir(folder) == []  # neither the failed image's temporary nor the terminated worker's
    tally("worker writes cut off by a failing one, temporaries removed")


def test_gen_refuses_to_start_without_room_for_the_images(tmp_path, cli, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100_000))
    code, _, err = cli(captcha_gen.main, "--train", 1000, "--test", 0, "--predict", 0, "--out", tmp_path)
    assert code == 2 and "--out " in err and ": only 0.1 MB free, about 4.8 MB needed; free some space" in err, err
    assert list((tmp_path / "train").iterdir()) == []  # refused before the first image


# --- Training ---

TrainRun = namedtuple("TrainRun", "model last history")


def train_args(data: Path, model: Path) -> tuple:
    return (
        "--train-dir", data / "train", "--val-dir", data / "test", "--model", model, "--epochs", EPOCHS,
        "--batch-size", 32, "--device", "cpu", "--threads", 1, "--workers", 1, "--seed", 3,
    )  # fmt: skip


def run_paths(model: Path) -> TrainRun:
    return TrainRun(model, resume.run_files(model)[0] / "last.pkl", resume.run_files(model)[0] / "history.csv")


def load_safely(path: Path) -> dict:
    """What every script does: weights_only=True. A corrupt file fails here."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["format"] == "captcha-toolkit/1" and ckpt["state_dict"]
    tally("model files loaded with weights_only=True")
    return ckpt


def history_epochs(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def temporaries(model: Path) -> list[Path]:
    return [p for folder in (model.parent, resume.run_files(model)[0]) if folder.exists() for p in folder.glob(f".*{TMP_MARK}*")]


@pytest.fixture(scope="module")
def train_reference(tiny_data, tmp_path_factory) -> TrainRun:
    """The unbroken run every interrupted one is compared with."""
    model = tmp_path_factory.mktemp("train_ref") / "model.pkl"
    result = run_script("captcha_train.py", *train_args(tiny_data, model), logs=model.parent / "logs")
    assert result.code == 0, result.stderr
    return run_paths(model)


def assert_same_run(paths: TrainRun, reference: TrainRun) -> None:
    """Every epoch once, the final state equal to the unbroken run's, nothing corrupt, no temporaries."""
    assert history_epochs(paths.history) == list(range(1, EPOCHS + 1))
    final, want = load_safely(paths.last), load_safely(reference.last)
    assert final["train_state"]["epoch"] == EPOCHS
    for name, tensor in want["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), f"{name} differs from the unbroken run"
    tally("weight tensors equal to the unbroken run's", len(want["state_dict"]))
    load_safely(paths.model)
    assert temporaries(paths.model) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 8])
def test_train_killed_during_an_epoch_resumes_from_the_last_complete_one(tiny_data, tmp_path, train_reference, seed):
    paths = run_paths(tmp_path / "model.pkl")
    run = start_script("captcha_train.py", *train_args(tiny_data, paths.model), logs=tmp_path / "logs")
    assert wait_for(paths.last.exists, timeout=300, run=run), run.stderr  # epoch 1 is saved
    time.sleep(random.Random(seed).uniform(0.0, 0.6))  # somewhere in epoch 2 (or 3)
    run.kill()
    assert run.wait() == -9, "training ended before the kill: nothing was injected"
    tally("captcha_train.py runs killed during an epoch")
    done = load_safely(paths.last)["train_state"]["epoch"]
    assert 1 <= done < EPOCHS
    tally("last complete epoch when killed", done)
    assert len(history_epochs(paths.history)) <= done + 1  # at most the running epoch is lost
    load_safely(paths.model)
    resumed = run_script("captcha_train.py", *train_args(tiny_data, paths.model), "--resume", logs=tmp_path / "logs")
    assert resumed.code == 0, resumed.stderr
    assert f"resuming {paths.last} after epoch {done} of {EPOCHS}" in resumed.stdout
    tally("captcha_train.py runs resumed")
    tally("epochs lost to kills (redone on --resume)", 1)
    assert_same_run(paths, train_reference)


def kill_while_saving(tiny_data, tmp_path, fault: str):
    """Train with a CAPTCHA_FAULT hook that kill -9s the run mid-checkpoint; -> (paths, args, the half file)."""
    paths = run_paths(tmp_path / "model.pkl")
    args = train_args(tiny_data, paths.model)
    killed = run_script("captcha_train.py", *args, logs=tmp_path / "logs", env={"CAPTCHA_FAULT": fault})
    assert killed.code == -9
    tally("captcha_train.py runs killed while writing a checkpoint")
    (half,) = temporaries(paths.model)
    tally("half-written temporaries left by the kill (removed by the rerun)")
    return paths, args, half


@pytest.mark.slow
def test_train_killed_while_writing_last_pkl_keeps_the_previous_one(tiny_data, tmp_path, train_reference):
    # The hook cuts the second last.pkl (epoch 2) to half a file, then kill -9s the process.
    paths, args, half = kill_while_saving(tiny_data, tmp_path, "kill-during-save:last.pkl:2")
    assert half.parent == paths.last.parent and half.stat().st_size < paths.last.stat().st_size
    with pytest.raises(Exception):  # noqa: B017 - whatever torch says, the half file does not load
        torch.load(half, map_location="cpu", weights_only=True)
    assert load_safely(paths.last)["train_state"]["epoch"] == 1  # the complete epoch 1, untouched
    load_safely(paths.model)
    resumed = run_script("captcha_train.py", *args, "--resume", logs=tmp_path / "logs")
    assert resumed.code == 0, resumed.stderr
    assert f"resuming {paths.last} after epoch 1 of {EPOCHS}" in resumed.stdout
    tally("captcha_train.py runs resumed")
    tally("epochs lost to kills (redone on --resume)", 1)
    assert_same_run(paths, train_reference)  # the half file is gone too


@pytest.mark.slow
def test_train_killed_while_writing_the_first_model_pkl_loses_only_that_epoch(tiny_data, tmp_path, train_reference):
    paths, args, half = kill_while_saving(tiny_data, tmp_path, "kill-during-save:model.pkl:1")
    assert half.parent == paths.model.parent
    assert not paths.model.exists() and not paths.last.exists()  # no corrupt model under the real name
    nothing = run_script("captcha_train.py", *args, "--resume", logs=tmp_path / "logs")
    assert one_error_line(nothing, "captcha_train.py").startswith(f"--resume: nothing to resume at {paths.last} or {paths.model}; ")
    again = run_script("captcha_train.py", *args, logs=tmp_path / "logs")
    assert again.code == 0, again.stderr
    tally("epochs lost to kills (redone on --resume)", 1)
    assert_same_run(paths, train_reference)


@pytest.mark.slow
def test_train_on_a_full_disk_stops_with_one_line_and_no_partial_model(tiny_data, tmp_path):
    s = Settings()
    pack_folder(tiny_data / "train", s.width, s.height)  # the cache (2.9 MB) fits; a checkpoint does not
    pack_folder(tiny_data / "test", s.width, s.height)
    paths = run_paths(tmp_path / "model.pkl")
    full = run_script("captcha_train.py", *train_args(tiny_data, paths.model), logs=tmp_path / "logs", fsize=4_000_000)
    assert full.code == 2 and "Traceback" not in full.stderr, full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"captcha_train.py: error: {paths.model}: cannot save the model (File too large); free some space"), last
    assert not paths.model.exists() and not paths.last.exists() and temporaries(paths.model) == []
    tally("disk-full runs stopped with one line, nothing half-written")


def test_train_refuses_to_start_without_room_for_its_checkpoints(tiny_data, tmp_path, cli, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    model = tmp_path / "model.pkl"
    code, out, err = cli(captcha_train.main, *train_args(tiny_data, model))
    assert code == 2 and ": only 1.0 MB free, about " in err and "MB needed; free some space" in err, err
    assert "epoch" not in out and not model.exists() and not resume.run_files(model)[0].joinpath("history.csv").exists()


# --- Read-only output folders (modes enforced even for root: see script_runner.drop_dac_capabilities) ---


@pytest.fixture
def read_only(tmp_path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def test_read_only_outputs_are_refused_before_any_work(tiny_data, tiny_model, tmp_path, read_only):
    logs = tmp_path / "logs"
    cases = [
        ("captcha_gen.py", ("--train", 5, "--test", 0, "--predict", 0, "--out", read_only), f"--out {read_only}: "),
        ("captcha_gen.py", ("--train", 5, "--test", 0, "--predict", 0, "--out", read_only / "sub"), f"--out {read_only / 'sub'}: "),
        ("captcha_train.py", train_args(tiny_data, read_only / "model.pkl"), f"--model {read_only}: "),
        ("captcha_test.py", ("--model", tiny_model, "--data", tiny_data / "test", "--json", read_only / "m.json"), f"--json {read_only}: "),
        (
            "captcha_test.py",
            ("--model", tiny_model, "--data", tiny_data / "test", "--report", read_only / "r"),
            f"--report {read_only / 'r'}: ",
        ),
        ("captcha_export.py", ("--model", tiny_model, "--slim", read_only / "s.pkl"), f"--slim {read_only}: "),
        ("captcha_export.py", ("--model", tiny_model, "--onnx", read_only / "m.onnx"), f"--onnx {read_only}: "),
        ("captcha_dataset.py", ("split", tiny_data / "test", "--link", "--out", read_only), f"--out {read_only}: "),
        ("captcha_server.py", ("--model", tiny_model, "--save-dir", read_only, "--port", 0), f"--save-dir {read_only}: "),
    ]
    for script, args, start in cases:
        result = run_script(script, *args, logs=logs, read_only=True)
        message = one_error_line(result, script)
        assert message.startswith(start) and "cannot write there (Permission denied); choose another folder" in message, message
        assert "epoch" not in result.stdout and "test:" not in result.stdout  # refused before the work
        tally("read-only outputs refused")
    assert os.listdir(read_only) == []


# What each writer says when the disk fills midway (RLIMIT_FSIZE of 3,000 bytes): no check before the
# work can see that coming, so the write itself fails, atomic_path drops its temporary, and run_cli
# turns the OSError into one line naming the file.
DISK_FULL_WRITERS = {
    "export --slim": ("captcha_export.py", lambda d, m, o: ("--model", m, "--slim", o / "s.pkl"), "{o}/s.pkl: cannot save the model"),
    "export --onnx": ("captcha_export.py", lambda d, m, o: ("--model", m, "--onnx", o / "m.onnx"), "{o}/m.onnx: cannot write"),
    "test --json": (
        "captcha_test.py",
        lambda d, m, o: ("--model", m, "--data", d / "test", "--json", o / "m.json"),
        "{o}/m.json: cannot write",
    ),
    "test --report": (
        "captcha_test.py",
        lambda d, m, o: ("--model", m, "--data", d / "test", "--report", o),
        "{o}/errors.png: cannot write",
    ),
}


@pytest.mark.parametrize("case", list(DISK_FULL_WRITERS))
def test_a_full_disk_midway_gives_one_line_and_no_partial_file(case, tiny_data, tiny_model, tmp_path):
    if case == "export --onnx":
        pytest.importorskip("onnx", reason='ONNX is an optional extra: pip install -e ".[onnx]"')
    script, make_args, start = DISK_FULL_WRITERS[case]
    out = tmp_path / "out"
    out.mkdir()
    result = run_script(script, *make_args(tiny_data, tiny_model, out), logs=tmp_path / "logs", fsize=3000)
    message = one_error_line(result, script)
    assert message.startswith(start.format(o=out) + " (File too large); free some space"), message
    assert [p.name for p in out.rglob("*")] == []  # nothing half-written, no temporary
    tally("disk-full runs stopped with one line, nothing half-written")


@pytest.mark.parametrize(
    "error, line",
    [
        (OSError(errno.ENOSPC, "No space left on device", "/out/m.json"), "/out/m.json: cannot write (No space left on device); free"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "cannot write (Disk quota exceeded); free some space and run again"),
        (PermissionError(errno.EACCES, "Permission denied", "/out"), "/out: Permission denied; choose another path or change"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/x"), "/mnt/x: Read-only file system; choose another path"),
    ],
)
def test_run_cli_turns_a_full_disk_or_unwritable_path_met_anywhere_into_one_line(error, line, capsys):
    def main(argv):
        raise error

    assert run_cli(main, []) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f": error: {line}" in err, err


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error", "/x"), PermissionError(errno.EACCES, "Permission denied")])
def test_run_cli_keeps_the_traceback_of_other_os_errors(error):
    def main(argv):
        raise error

    with pytest.raises(OSError):  # a bug or a broken disk: the traceback is what helps
        run_cli(main, [])


def test_gen_refuses_a_read_only_split_folder_before_drawing(tmp_path):
    out = tmp_path / "data"
    (out / "test").mkdir(parents=True)
    (out / "test").chmod(0o555)
    result = run_script("captcha_gen.py", "--train", 5, "--test", 5, "--predict", 0, "--out", out, logs=tmp_path / "logs", read_only=True)
    assert one_error_line(result, "captcha_gen.py").startswith(f"--out {out / 'test'}: cannot write there (Permission denied)")
    assert not (out / "train").exists() or os.listdir(out / "train") == []  # nothing drawn before the check
    (out / "test").chmod(0o755)


def test_the_fault_hook_is_inert_unless_set(tmp_path, monkeypatch):
    from captchakit import checkpoint as captcha_checkpoint
    from captchakit.model import CaptchaCNN

    model = CaptchaCNN(Settings(length=2, width=32, height=16))
    monkeypatch.delenv("CAPTCHA_FAULT", raising=False)
    captcha_checkpoint.save_checkpoint(tmp_path / "a.pkl", model, {})
    monkeypatch.setenv("CAPTCHA_FAULT", "kill-during-save:other.pkl")  # another file's name: no effect here
    captcha_checkpoint.save_checkpoint(tmp_path / "a.pkl", model, {})
    assert load_safely(tmp_path / "a.pkl")["format"] and temporaries(tmp_path / "a.pkl") == []


def test_test_json_is_written_whole(tiny_data, tiny_model, tmp_path, cli):
    out = tmp_path / "m.json"
    code, _, _ = cli(captcha_test.main, "--model", tiny_model, "--data", tiny_data / "test", "--json", out)
    assert code == 0 and out.read_text().strip().endswith("}") and list(tmp_path.glob(f".*{TMP_MARK}*")) == []
