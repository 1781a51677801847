"""Run captcha_train.py with a recorder of what each rank trains on, for the distributed tests.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_probe.py LOG_DIR <captcha_train flags>
    launch(LOG_DIR, flags, world=2)   # the same, ranks forked from a server with torch imported

Every image a rank trains on is logged as `epoch<TAB>sha1 of its pixels` to LOG_DIR/rank<R>.tsv,
by code that runs in that rank only, so a test can check that ranks saw different samples.
`launch` sets the environment torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT,
OMP_NUM_THREADS=1) in processes forked from a multiprocessing fork server that has torch
imported already: the same code path in captcha_train.py, without paying torch's import
(seconds on the shared 2-core box) once per rank. Rank R's stdout and stderr go to
LOG_DIR/out<R>.txt and err<R>.txt.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import captcha_train  # noqa: E402
from captchakit.errors import run_cli  # noqa: E402
from captchakit.train import distributed as captcha_distributed  # noqa: E402


def recording(log_dir: Path):
    plain = captcha_distributed.epoch_batches

    def epoch_batches(data, targets, batch_size, seed, epoch):
        steps, batch, batches = plain(data, targets, batch_size, seed, epoch)

        def logged():
            with open(log_dir / f"rank{os.environ.get('RANK', '0')}.tsv", "a") as log:
                for images, labels in batches:
                    log.writelines(f"{epoch}\t{hashlib.sha1(image.tobytes()).hexdigest()}\n" for image in images)
                    yield images, labels

        return captcha_distributed.EpochPlan(steps, batch, logged())

    return epoch_batches


def _rank_main(rank: int, world: int, port: int, log_dir: str, argv: list[str]) -> None:
    log = Path(log_dir)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    torch.set_num_threads(1)
    for fd, name in ((1, f"out{rank}.txt"), (2, f"err{rank}.txt")):
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(os.open(log / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    captcha_distributed.epoch_batches = recording(log)
    raise SystemExit(run_cli(captcha_train.main, argv))  # the Process's exit status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(log_dir: Path, argv: list, world: int = 2, timeout: float = 600) -> list[int]:
    """Run captcha_train.main(argv) on `world` ranks with gloo; their exit statuses."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "captcha_train", "dist_probe"])
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(log_dir), [str(a) for a in argv])) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.exitcode is None:
            for q in procs:
                q.kill()
            raise TimeoutError(f"rank did not finish in {timeout} s; see {log_dir}")
    return [p.exitcode for p in procs]


def samples(log_dir: Path, rank: int) -> dict[int, list[str]]:
    """epoch -> pixel hashes of the images rank `rank` trained on, in order."""
    seen: dict[int, list[str]] = {}
    path = log_dir / f"rank{rank}.tsv"
    for line in path.read_text().splitlines() if path.exists() else []:
        epoch, digest = line.split("\t")
        seen.setdefault(int(epoch), []).append(digest)
    return seen


if __name__ == "__main__":
    log_dir = Path(sys.argv[1])
    log_dir.mkdir(parents=True, exist_ok=True)
    captcha_distributed.epoch_batches = recording(log_dir)
    raise SystemExit(run_cli(captcha_train.main, sys.argv[2:]))
