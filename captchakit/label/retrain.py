"""Retraining on the labels given so far, in the background, while the person goes on labelling.

One run is a `captcha_train.py` process of its own: training takes every core and much memory, and a
run that fails (too few labels of some length, a full disk) fails alone, with its last line on the page.
It trains on the folder's labels.csv, holds a validation share out of it and no test share (every label
is wanted for learning; the person checks the readings anyway), starts its convolution layers from the
model in use (fine-tuning learns from few labels what a fresh network could not), and writes
DIR/label_model.pkl. The new model then reads the images left and the store sorts them again.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import deque
from pathlib import Path

from captchakit.label.reading import LABEL_MODEL, Reader
from captchakit.label.store import LabelStore

MIN_LABELS = 10  # fewer are too few to hold a validation share out of and still learn from
EPOCH_LINE = re.compile(r"\bepoch (\d+)/(\d+)(?::\s*(\d+)%)?")  # "epoch 3/40: 55%|..." while it runs, "epoch 3/40  loss" after


class Busy(Exception):
    """A retraining is already running."""


class Retrainer:
    """Runs one retraining at a time and says how it goes (`status`)."""

    def __init__(self, store: LabelStore, train_command: list[str], device: str = "auto", epochs: int | None = None, model=None):
        self.store, self.train_command, self.device, self.epochs = store, list(train_command), device, epochs
        self.model = Path(model) if model is not None else None  # the model in use: the next run starts from it
        self.state, self.message, self.progress = "idle", "", None
        self.tail: deque[str] = deque(maxlen=20)
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.stopping = False

    def command(self, init_from: bool = True) -> list[str]:
        folder = self.store.folder.resolve()
        cmd = [*self.train_command, "--train-dir", str(folder), "--labels", str(self.store.labels_path.resolve())]
        cmd += ["--model", str(folder / LABEL_MODEL), "--test-split", "0", "--device", self.device]
        if init_from and self.model is not None and self.model.suffix.lower() == ".pkl":
            cmd += ["--init-from", str(self.model.resolve())]
        if self.epochs:
            cmd += ["--epochs", str(self.epochs)]
        return cmd

    def status(self) -> dict:
        with self.lock:
            return {"state": self.state, "message": self.message, "progress": self.progress, "min_labels": MIN_LABELS}

    def _set(self, state: str | None = None, message: str | None = None, progress: float | None = None) -> None:
        with self.lock:
            self.state = state or self.state
            self.message = self.message if message is None else message
            self.progress = progress

    def start(self) -> None:
        """Start a run in the background; Busy while one runs, ValueError when too few images are labelled."""
        with self.lock:
            if self.state in ("training", "reading"):
                raise Busy("a retraining is already running")
            labelled = self.store.counts()["labelled"]
            if labelled < MIN_LABELS:
                raise ValueError(f"{labelled} image(s) labelled: label at least {MIN_LABELS} before retraining")
            self.state, self.message, self.progress = "training", f"training on {labelled} labels", 0.0
            self.thread = threading.Thread(target=self._run, name="retrain", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            failure = self._train(self.command())
            if failure and "--init-from" in failure and not self.stopping:  # the model in use has another shape: start fresh
                failure = self._train(self.command(init_from=False))
            if failure:
                self._set("failed", f"retraining failed: {failure}")
                return
            if not self.stopping:
                self._reload()
        except Exception as err:  # a background failure must show on the page, not vanish with the thread
            self._set("failed", f"retraining failed: {type(err).__name__}: {err}")

    def _train(self, cmd: list[str]) -> str | None:
        """Run one training process, following its output; None when it succeeded, else its last line."""
        self.tail.clear()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines as they come, for the progress
        with self.lock:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace")
        for line in self.proc.stdout:  # tqdm's \r updates arrive as lines too (universal newlines)
            self._follow(line.strip())
        code = self.proc.wait()
        if code == 0:
            return None
        return self.tail[-1] if self.tail else f"captcha_train.py exited with status {code}"

    def _follow(self, line: str) -> None:
        if not line:
            return
        self.tail.append(line)
        found = EPOCH_LINE.search(line)
        progress = self.progress
        if found:
            done = int(found[1]) - 1 + int(found[3]) / 100 if found[3] else int(found[1])
            progress = min(done / max(int(found[2]), 1), 1.0)
        self._set(message=line[-160:], progress=progress)

    def _reload(self) -> None:
        path = self.store.folder / LABEL_MODEL
        self._set("reading", f"reading the images left with the new {LABEL_MODEL}", None)
        reader = Reader(path, self.device)
        count = reader.apply(self.store)
        self.model = path
        self._set("done", f"retrained: {count:,} image(s) read again with {reader.describe()}; least confident first", None)

    def stop(self) -> None:
        """End a running training process (the server is stopping)."""
        self.stopping = True
        with self.lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
