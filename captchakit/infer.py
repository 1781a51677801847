"""The trained network, arranged to run fast for prediction; the weights and the function stay the same.

Two changes, both exact up to float rounding:
- each BatchNorm is folded into the convolution before it (eval mode: BatchNorm is a fixed
  per-channel scale and shift), so a block is one conv + ReLU, as in the exported ONNX graph;
  at one image per call this halves the time, which goes mostly to per-layer overhead;
- the weights are stored channels_last, the layout captcha_dataset.to_tensor gives the input
  and oneDNN's fast CPU convolutions want.
The original module stays as it was (evaluate() and export use it); this is a copy.
"""

from __future__ import annotations

import torch
from torch import nn


def inference_module(model: nn.Module) -> nn.Module:
    """A folded, channels_last copy of `model` for inference, or `model` itself if folding fails."""
    model.eval()
    try:
        from torch.fx.experimental.optimization import fuse

        fast = fuse(model)  # traces the module and returns a new GraphModule; `model` is untouched
    except Exception:  # a module torch.fx cannot trace still runs, only without the folding
        return model
    return fast.to(memory_format=torch.channels_last).eval()
