"""captchakit: train, test, export and serve CNNs that read text captchas.

    from captchakit import load_model, predict
    model = load_model("model.pkl")          # or an exported .onnx, or captchakit/models/default.pkl
    text, confidence = predict(model, "captcha.png")

The names below are loaded on first use (PEP 562), so `import captchakit` alone stays light:
torch is imported only once a model is loaded. The staged scripts (captcha_*.py) drive the
rest of the package from the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captchakit.api import load_model, predict
    from captchakit.recognizer import Prediction, Recognizer

# public name -> the module that defines it
_LAZY = {
    "load_model": "captchakit.api",
    "predict": "captchakit.api",
    "Recognizer": "captchakit.recognizer",
    "Prediction": "captchakit.recognizer",
}

__all__ = ["Prediction", "Recognizer", "load_model", "predict"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
