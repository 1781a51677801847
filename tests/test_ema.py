"""The moving average of the weights (--ema): what one update does, and what it leaves alone."""

import pytest
import torch

from captcha_setting import Settings
from captchakit.model import CaptchaCNN
from captchakit.train.ema import WARMUP_STEPS, WeightAverage


def test_an_update_moves_the_average_towards_the_weights_by_one_minus_the_decay():
    torch.manual_seed(0)
    net = CaptchaCNN(Settings())
    average = WeightAverage(net, decay=0.5)
    before = {k: v.clone() for k, v in average.model.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net.features[1][1].running_mean.add_(2.0)
        net.features[1][1].num_batches_tracked.add_(7)
    average.update()
    decay = min(0.5, 2 / (WARMUP_STEPS + 1))  # the first step's warm-up decay
    after, live = average.model.state_dict(), net.state_dict()
    for name, old in before.items():
        if old.is_floating_point():
            assert torch.allclose(after[name], old + (live[name] - old) * (1 - decay)), name
        else:  # step counters are copied, not averaged
            assert torch.equal(after[name], live[name]), name
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training


def test_the_decay_grows_to_the_one_asked_for_and_the_state_round_trips():
    net = CaptchaCNN(Settings())
    average = WeightAverage(net, decay=0.9)
    decays = []
    for _ in range(200):
        average.update()
        decays.append(average.current_decay())
    assert decays[0] == pytest.approx(2 / (WARMUP_STEPS + 1)) and decays == sorted(decays) and decays[-1] == 0.9
    copy = WeightAverage(net, decay=0.9)
    copy.load_state_dict(average.state_dict())
    assert copy.steps == 200
    for name, tensor in average.model.state_dict().items():
        assert torch.equal(copy.model.state_dict()[name], tensor), name


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 2.0])
def test_a_decay_outside_0_to_1_is_refused(decay):
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(CaptchaCNN(Settings()), decay)


def test_a_short_run_averages_over_a_tenth_of_its_steps_and_the_default_task_keeps_its_decay():
    from captchakit.train.ema import DECAY, run_decay

    assert run_decay(DECAY, 100_000 // 128 * 8) == DECAY  # the default task: 6,248 steps
    assert run_decay(DECAY, 400) == pytest.approx(1 - 1 / 40)  # 100 labels: 400 one-step epochs
    assert run_decay(0.0, 400) == 0.0  # --ema 0 stays off
