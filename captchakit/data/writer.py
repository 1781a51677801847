"""Generated captchas written to disk as split folders (train/, test/, predict/), for captcha_gen.py.

Files are named LABEL_ID.png, ID being the image's index in its split, so two captchas with
the same text never collide; each image has its own seed (synth.image_seed), so the files do
not depend on the number of worker processes. Each image is written to a hidden temporary
file and renamed into place, so a killed run leaves no half-written image, and a rerun of the
same command writes only the IDs that are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import re
import signal
from pathlib import Path

from tqdm import tqdm

from captchakit.data.synth import CaptchaFactory
from captchakit.errors import UserError
from captchakit.settings import Settings

SPLITS = ("train", "test", "predict")
NAME_RE = re.compile(r"^(?P<label>.+)_(?P<id>\d+)\.png$")
TMP_PREFIX = ".tmp-"
# A label in a file name ends at the first '_' (images.label_from_name), '/' and '\\' split
# paths, and a name that starts with '.' is a hidden file that no folder listing reads.
NAME_UNSAFE = "_/\\.\0"


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


def _init_worker(settings_dict: dict, pool_worker: bool = False, emphasis: dict[str, float] | None = None, source=None) -> None:
    global _factory
    _factory = source if source is not None else CaptchaFactory(Settings.from_dict(settings_dict), emphasis=emphasis)
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
    out: Path,
    split: str,
    count: int,
    settings: Settings,
    workers: int,
    seed: int | None,
    emphasis: dict[str, float] | None = None,
    source=None,
) -> int:
    """Bring `out/split` up to `count` images; return how many were written now.

    `emphasis` maps characters to how many times as often as the others they are drawn. `source`,
    when given, draws instead of the captcha library: any picklable object with CaptchaFactory's
    make_seeded(seed, split, index) -> (label, image), such as render.Renderer (the varied style).
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
                _init_worker(settings.to_dict(), emphasis=emphasis, source=source)
                for job in jobs:
                    _write_one(job)
                    bar.update()
            else:
                ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
                with ctx.Pool(workers, initializer=_init_worker, initargs=(settings.to_dict(), True, emphasis, source)) as pool:
                    for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
                        bar.update()
        except BaseException:
            # One worker's error makes the pool terminate the others, maybe midway through their own
            # image: their temporaries stay. The pool has joined them by now, so nothing writes here.
            remove_temps(folder)
            raise
    return len(jobs)
