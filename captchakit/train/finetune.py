"""Where a new model's weights start: fresh, another model's (`--init-from MODEL`), or, for a small
data set, the shipped general reader (captchakit/models/general.pkl, when the package has one).

Fine-tuning reads the images as the source model learned to read them (its height, aspect mode and
colour) and builds the source's network, so that every layer fits: the convolution stack and the
head are copied, and the head's classifier takes, class by class, the rows of the characters the
user's charset shares with the source's (LabelCodec.rows_from, CaptchaCNN.adopt). A source with
a CTC head makes the new model a CTC model too, whatever its label lengths: that head is what
learned to read text of any length. `--from-scratch` starts from random weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from captchakit.checkpoint import model_from_checkpoint, read_checkpoint
from captchakit.data.folders import round_to
from captchakit.errors import UserError
from captchakit.model import CaptchaCNN, ModelConfig
from captchakit.settings import Settings
from captchakit.shipped import GENERAL_MODEL
from captchakit.train.config import SMALL_DATA, TrainConfig


def source_model(config: TrainConfig, labelled: Callable[[], int]) -> str | None:
    """The model a new run starts from: --init-from, else the general reader for a data set of fewer
    than SMALL_DATA labelled images (`labelled()` counts them; not --online, not --from-scratch), else None."""
    if config.init_from:
        return config.init_from
    general = Path(GENERAL_MODEL)
    if config.from_scratch or config.online or not general.exists() or labelled() >= SMALL_DATA:
        return None
    print(f"small data set: fine-tuning the general reader {general.name} (--from-scratch to start from random weights)")
    return str(general)


def follow_source(config: TrainConfig, settings: Settings, network: ModelConfig, ckpt: dict, stem: int) -> tuple[Settings, ModelConfig]:
    """The reading and the network of a model fine-tuned from `ckpt`, where the flags leave them open."""
    src = model_from_checkpoint(ckpt, "--init-from")
    if config.height is None and config.width is None and src.settings.keep_aspect:
        height = src.settings.height  # the source's working height; the width keeps the data's aspect ratio
        width = round_to(round(settings.width * height / settings.height), stem)
        settings = settings.with_(width=width, height=height, keep_aspect=True)
    if config.color is None and src.settings.channels == 3:
        settings = settings.with_(channels=3)  # grey images read as RGB give the colour source what it saw
    if config.model_config:
        return settings, network
    head = src.config.head if src.config.head == "ctc" else network.head
    split = src.head.split if src.config.head == "ctc" else network.ctc_split  # a position head's source has no split
    return settings, replace(src.config, head=head, ctc_split=split, test_shifts=(0,))


def init_from(path: str, model: CaptchaCNN, ckpt: dict | None = None) -> None:
    """Copy what fits of the model at `path` into `model`: its convolution layers must fit; the head
    and its classifier's rows for the shared characters are taken where their shapes allow. `ckpt`: the
    file already read (new_model reads it once for follow_source too)."""
    ckpt = ckpt if ckpt is not None else read_checkpoint(path, flag="--init-from")
    own = model.state_dict()
    state = {k: grey_to_colour(v, own[k].shape) if k in own else v for k, v in ckpt["state_dict"].items()}
    wanted = [k for k in own if k.startswith("features.")]
    fits = [k for k in wanted if k in state and state[k].shape == own[k].shape]
    if len(fits) < len(wanted):
        raise UserError(
            f"--init-from {path}: its convolution layers do not fit this network "
            f"({len(fits)} of {len(wanted)} tensors match); use a model with the same --model-config"
        )
    source = model_from_checkpoint(ckpt, path).codec
    copied, classes = model.adopt(state, source)
    if not classes:
        print(f"convolution layers from {path} ({copied} tensors fit); the output layer starts fresh")
        return
    k = model.codec.num_classes
    print(f"fine-tuning from {path}: {copied} tensors fit, and the classifier's rows of {classes} of this model's {k} classes")


def grey_to_colour(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A grey model's first conv weights (out, s*s, k, k) for a colour model's (out, 3*s*s, k, k); other tensors as they are.

    The stem's space-to-depth puts each colour's s*s planes in a block; each block gets the weights times
    that colour's luma weight, so the colour model starts out reading the grey image the grey one read."""
    fits = weight.dim() == len(shape) == 4 and shape[1] == 3 * weight.shape[1]
    if not fits or (shape[0], *shape[2:]) != (weight.shape[0], *weight.shape[2:]):
        return weight
    return torch.cat([weight * luma for luma in (0.299, 0.587, 0.114)], dim=1)
