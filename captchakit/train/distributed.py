"""Distributed data-parallel training under torchrun: process group, shards, rank-0 duties.

    torchrun --nproc_per_node=2 captcha_train.py ...     # 2 processes on this machine

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE; `setup()` reads them and
joins the process group (gloo on CPU, NCCL on CUDA). Without torchrun (or with one process)
nothing here starts: every function falls back to the single-process answer, so the plain
`python captcha_train.py` path runs exactly as before.

Every process reads its own shard of one seeded permutation per epoch; the model is
evaluated by rank 0 alone, with the same evaluate() that captcha_test.py uses, and the
result is sent to the others so that every rank takes the same decisions (best epoch,
--target-acc). Only rank 0 prints and writes files. Each rank draws its own random numbers
(augmentation, dropout; --online captchas are seeded per image and each rank draws other
images), while rank 0 draws exactly what a single process would.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from datetime import timedelta
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from captchakit.errors import UserError

# Rank 0 may build the packed cache of a large folder while the others wait at a barrier.
TIMEOUT = timedelta(minutes=60)
EXIT_WAIT = timedelta(seconds=30)  # how long a rank that is done waits for the others at exit


class Rank(NamedTuple):
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1


_rank = Rank()


def env_rank() -> Rank:
    """This process's place in the job, from torchrun's environment (single process without it)."""
    try:
        return Rank(*(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1))))
    except ValueError as err:
        raise UserError(f"torchrun environment: {err}; launch with torchrun or unset RANK/WORLD_SIZE") from None


def world_size() -> int:
    return _rank.world


def is_main() -> bool:
    return _rank.rank == 0


def active() -> bool:
    return _rank.world > 1 and dist.is_initialized()


def setup(device: torch.device) -> torch.device:
    """Join the process group when torchrun started several processes; return this rank's device.

    On CUDA each process takes the GPU of its local rank. Other ranks' stdout is silenced so
    that only rank 0 prints; stderr stays open, so a crash on any rank is still seen.
    """
    global _rank
    _rank = env_rank()
    if _rank.world <= 1:
        return device
    if device.type == "mps":
        raise UserError("--device mps: distributed training runs on CPU (gloo) or CUDA (NCCL); pass --device cpu or cuda")
    if device.type == "cuda":
        if _rank.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"torchrun: local rank {_rank.local_rank} has no GPU ({torch.cuda.device_count()} found); "
                "use --nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", _rank.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # device_id binds NCCL to this rank's GPU at once, instead of guessing it at the first collective.
        bind = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT, **bind)
        atexit.register(cleanup)
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return device


def cleanup() -> None:
    """Leave the process group at exit, all ranks together.

    A gloo rank that tears its group down while another still talks to it can die in C++
    ("terminate called without an active exception", SIGABRT) after a run that went well, so
    the ranks meet first; the barrier gives up after EXIT_WAIT when a rank has died instead.
    """
    if not dist.is_initialized():
        return
    if dist.get_backend() == "gloo":
        with contextlib.suppress(RuntimeError):
            dist.monitored_barrier(timeout=EXIT_WAIT)
    dist.destroy_process_group()


def barrier() -> None:
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def local_main_first():
    """Run the body on each machine's local rank 0 first (it builds the packed cache), then on the others."""
    first = _rank.local_rank == 0
    if not first:
        barrier()
    yield
    if first:
        barrier()


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean(value: float) -> float:
    """The mean of `value` over all ranks (each rank's training loss, for the history)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t.item()) / _rank.world


def on_main(fn, *args, **kwargs):
    """fn(*args) on rank 0 only; every rank gets its result, or raises the UserError that rank 0 raised.

    Evaluation runs here (identical to single-process), and so does reading the checkpoint on
    --resume: only rank 0's machine holds model.pkl and last.pkl when machines share no disk.
    """
    if not active():
        return fn(*args, **kwargs)
    box: list = [None]
    if is_main():
        try:
            box = [(True, fn(*args, **kwargs))]
        except UserError as err:  # still broadcast, or the other ranks would wait for ever
            box = [(False, str(err))]
    dist.broadcast_object_list(box, src=0, device=_device())
    ok, value = box[0]
    if not ok:
        raise UserError(value)
    return value


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as the training loop calls it: DistributedDataParallel when distributed.

    The unwrapped module stays the one that is evaluated and saved, so model.pkl holds
    plain weights that a single process loads.
    """
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


# --- Randomness: each rank draws its own; rank 0 draws what a single process would. ---

RANK_STRIDE = 1_000_003  # a prime: seed + rank * stride never meets another rank's (seed, epoch, step) mix


def rank_seed(seed: int, rank: int | None = None) -> int:
    """`seed` on rank 0, a seed of its own on every other rank."""
    return seed + (_rank.rank if rank is None else rank) * RANK_STRIDE


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed this rank augments with in epoch `epoch`; ranks above 0 also reseed torch (dropout).

    All ranks start from the same --seed (DDP needs the same initial weights), so without this
    every rank would augment its batch and drop its features with the same random draws. Ranks
    above 0 get a seed of their own and reseed torch's generator from (seed, rank, epoch), which
    --resume reproduces; rank 0 and a single process are untouched.
    """
    if _rank.rank == 0:
        return seed
    torch.manual_seed((rank_seed(seed) * RANK_STRIDE + epoch) % 2**63)
    return rank_seed(seed)


# --- Shards: each rank trains on its own part of the epoch. ---


def shard_size(n: int) -> int:
    """Samples per rank per epoch: equal on every rank, so every rank runs the same number of steps."""
    return n // _rank.world


def shard(order: np.ndarray, rank: int | None = None, world: int | None = None) -> np.ndarray:
    """Rank r's part of the epoch's permutation: every world-th entry from r, all parts the same size."""
    rank = _rank.rank if rank is None else rank
    world = _rank.world if world is None else world
    per = len(order) // world
    return order[rank::world][:per]


def epoch_steps(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch on each rank: full batches only, so BatchNorm never sees a tiny one."""
    per = shard_size(n)
    return per // max(min(batch_size, per), 1)


class EpochPlan(NamedTuple):
    steps: int
    batch: int
    batches: object  # iterable of (images (B, H, W) uint8, targets (B, length) int64)


def epoch_batches(data, targets: np.ndarray | None, batch_size: int, seed: int, epoch: int) -> EpochPlan:
    """This rank's batches for one epoch: generated (--online) or drawn from the packed set."""
    if hasattr(data, "epoch_plan"):  # captchakit.train.online.OnlineSet
        return data.epoch_plan(epoch, batch_size, _rank.rank, _rank.world)
    # The same seeded permutation on every rank, then each rank keeps its own shard.
    order = shard(np.random.default_rng([seed, epoch]).permutation(len(data)))
    batch = max(min(batch_size, len(order)), 1)
    steps = len(order) // batch

    def batches():
        for step in range(steps):
            pos = order[step * batch : (step + 1) * batch]
            yield data.batch(pos), targets[pos]

    return EpochPlan(steps, batch, batches())


def check_world(before: int) -> None:
    """On --resume: refuse another process count (the schedule's length depends on it)."""
    if before != _rank.world:
        raise UserError(
            f"--resume: the run was started with {before} process(es) and this one has {_rank.world}; "
            f"resume it with the same total (torchrun --nproc_per_node x --nnodes = {before})"
        )
