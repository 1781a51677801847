"""An exponential moving average of the network's weights, kept beside training (`--ema`).

Why: while the one-cycle schedule's learning rate is high the raw weights wobble from step to
step; the average over the last few hundred steps reads fresh captchas far better mid-run
and as well at the end (study item 11 in docs/BENCHMARKS.md), so the model that is checked
and saved is the average. On by default. BatchNorm's running statistics are averaged the
same way, so the average is a complete network that evaluate() and save_checkpoint() take
like any other.
"""

from __future__ import annotations

import copy

import torch

DECAY = 0.998  # weight of the old average per step: it spans about 1 / (1 - DECAY) = 500 steps
HORIZON_SHARE = 0.1  # the average spans at most this share of a run's steps (run_decay)
WARMUP_STEPS = 10  # early on the decay is (1 + t) / (WARMUP_STEPS + t): the average forgets the random start quickly


def run_decay(decay: float, total_steps: int) -> float:
    """`decay`, lowered for a short run so that the average spans at most HORIZON_SHARE of its steps.

    A small data set trains for a few hundred steps: at 0.998 the average would still be mostly
    the first half of the run when it ends. The default task's 6,000-odd steps keep 0.998 as it is."""
    if not 0.0 < decay < 1.0:
        return decay  # off (0), or out of range: WeightAverage refuses it with the flag's own message
    return min(decay, 1.0 - 1.0 / max(HORIZON_SHARE * total_steps, 2.0))


class WeightAverage:
    """`model` (the average, an eval-mode copy) follows the training network through update()."""

    def __init__(self, net: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema {decay}: the decay must lie between 0 and 1, e.g. {DECAY}")
        self.decay = decay
        self.steps = 0
        self.model = copy.deepcopy(net).eval().requires_grad_(False)
        # The same tensors every step: state_dict(keep_vars=True) hands out the live parameters and buffers.
        live, mine = net.state_dict(keep_vars=True), self.model.state_dict(keep_vars=True)
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        self._live_floats = [live[k].detach() for k in floats]
        self._my_floats = [mine[k] for k in floats]
        self._other = [(live[k], v) for k, v in mine.items() if not v.is_floating_point()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.steps) / (WARMUP_STEPS + self.steps))

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        torch._foreach_lerp_(self._my_floats, self._live_floats, 1.0 - self.current_decay())
        for s, a in self._other:  # BatchNorm's step counters: copied, an average means nothing there
            a.copy_(s)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.model.load_state_dict(state["weights"])
