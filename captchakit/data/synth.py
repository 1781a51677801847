"""Write labelled captcha images for training, testing and prediction.

    python captcha_gen.py                       # 100,000 train, 1,000 test, 1,000 predict
    python captcha_gen.py --train 2000 --seed 1 # a small, reproducible set

The train split draws the characters of captcha_setting.TRAIN_EMPHASIS (O and 0, which the
font draws nearly alike) more often than the others, `--emphasis` says how much; test and
predict stay uniform, so accuracy is measured on captchas as they come.

Files are named LABEL_ID.png, ID being the image's index in its split, so two captchas with
the same text never collide. Each image is written to a hidden temporary file and renamed
into place, so a killed run leaves no half-written image; running the same command again
generates only the IDs that are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import multiprocessing as mp
import os
import random
import re
import secrets
import signal
from pathlib import Path

from tqdm import tqdm

from captchakit import settings as cs
from captchakit.errors import UserError
from captchakit.settings import Settings

SPLITS = ("train", "test", "predict")
NAME_RE = re.compile(r"^(?P<label>.+)_(?P<id>\d+)\.png$")
TMP_PREFIX = ".tmp-"
# A label in a file name ends at the first '_' (captcha_dataset.label_from_name), '/' and '\\' split
# paths, and a name that starts with '.' is a hidden file that no folder listing reads.
NAME_UNSAFE = "_/\\.\0"


class SeededSecrets(random.Random):
    """A seeded stand-in for the `secrets` module, which the captcha library draws from.

    The library calls secrets.randbelow, secrets.randbits and secrets.choice; a Random
    with those three names makes every draw repeatable from one integer seed.
    """

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


def image_seed(seed: int, split: str, index: int) -> int:
    """One independent 64-bit seed per image, so output does not depend on worker count."""
    digest = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class CaptchaFactory:
    """Draws captchas in a given style; `make(rng)` returns (label, PIL image)."""

    def __init__(self, settings: Settings, fonts: list[str] | None = None, emphasis: dict[str, float] | None = None):
        from captcha.image import ImageCaptcha

        self.settings = settings
        self.generator = ImageCaptcha(width=settings.width, height=settings.height, fonts=fonts)
        # One weight per charset character, or None for the uniform draw (which keeps the sets of
        # earlier versions byte for byte: rng.choice and rng.choices draw differently).
        weights = [float((emphasis or {}).get(c, 1.0)) for c in settings.charset]
        self.weights = weights if any(w != 1.0 for w in weights) else None

    def make(self, rng=None):
        """Draw one captcha. `rng` is a SeededSecrets, or None for the library's own randomness."""
        import captcha.image

        rng = rng or secrets.SystemRandom()
        s = self.settings
        length = s.length if not s.variable_length else rng.randint(s.min_length, s.length)
        if self.weights:
            label = "".join(rng.choices(s.charset, weights=self.weights, k=length))
        else:
            label = "".join(rng.choice(s.charset) for _ in range(length))
        # The library looks `secrets` up as a module global at every draw.
        captcha.image.secrets = rng if isinstance(rng, SeededSecrets) else secrets
        try:
            image = self.generator.generate_image(label)
        finally:
            captcha.image.secrets = secrets
        return label, image

    def make_seeded(self, seed: int | None, split: str, index: int):
        rng = SeededSecrets(image_seed(seed, split, index)) if seed is not None else None
        return self.make(rng)


def parse_emphasis(text: str | None, charset: str) -> dict[str, float]:
    """--emphasis "O0:3" -> {"O": 3.0, "0": 3.0}; None gives TRAIN_EMPHASIS's characters in the charset."""
    if text is None:
        return {c: w for c, w in cs.TRAIN_EMPHASIS.items() if c in charset}
    if text.strip().lower() == "none":
        return {}
    emphasis: dict[str, float] = {}
    for group in text.split(","):
        chars, colon, weight = group.strip().rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not (colon and chars and math.isfinite(value) and value > 0):
            raise UserError(f"--emphasis {text!r}: write CHARACTERS:WEIGHT groups such as O0:3 (a weight above 0), or none")
        stray = "".join(c for c in chars if c not in charset)
        if stray:
            raise UserError(f"--emphasis {text!r}: {stray!r} is not in the charset {charset!r}; leave it out")
        emphasis.update(dict.fromkeys(chars, value))
    return emphasis


def emphasis_text(emphasis: dict[str, float]) -> str:
    """{"O": 3.0, "0": 3.0} -> "O0:3", the form --emphasis takes ("none" for {})."""
    groups: dict[float, str] = {}
    for char, weight in emphasis.items():
        groups[weight] = groups.get(weight, "") + char
    return ",".join(f"{chars}:{weight:g}" for weight, chars in groups.items()) or "none"


def remove_temps(folder: Path) -> None:
    """Delete the hidden temporaries of images that were never finished (a killed run, a failed write)."""
    for entry in os.scandir(folder):
        if entry.name.startswith(TMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def existing_ids(folder: Path) -> set[int]:
    """IDs already written in `folder`; stale temporary files from a killed run are removed."""
    remove_temps(folder)
    return {int(m["id"]) for m in map(NAME_RE.match, os.listdir(folder)) if m}


def id_width(count: int) -> int:
    return max(6, len(str(max(count - 1, 0))))


_factory: CaptchaFactory | None = None


def _init_worker(settings_dict: dict, pool_worker: bool = False, emphasis: dict[str, float] | None = None) -> None:
    global _factory
    _factory = CaptchaFactory(Settings.from_dict(settings_dict), emphasis=emphasis)
    if pool_worker:
        _die_with_parent()


def _die_with_parent() -> None:
    """Linux: have the kernel kill this pool worker when the main process dies (kill -9 of it).

    Orphaned workers would otherwise keep writing queued images beside the rerun's.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):  # not Linux: no such call
        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)


def _write_one(job: tuple[str, str, int, int, int | None]) -> str:
    folder, split, index, width, seed = job
    label, image = _factory.make_seeded(seed, split, index)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{index}.png")
    try:
        image.save(tmp, format="png")
        os.replace(tmp, os.path.join(folder, f"{label}_{index:0{width}d}.png"))
    except OSError as err:  # disk full, folder gone read-only: no half-written image stays behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        why = err.strerror or str(err)
        raise UserError(f"--out {folder}: cannot write images ({why}); free some space, then run the same command to finish") from None
    return label


def generate_split(
    out: Path, split: str, count: int, settings: Settings, workers: int, seed: int | None, emphasis: dict[str, float] | None = None
) -> int:
    """Bring `out/split` up to `count` images; return how many were written now.

    `emphasis` maps characters to how many times as often as the others they are drawn.
    """
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    have = existing_ids(folder)
    width = id_width(count)
    jobs = [(str(folder), split, i, width, seed) for i in range(count) if i not in have]
    if not jobs:
        if count:
            print(f"{split}: {count:,} images already in {folder}")
        return 0
    # A context manager: an error midway closes the bar first, so its message gets a line of its own.
    with tqdm(total=len(jobs), desc=f"{split:>7}", unit="img", dynamic_ncols=True) as bar:
        try:
            if workers <= 1:
                _init_worker(settings.to_dict(), emphasis=emphasis)
                for job in jobs:
                    _write_one(job)
                    bar.update()
            else:
                ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
                with ctx.Pool(workers, initializer=_init_worker, initargs=(settings.to_dict(), True, emphasis)) as pool:
                    for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
                        bar.update()
        except BaseException:
            # One worker's error makes the pool terminate the others, maybe midway through their own
            # image: their temporaries stay. The pool has joined them by now, so nothing writes here.
            remove_temps(folder)
            raise
    return len(jobs)
