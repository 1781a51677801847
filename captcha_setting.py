"""The one place for settings: what a captcha looks like and where the data lives.

The definitions live in captchakit/settings.py, so that the package never imports a script;
this file names them where users of staged captcha scripts look for them.
"""

from captchakit.settings import (  # noqa: F401
    ALL_CHAR_SET,
    ALPHABET,
    DATASET_PATH,
    DEFAULT,
    IMAGE_EXTENSIONS,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MAX_CAPTCHA,
    MODEL_PATH,
    NUMBER,
    PREDICT_COUNT,
    PREDICT_DATASET_PATH,
    TEST_COUNT,
    TEST_DATASET_PATH,
    TRAIN_COUNT,
    TRAIN_DATASET_PATH,
    TRAIN_EMPHASIS,
    Settings,
)
