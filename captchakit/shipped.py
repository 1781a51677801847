"""The shipped default model, so that a fresh clone can read captchas with no training.

models/default.pkl is a weights-only model.pkl for the default settings; models/default.json
beside it says how it was made: the training command, the data it saw, its test accuracy,
and its accuracy on a fixed draw of generated captchas (`generated_check`), which CI measures
again (tests/test_default_model.py). Both files are written by

    python captcha_export.py --model model.pkl --ship models/default.pkl --command "..." --data-note "..."

captcha_predict.py and captcha_test.py fall back to it when no model.pkl exists, and say so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from captchakit import settings as cs

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "models" / "default.pkl"
DEFAULT_INFO = DEFAULT_MODEL.with_suffix(".json")

# The generated check: captchas drawn in memory from these seeds, never written to disk.
# The split name keeps them apart from every split captcha_gen.py writes with the same seed.
CHECK_SEED = 20_240_605
CHECK_COUNT = 500
CHECK_SPLIT = "default-check"


def shown(path: Path) -> str:
    """A path relative to the working directory when it is below it, for messages."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resolve_model(path):
    """`path`, or the shipped model when `path` is the missing default model.pkl (said in one line on stderr)."""
    default = DEFAULT_MODEL
    if str(path) != cs.MODEL_PATH or Path(path).exists() or not default.exists():
        return path
    print(f"no {cs.MODEL_PATH} here: using the shipped default model {shown(default)}", file=sys.stderr)
    return default


def generated_check(recognizer, count: int | None = None, seed: int | None = None, batch_size: int = 256) -> float:
    """Whole-captcha accuracy of `recognizer` (captcha_predict's API) on `count` seeded captchas."""
    from captchakit.data.synth import CaptchaFactory

    count = count or CHECK_COUNT
    seed = CHECK_SEED if seed is None else seed
    factory = CaptchaFactory(recognizer.settings)
    codec = recognizer.codec
    right = 0
    for start in range(0, count, batch_size):
        labels, arrays = [], []
        for index in range(start, min(start + batch_size, count)):
            label, image = factory.make_seeded(seed, CHECK_SPLIT, index)
            labels.append(codec.normalize(label))
            arrays.append(recognizer.prepare(image))  # captcha_dataset.load_image, as for files
        preds = recognizer.predict_arrays(np.stack(arrays))
        right += sum(p.text == label for p, label in zip(preds, labels, strict=True))
    return right / count
