"""A folder being labelled by hand: its images, the answers given so far, and the order the rest are shown in.

The answers live in two files inside the folder, each rewritten whole and atomically (files.atomic_path)
the moment an answer is given, so that Ctrl+C, a crash or a closed tab loses nothing already answered
and a restart goes on where it stopped:

- `labels.csv`: `filename,label` lines under a header, the format data/labels.py reads, so that
  `captcha_train.py --train-dir DIR --labels DIR/labels.csv` trains on exactly these images;
- `unreadable.txt`: one file name per line, the images a person could not read. They are never shown
  again and, being absent from labels.csv, never trained on.

labels.csv is always written before unreadable.txt, and an image found in both counts as labelled: a
crash between the two writes then leaves the newer answer, or (unreadable after labelled) neither, which
only shows the image again. Entries of an existing labels.csv that name no image of the folder, or give
an empty label, are written back as they were. The images still to label are shown least confident
first; a skipped one goes to the back of the queue for this session only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from captchakit.data.images import list_images
from captchakit.data.labels import match_folder, read_labels_file, write_labels_file
from captchakit.errors import UserError
from captchakit.files import atomic_path, remove_stale_temps

LABELS_FILE = "labels.csv"
UNREADABLE_FILE = "unreadable.txt"
UNREADABLE_HEADER = "# images marked unreadable by captcha_label.py: never shown again, never trained on"
MAX_LABEL = 64  # longer than any captcha; a longer answer is a slip of the keyboard


class Reading(NamedTuple):
    """What the model read in one image; confidence None when there is no reading."""

    text: str
    confidence: float | None


NO_READING = Reading("", None)


def check_label(text: str) -> str:
    """The label a person typed, stripped; ValueError (one line) when it cannot be a label."""
    label = text.strip()
    if not label:
        raise ValueError("empty label: type the text, skip the image, or mark it unreadable")
    if any(c.isspace() or not c.isprintable() for c in label):
        raise ValueError(f"label {label!r}: labels hold no spaces or control characters")
    if len(label) > MAX_LABEL:
        raise ValueError(f"label of {len(label)} characters: at most {MAX_LABEL}")
    return label


def read_existing_labels(path: Path, names: list[str], folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(image name -> label, entries to keep as they are) from an existing labels file; both empty when there is none."""
    if not path.exists():
        return {}, {}
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not lines or lines == ["filename,label"]:  # what this module leaves after every label was taken back
        return {}, {}
    found = read_labels_file(path, "labels file")
    matched = match_folder(found, names, folder)
    kept = {name: found.labels[name] for name in matched.unknown}
    kept.update(dict.fromkeys(found.empty, ""))
    return matched.labels, kept


def read_unreadable(path: Path) -> set[str]:
    if not path.exists():
        return set()
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line and not line.startswith("#")}


class LabelStore:
    """The folder's images and answers, safe to use from several threads (the web app's and the retrainer's)."""

    def __init__(self, folder, flag: str = "DIR"):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            why = "not a folder" if self.folder.exists() else "folder not found"
            raise UserError(f"{flag} {self.folder}: {why}; pass the folder that holds the captchas to label")
        self.names = [entry.name for entry in list_images(self.folder)]
        if not self.names:
            raise UserError(f"{flag} {self.folder}: no images (png, jpg, gif, bmp or webp) in it; pass the folder that holds the captchas")
        self.known = set(self.names)
        self.labels_path, self.unreadable_path = self.folder / LABELS_FILE, self.folder / UNREADABLE_FILE
        for path in (self.labels_path, self.unreadable_path):
            remove_stale_temps(path)  # what a killed run's atomic write left behind
        self.labels, self.kept = read_existing_labels(self.labels_path, self.names, self.folder)
        self.unreadable = read_unreadable(self.unreadable_path) - set(self.labels)
        self.readings: dict[str, Reading] = {}
        self.problem: Callable[[str], str | None] | None = None  # why the model cannot write a label, if it cannot
        self.model = "no model"
        self.version = 0  # goes up whenever the readings change (a retrained model)
        self.skipped: list[str] = []  # skipped this session, in the order they were skipped
        self.lock = threading.RLock()
        self.queue = self._ordered()

    # --- reading and order -----------------------------------------------------------------

    def todo(self) -> list[str]:
        """The images with no answer yet, in file-name order."""
        with self.lock:
            return [n for n in self.names if n not in self.labels and n not in self.unreadable]

    def _ordered(self) -> list[str]:
        """Least confident first (no reading counts as the least), skipped ones last in the order they were skipped."""
        later = set(self.skipped)
        first = [n for n in self.todo() if n not in later]
        first.sort(key=lambda n: (self.reading(n).confidence is not None, self.reading(n).confidence or 0.0, n))
        return first + [n for n in self.skipped if n not in self.labels and n not in self.unreadable]

    def reading(self, name: str) -> Reading:
        return self.readings.get(name, NO_READING)

    def use(self, model: str, readings: dict[str, Reading], problem: Callable[[str], str | None] | None) -> None:
        """Take a model's readings (a new model's, after retraining) and sort what is left by them."""
        with self.lock:
            self.model, self.readings, self.problem = model, dict(readings), problem
            self.version += 1
            self.queue = self._ordered()

    def misfit(self) -> str | None:
        """Why the readings are hidden: most labels given so far are texts the model cannot write
        (another charset or length), so its readings would only have to be typed over; else None."""
        with self.lock:
            if self.problem is None or not self.labels:
                return None
            problems = [p for p in map(self.problem, self.labels.values()) if p]
            if 2 * len(problems) <= len(self.labels):
                return None
            return (
                f"{len(problems)} of {len(self.labels)} labels do not fit the model ({problems[0]}): "
                "its readings are hidden until it is retrained"
            )

    # --- answers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _change(self, name: str):
        """Change the answers under the lock; when saving fails, memory goes back to what it was, so
        that the page hears of the failure and the image stays to answer (labels.csv is written first:
        if only it was, the image counts as labelled at the next start, as it would have)."""
        with self.lock:
            if name not in self.known:
                raise KeyError(name)
            before = (dict(self.labels), set(self.unreadable), list(self.queue))
            try:
                yield
            except BaseException:
                self.labels, self.unreadable, self.queue = before
                raise

    def answer(self, name: str, text: str) -> str:
        """Save `text` as the label of image `name` (a new answer replaces an older one); the label saved."""
        label = check_label(text)
        with self._change(name):
            self.labels[name] = label
            was_unreadable = name in self.unreadable
            self.unreadable.discard(name)
            self._done(name)
            self._save_labels()
            if was_unreadable:
                self._save_unreadable()
        return label

    def mark_unreadable(self, name: str) -> None:
        """Record image `name` as unreadable: not shown again, not trained on."""
        with self._change(name):
            was_labelled = self.labels.pop(name, None) is not None
            self.unreadable.add(name)
            self._done(name)
            if was_labelled:
                self._save_labels()
            self._save_unreadable()

    def skip(self, name: str) -> None:
        """Show image `name` again after all the others (this session only: nothing is written)."""
        with self.lock:
            if name not in self.known:
                raise KeyError(name)
            if name not in self.queue:
                return
            self.queue.remove(name)
            self.queue.append(name)
            with contextlib.suppress(ValueError):
                self.skipped.remove(name)
            self.skipped.append(name)

    def _done(self, name: str) -> None:
        with contextlib.suppress(ValueError):
            self.queue.remove(name)

    def _save_labels(self) -> None:
        rows = {**self.kept, **self.labels}
        if not any(rows.values()):  # a labels file without a label is an error to every reader of labels files
            self.labels_path.unlink(missing_ok=True)
            return
        with atomic_path(self.labels_path, suffix=".csv") as tmp:
            write_labels_file(tmp, rows)

    def _save_unreadable(self) -> None:
        with atomic_path(self.unreadable_path, suffix=".txt") as tmp:
            Path(tmp).write_text("\n".join([UNREADABLE_HEADER, *sorted(self.unreadable)]) + "\n", encoding="utf-8")

    # --- what the page shows -----------------------------------------------------------------

    def counts(self) -> dict:
        with self.lock:
            labelled = sum(n in self.known for n in self.labels)
            unreadable = sum(n in self.known for n in self.unreadable)
            return {"images": len(self.names), "labelled": labelled, "unreadable": unreadable, "remaining": len(self.queue)}

    def upcoming(self, count: int) -> list[dict]:
        """The next `count` images to show, each with the model's reading (empty when readings are hidden)."""
        with self.lock:
            hidden = self.misfit() is not None
            out = []
            for name in self.queue[:count]:
                text, confidence = self.reading(name)
                out.append({"name": name, "reading": "" if hidden else text, "confidence": None if hidden else confidence})
            return out
