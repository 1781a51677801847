"""The shipped default model, so that a fresh clone can read captchas with no training.

models/default.pkl is a weights-only model.pkl for the default settings; captchakit/models/default.json
beside it says how it was made: the training command, the data it saw, its test accuracy,
and its accuracy on a fixed draw of generated captchas (`generated_check`), which CI measures
again (tests/test_default_model.py). Both files are written by

    python captcha_export.py --model model.pkl --ship captchakit/models/default.pkl --command "..." --data-note "..."

captcha_predict.py and captcha_test.py fall back to it when no model.pkl exists, and say so.

models/general.pkl is the general reader (1-10 characters of 0-9A-Za-z, trained on the varied style)
that small data sets fine-tune from; general.json beside it is its card, written alike by
`captcha_export.py --ship-general`, and its check draws varied captchas instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from captchakit import settings as cs
from captchakit.data.render import Renderer
from captchakit.data.synth import draw

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "models" / "default.pkl"
DEFAULT_INFO = DEFAULT_MODEL.with_suffix(".json")
# The general reader that small data sets fine-tune from (captchakit.train.finetune), once one is shipped.
GENERAL_MODEL = ROOT / "models" / "general.pkl"
GENERAL_INFO = GENERAL_MODEL.with_suffix(".json")

# The generated check: captchas drawn in memory from these seeds, never written to disk.
# The split name keeps them apart from every split captcha_gen.py writes with the same seed.
CHECK_SEED = 20_240_605
CHECK_COUNT = 500
CHECK_SPLIT = "default-check"
GENERAL_CHECK_SPLIT = "general-check"  # the general reader's check: varied captchas of its charset and lengths
CHECK_SPLITS = {"captcha": CHECK_SPLIT, "varied": GENERAL_CHECK_SPLIT}  # the check's style -> its split
CHECK_BATCH = 256  # images per predict_arrays call


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


def generated_check(recognizer, count: int, seed: int, style: str = "captcha") -> float:
    """Whole-captcha accuracy of `recognizer` (captcha_predict's API) on `count` seeded captchas: of the
    captcha library's style (CHECK_SPLIT), or with style "varied" of the varied style (GENERAL_CHECK_SPLIT)."""
    factory = Renderer.for_settings(recognizer.settings) if style == "varied" else None
    images, labels = draw(recognizer.settings, count, seed, CHECK_SPLITS[style], factory)
    right = 0
    for start in range(0, count, CHECK_BATCH):
        preds = recognizer.predict_arrays(images[start : start + CHECK_BATCH])
        texts = labels[start : start + CHECK_BATCH]
        right += sum(p.text == recognizer.codec.normalize(t) for p, t in zip(preds, texts, strict=True))
    return right / count
