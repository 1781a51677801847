"""The model's side of labelling: which model types its reading in, and what it reads in the images left.

The model is chosen so that a restart goes on with the best one there is: the folder's own
`label_model.pkl` (what the page's retraining wrote), else `model.pkl` here, else the shipped default
model. `--model none`, or no model at all, leaves every reading empty: the page works the same, the
person types every label.
"""

from __future__ import annotations

import sys
from pathlib import Path

from captchakit import settings as cs
from captchakit.api import load_model
from captchakit.data.images import ImageError
from captchakit.errors import UserError
from captchakit.label.store import NO_READING, LabelStore, Reading
from captchakit.shipped import resolve_model

LABEL_MODEL = "label_model.pkl"  # in the folder being labelled: the model its retraining writes
BATCH = 64  # images per forward pass; small enough that a bad file costs little to read again one by one


def choose_model(given: str | None, folder: Path) -> Path | None:
    """The model to read with: `given` (None for the default order, "none" for no model); None: no model."""
    if given is not None:
        if given.lower() == "none":
            return None
        if not Path(given).is_file():
            raise UserError(f"--model {given}: file not found; pass a model.pkl or .onnx, or --model none to type every label")
        return Path(given)
    own = folder / LABEL_MODEL
    if own.is_file():
        print(f"using {own}, the model this folder's last retraining wrote", file=sys.stderr)
        return own
    found = Path(resolve_model(cs.MODEL_PATH))
    return found if found.is_file() else None


class Reader:
    """A loaded model (or none) and how it reads a folder's images."""

    def __init__(self, path: Path | None, device: str = "auto"):
        self.path = path
        self.recognizer = load_model(path, device) if path is not None else None

    def describe(self) -> str:
        if self.recognizer is None:
            return "no model: type every label"
        settings = getattr(self.recognizer, "settings", None)
        return f"{self.path.name}: {settings.describe()}" if settings is not None else self.path.name

    def problem(self, text: str) -> str | None:
        """Why the model could never read `text` (its charset or length), or None."""
        codec = getattr(self.recognizer, "codec", None)
        return codec.problem(text) if codec is not None else None

    def read(self, folder: Path, names: list[str]) -> dict[str, Reading]:
        """The model's reading of each image; an image it cannot open gets no reading."""
        if self.recognizer is None:
            return {}
        out: dict[str, Reading] = {}
        for start in range(0, len(names), BATCH):
            chunk = names[start : start + BATCH]
            try:
                found = self.recognizer.predict_batch([folder / n for n in chunk])
            except (ImageError, OSError):  # one bad file: read the batch one by one so the others keep their reading
                found = [self._one(folder / n) for n in chunk]
            for name, (text, confidence) in zip(chunk, found, strict=True):
                out[name] = Reading(text, float(confidence)) if text is not None else NO_READING
        return out

    def _one(self, path: Path) -> tuple[str | None, float]:
        try:
            return self.recognizer.predict_batch([path])[0]
        except (ImageError, OSError):
            return None, 0.0

    def apply(self, store: LabelStore) -> int:
        """Read the images the store has left and hand the readings over; how many were read."""
        names = store.todo()
        store.use(self.describe(), self.read(store.folder, names), self.problem if self.recognizer is not None else None)
        return len(names)
