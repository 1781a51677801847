"""The one place for settings: what a captcha looks like and where the data lives.

A `Settings` object describes the task a model solves (charset, label length, image size).
Every script builds it from these defaults plus its command-line flags, and `model.pkl`
stores it, so that test and predict read the settings back instead of asking for them again.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, fields, replace

# --- The default task: 4 characters from digits and upper-case letters, 160x60 images. ---
NUMBER = string.digits
ALPHABET = string.ascii_uppercase
ALL_CHAR_SET = NUMBER + ALPHABET
MAX_CAPTCHA = 4
IMAGE_WIDTH = 160
IMAGE_HEIGHT = 60

# --- Folders, relative to the working directory. ---
DATASET_PATH = "dataset"
TRAIN_DATASET_PATH = f"{DATASET_PATH}/train"
TEST_DATASET_PATH = f"{DATASET_PATH}/test"
PREDICT_DATASET_PATH = f"{DATASET_PATH}/predict"
MODEL_PATH = "model.pkl"

# --- Generated set sizes used by captcha_gen.py. ---
TRAIN_COUNT = 100_000
TEST_COUNT = 1_000
PREDICT_COUNT = 1_000

# --- Characters a generated training set draws more often than the others. ---
# The captcha library's font draws O and 0 nearly alike: once it has stretched and warped them
# they differ by a third of a pixel of stroke, and the network learns the pair from distinct
# examples, not from more passes over the same ones (docs/BENCHMARKS.md, study items 9-11 and
# 15). Each character here is drawn this many times as often as any other in the train split of
# captcha_gen.py (and in --online training); test and predict sets stay uniform, so accuracy is
# measured on captchas as they come. Characters outside a run's charset are ignored.
TRAIN_EMPHASIS = {"O": 6.0, "0": 6.0}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")


@dataclass(frozen=True)
class Settings:
    """What one model reads: the characters, how many, and the image size it sees.

    `min_length` < `length` means variable-length labels; the codec then adds a
    "no character" class so that every position still has one softmax block.
    """

    charset: str = ALL_CHAR_SET
    length: int = MAX_CAPTCHA
    width: int = IMAGE_WIDTH
    height: int = IMAGE_HEIGHT
    min_length: int | None = None
    ignore_case: bool = False
    # How an image of another shape is brought to width x height: False stretches it (what every
    # model before this field did), True scales it to fit and pads the rest with its own border
    # colour, so the characters keep their shape.
    keep_aspect: bool = False
    channels: int = 1  # 1: grey; 3: RGB, for styles where only the hue tells text from noise

    def __post_init__(self) -> None:
        if self.min_length is None:
            object.__setattr__(self, "min_length", self.length)
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """Return why these settings cannot work, or None."""
        if not self.charset:
            return "the charset is empty"
        if len(set(self.charset)) != len(self.charset):
            return f"the charset {self.charset!r} repeats a character"
        if any(c.isspace() for c in self.charset):
            return "the charset may not contain white space"
        if self.ignore_case and self.charset != self.charset.upper():  # labels are read upper-cased
            return f"with ignore_case the charset must be upper case (got {self.charset!r})"
        if self.length < 1:
            return f"the length must be at least 1 (got {self.length})"
        if not 1 <= self.min_length <= self.length:
            return f"min_length must be between 1 and length (got {self.min_length})"
        if self.width < 16 or self.height < 16:
            return f"the image size must be at least 16x16 (got {self.width}x{self.height})"
        if self.channels not in (1, 3):
            return f"channels must be 1 (grey) or 3 (colour) (got {self.channels})"
        return None

    @property
    def variable_length(self) -> bool:
        return self.min_length < self.length

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The shape of one image as load_image gives it: (H, W) grey, (H, W, 3) colour."""
        return (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        """Build from a stored dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes) -> Settings:
        """A copy with some fields changed; None values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        size = f"{self.width}x{self.height}"
        size += " colour" if self.channels == 3 else ""
        size += " (aspect kept, padded)" if self.keep_aspect else ""
        lengths = str(self.length) if not self.variable_length else f"{self.min_length}-{self.length}"
        return f"{lengths} characters from {self.charset!r} ({len(self.charset)}), {size} images"


DEFAULT = Settings()
