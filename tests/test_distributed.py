"""torchrun / DistributedDataParallel on 2 CPU processes with gloo, on the tiny data set.

One run of 2 epochs is split in two: ranks forked from a server with torch imported stop after
epoch 1 (--target-acc 0), then the real `torchrun` command resumes it. Rank-local code
(tests/dist_probe.py) logs a hash of every image each rank trains on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dist_probe import launch, samples

import captcha_predict
import captcha_test
import captcha_train
from captchakit.errors import UserError
from captchakit.train import distributed as captcha_distributed
from captchakit.train import engine as captcha_accel
from captchakit.train.augment import augment_batch

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def torchrun(log_dir: Path, *flags, world: int = 2) -> subprocess.CompletedProcess:
    """The user's command: python -m torch.distributed.run --standalone --nproc_per_node=2 ..."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world}",
        str(ROOT / "tests" / "dist_probe.py"),
    ]
    return subprocess.run([*cmd, str(log_dir), *map(str, flags)], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def ddp_run(tiny_data, tmp_path_factory):
    """(model path, log dir, stdout of the first part, the torchrun --resume result)."""
    tmp = tmp_path_factory.mktemp("ddp")
    model, logs = tmp / "model.pkl", tmp / "logs"
    data = ["--train-dir", tiny_data / "train", "--val-dir", tiny_data / "test", "--model", model]
    codes = launch(logs, [*data, "--epochs", "2", "--batch-size", BATCH, "--target-acc", "0"])
    assert codes == [0, 0], (logs / "err0.txt").read_text()[-2000:]
    first = (logs / "out0.txt").read_text()
    resumed = torchrun(logs, *data, "--resume")  # the recipe comes back from last.pkl
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return model, logs, first, resumed


def test_only_rank_0_prints_and_both_ranks_train(ddp_run):
    _, logs, first, resumed = ddp_run
    assert "2 process(es), global batch 64, fp32, DistributedDataParallel" in first
    assert first.count("reached --target-acc") == 1 and "epoch 1/2  loss" in first
    assert (logs / "out1.txt").read_text() == ""  # rank 1 printed nothing
    assert resumed.stdout.count("resuming ") == 1 and "after epoch 1 of 2" in resumed.stdout
    assert resumed.stdout.count("epoch 2/2  loss") == 1


def test_ranks_train_on_disjoint_shards_of_a_new_order_each_epoch(ddp_run):
    _, logs, _, _ = ddp_run
    r0, r1 = samples(logs, 0), samples(logs, 1)
    per_rank = (300 // 2) // BATCH * BATCH  # full batches of each rank's 150 images
    for epoch in (1, 2):
        assert len(r0[epoch]) == len(r1[epoch]) == per_rank
        assert not set(r0[epoch]) & set(r1[epoch])  # no image on both ranks in one epoch
        assert len(set(r0[epoch])) == per_rank
    assert r0[1] != r0[2]  # a new seeded order every epoch


def test_the_distributed_model_loads_and_scores_as_in_training(ddp_run, tiny_data, cli, tmp_path):
    model, _, _, _ = ddp_run
    ckpt = torch.load(model, weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the unwrapped module's weights
    history = (model.parent / "model_run" / "history.csv").read_text().splitlines()
    assert len(history) == 3 and history[1].startswith("1,") and history[2].startswith("2,")
    code, out, err = cli(captcha_test.main, "--model", model, "--data", tiny_data / "test", "--json", tmp_path / "m.json")
    assert code == 0, err
    figures = json.loads((tmp_path / "m.json").read_text())
    # Rank 0's evaluation during training is the single-process evaluate(): the same figures.
    assert figures["accuracy"] == ckpt["meta"]["val_accuracy"]
    assert figures["char_accuracy"] == ckpt["meta"]["val_char_accuracy"]
    code, out, err = cli(captcha_predict.main, "--model", model, tiny_data / "predict")
    assert code == 0 and len(out.strip().splitlines()) == 20


def test_resume_with_another_process_count_is_refused(ddp_run, cli, monkeypatch):
    model, _, _, _ = ddp_run
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = model.read_bytes()
    code, out, err = cli(captcha_train.main, "--model", model, "--resume")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "error: --resume: the run was started with 2 process(es) and this one has 1; "
        "resume it with the same total (torchrun --nproc_per_node x --nnodes = 2)"
    )
    assert model.read_bytes() == before


def test_shards_are_equal_disjoint_and_cover_all_but_the_remainder():
    order = np.random.default_rng(3).permutation(103)
    parts = [captcha_distributed.shard(order, r, 4) for r in range(4)]
    assert [len(p) for p in parts] == [25] * 4
    joined = np.concatenate(parts)
    assert len(set(joined.tolist())) == 100 and set(joined.tolist()) <= set(order.tolist())
    assert np.array_equal(captcha_distributed.shard(order, 0, 1), order)


def test_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert captcha_distributed.setup(torch.device("cpu")) == torch.device("cpu")
    assert not captcha_distributed.active() and captcha_distributed.is_main()
    assert captcha_distributed.mean(1.5) == 1.5 and captcha_distributed.on_main(lambda: 7) == 7
    net = torch.nn.Linear(2, 2)
    assert captcha_distributed.wrap(net, torch.device("cpu")) is net


def test_precision_is_fp32_off_cuda_and_bf16_or_fp16_on_it():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert captcha_accel.resolve_precision("auto", cpu) == "fp32"
    assert captcha_accel.resolve_precision("auto", cuda, bf16_ok=True) == "bf16"
    assert captcha_accel.resolve_precision("auto", cuda, bf16_ok=False) == "fp16"
    with pytest.raises(UserError, match="--precision bf16: this GPU does not support bfloat16"):
        captcha_accel.resolve_precision("bf16", cuda, bf16_ok=False)
    with pytest.raises(UserError, match="--precision fp16: mixed precision is for CUDA GPUs"):
        captcha_accel.resolve_precision("fp16", cpu)


def test_cpu_engine_is_the_plain_fp32_step():
    """On a CPU the engine adds nothing: no autocast, no scaler, to_tensor's layout."""
    model = torch.nn.Conv2d(1, 2, 3)
    engine = captcha_accel.make_engine(model, torch.device("cpu"))
    assert engine.precision == "fp32" and engine.scaler is None and engine.net is model
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    x, y = engine.to_device(images, np.zeros((2, 3), np.int64))
    assert x.dtype == torch.float32 and x.shape == (2, 1, 4, 5) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[1, 0], torch.from_numpy(images[1]).float() / 255)
    with engine.autocast():
        assert not torch.is_autocast_enabled("cpu")


@pytest.fixture
def as_rank(monkeypatch):
    """as_rank(r): make this process rank r of 2 for the rank-dependent code (no process group)."""
    return lambda r: monkeypatch.setattr(captcha_distributed, "_rank", captcha_distributed.Rank(r, 2, r, 2))


def test_rank_0_draws_like_one_process_and_rank_1_augments_and_drops_out_its_own_way(as_rank):
    x = torch.rand(4, 1, 32, 80)
    as_rank(0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert captcha_distributed.epoch_seed(5, 3) == 5  # rank 0: nothing reseeded, nothing changed
    assert torch.equal(torch.get_rng_state(), before)
    rank0 = (augment_batch(x, 1.0, 0, 5, 3, 0), torch.rand(8))
    as_rank(1)
    drawn = captcha_distributed.epoch_seed(5, 3)
    assert drawn == 5 + captcha_distributed.RANK_STRIDE
    rank1 = (augment_batch(x, 1.0, 0, drawn, 3, 0), torch.rand(8))
    assert not torch.equal(rank0[0], rank1[0]) and not torch.equal(rank0[1], rank1[1])
    # Seeded by (seed, rank, epoch): a resumed run draws the same, the next epoch draws anew.
    again = captcha_distributed.epoch_seed(5, 3)
    assert torch.equal(augment_batch(x, 1.0, 0, again, 3, 0), rank1[0]) and torch.equal(torch.rand(8), rank1[1])
    captcha_distributed.epoch_seed(5, 4)
    assert not torch.equal(torch.rand(8), rank1[1])


def test_on_main_runs_on_rank_0_and_sends_its_result_or_its_one_line_error(as_rank, monkeypatch):
    sent = []

    def broadcast(box, src, device):  # rank 0 sends its box; the other ranks receive what it sent last
        assert src == 0 and device == torch.device("cpu")
        if captcha_distributed.is_main():
            sent.append(box[0])
        else:
            box[0] = sent[-1]

    monkeypatch.setattr(captcha_distributed, "active", lambda: True)
    monkeypatch.setattr(captcha_distributed, "_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(captcha_distributed.dist, "broadcast_object_list", broadcast)

    def refuse():
        raise UserError("--resume: nothing to resume at x; start without --resume")

    as_rank(0)
    assert captcha_distributed.on_main(lambda v: v * 2, 21) == 42
    as_rank(1)
    assert captcha_distributed.on_main(lambda: pytest.fail("only rank 0 runs it")) == 42
    as_rank(0)
    with pytest.raises(UserError, match=r"^--resume: nothing to resume at x; start without --resume$"):
        captcha_distributed.on_main(refuse)
    as_rank(1)  # the other ranks stop with the same line instead of waiting for ever
    with pytest.raises(UserError, match=r"^--resume: nothing to resume at x; start without --resume$"):
        captcha_distributed.on_main(refuse)
