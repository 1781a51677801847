"""Run the top-level scripts as real processes, the way a user does, and inject faults into them.

Two ways to start `captcha_x.py ARGS`:
- fresh: `python captcha_x.py ARGS`, a new interpreter (importing torch costs ~7 s on the shared
  2-core box);
- forked (the default): a child of a multiprocessing fork server that has torch and the captcha
  modules imported already. The child sets sys.argv and runs the script file as `__main__`, exactly
  what the interpreter does with `python captcha_x.py`, and exits with its status; an uncaught
  exception prints a traceback and exits 1, as the interpreter would. It is a separate process with
  its own stdout, stderr and exit status, so kill -9, resource limits and dropped privileges act on
  it as on a fresh one, in milliseconds instead of seconds.

Faults a run can carry: `fsize` (RLIMIT_FSIZE: writes past that many bytes fail, a full disk as the
process sees it), `read_only` (drop the capabilities that let root write where modes say no, so a
chmod 0o555 folder really is read-only), `env` (e.g. CAPTCHA_FAULT=kill-during-save:3).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import re
import resource
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["torch", "numpy", "PIL.Image", "captcha.image", "captcha_gen", "captcha_train", "captcha_test", "captcha_predict"]
TALLY_ENV = "CAPTCHA_RELIABILITY_LOG"

# Linux capability numbers (linux/capability.h): the ones that let root ignore file modes.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3


def tally(key: str, n: int = 1) -> None:
    """Count what the fault tests did (runs killed, files checked...) for docs/RELIABILITY.md."""
    path = os.environ.get(TALLY_ENV)
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]  # "tests/x.py::name[param] (call)"
        with open(path, "a") as f:
            f.write(json.dumps({"key": key, "n": n, "test": test}) + "\n")


def summarize(path: str) -> str:
    """The tally as text: per test what it counted, then the totals.

    CAPTCHA_RELIABILITY_LOG=/tmp/r.jsonl pytest -q tests/test_faults.py tests/test_security.py tests/test_properties.py
    python tests/script_runner.py /tmp/r.jsonl
    """
    per_test: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            counts = per_test.setdefault(row.get("test") or "?", {})
            counts[row["key"]] = counts.get(row["key"], 0) + row["n"]
            totals[row["key"]] = totals.get(row["key"], 0) + row["n"]
    lines = []
    for test, counts in per_test.items():
        lines.append(f"{test}: " + "; ".join(f"{k} {v:,}" for k, v in counts.items()))
    lines.append("totals: " + "; ".join(f"{k} {v:,}" for k, v in totals.items()))
    return "\n".join(lines)


def drop_dac_capabilities() -> None:
    """Make file modes bind this process even when it runs as root (tests here do)."""
    if os.geteuid() != 0:
        return  # modes already bind a normal user

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    keep = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_FOWNER)) & 0xFFFFFFFF
    data[0].effective &= keep
    data[0].permitted &= keep
    data[0].inheritable &= keep
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _apply_faults(fsize: int | None, read_only: bool, new_session: bool) -> None:
    if new_session:
        os.setsid()  # its own process group, so pool workers can be killed with it
    if fsize is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    if read_only:
        drop_dac_capabilities()


def _forked_child(script, argv, cwd, env, out_path, err_path, fsize, read_only, new_session) -> None:
    """Body of a forked run: what `python script argv...` does, then exit with its status."""
    code = 1
    try:
        for fd, path in ((1, out_path), (2, err_path)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.environ.update(env)
        os.chdir(cwd)
        _apply_faults(fsize, read_only, new_session)
        sys.argv = [script, *argv]
        sys.path[0:0] = [str(Path(script).resolve().parent)]
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


@dataclass
class ScriptRun:
    """A started script: kill it, wait for it, read what it printed."""

    script: str
    pid: int
    out_path: Path
    err_path: Path
    handle: object  # multiprocessing.Process or subprocess.Popen
    started: float
    new_session: bool

    def alive(self) -> bool:
        if isinstance(self.handle, subprocess.Popen):
            return self.handle.poll() is None
        return self.handle.is_alive()

    def kill(self, group: bool | None = None) -> None:
        """kill -9 the script (and with group, its whole process group: pool workers too)."""
        group = self.new_session if group is None else group
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float = 120) -> int:
        """Exit status; a negative number is the signal that ended it (-9 for kill -9)."""
        if isinstance(self.handle, subprocess.Popen):
            try:
                return self.handle.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(True)
                self.handle.wait()
                raise
        self.handle.join(timeout)
        if self.handle.exitcode is None:
            self.kill(True)
            self.handle.join()
            raise TimeoutError(f"{self.script} still running after {timeout} s")
        return self.handle.exitcode

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""


_counter = 0


def start_script(
    script: str,
    *args,
    logs: Path,
    cwd: Path | None = None,
    env: dict | None = None,
    fsize: int | None = None,
    read_only: bool = False,
    fresh: bool = False,
    new_session: bool = True,
) -> ScriptRun:
    """Start `python ROOT/script args...`; its stdout and stderr go to files under `logs`."""
    global _counter
    _counter += 1
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(script).stem}-{_counter}"
    out_path, err_path = logs / f"{stem}.out", logs / f"{stem}.err"
    path, argv = str(ROOT / script), [str(a) for a in args]
    cwd = Path(cwd or ROOT)
    env = {k: str(v) for k, v in (env or {}).items()}
    if fresh:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            handle = subprocess.Popen(
                [sys.executable, path, *argv],
                cwd=cwd,
                env={**os.environ, **env},
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda: _apply_faults(fsize, read_only, new_session),
            )
        pid = handle.pid
    else:
        handle = _forkserver().Process(
            target=_forked_child, args=(path, argv, str(cwd), env, str(out_path), str(err_path), fsize, read_only, new_session)
        )
        handle.start()
        pid = handle.pid
    tally("script runs")
    return ScriptRun(script, pid, out_path, err_path, handle, time.monotonic(), new_session)


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str


def run_script(script: str, *args, timeout: float = 120, **kwargs) -> Finished:
    """Run a script to the end: (exit status, stdout, stderr)."""
    run = start_script(script, *args, **kwargs)
    code = run.wait(timeout)
    return Finished(code, run.stdout, run.stderr)


def one_error_line(result: Finished, script: str) -> str:
    """The single stderr line of a refused run, after checking it is exactly one line, status 2."""
    lines = result.stderr.splitlines()
    assert result.code == 2, f"exit {result.code}, stderr: {result.stderr[-2000:]}"
    assert len(lines) == 1, f"stderr is not one line: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"{script}: error: "), lines[0]
    return lines[0][len(f"{script}: error: ") :]


def wait_for(predicate, timeout: float = 60, step: float = 0.01, run: ScriptRun | None = None) -> bool:
    """Poll until predicate() holds; False if `run` ended first or the time ran out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if run is not None and not run.alive():
            return bool(predicate())
        time.sleep(step)
    return False


if __name__ == "__main__":
    print(summarize(sys.argv[1]))


def start_listening(script: str, *args, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Run `python script ARGS` (a server that prints its URL first) as a fresh process; (process,
    base URL http://127.0.0.1:PORT) once it listens, or the test fails with what it printed."""
    import pytest

    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(timeout, proc.kill)  # a server that never starts must not hang the suite
    killer.start()
    line = proc.stdout.readline()
    killer.cancel()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not found:
        proc.kill()
        pytest.fail(f"{script} did not start: {line}{proc.stderr.read()}")
    return proc, f"http://127.0.0.1:{found[1]}"
