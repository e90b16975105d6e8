"""The weight average a training run can ship (`synthetic/weight_average.py`), by hand."""

import pytest
import torch
from torch import nn

from povss_lab.training.weight_average import WeightAverage


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))


def test_average_ramps_its_decay_then_follows_the_weights_by_hand():
    net = _Net()
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.w.fill_(1.0)
        net.count.fill_(3)
    avg.update(net)  # decay min(0.5, 1/10) = 0.1: 0.1 * 0 + 0.9 * 1
    assert avg.shadow["w"].tolist() == pytest.approx([0.9, 0.9])
    assert avg.shadow["count"].item() == 3  # buffers are copied, not averaged:
    assert avg.shadow["mask"].tolist() == [0.0, float("-inf")]  # -inf would average to NaN
    with torch.no_grad():
        net.w.fill_(2.0)
    avg.update(net)  # decay min(0.5, 2/11)
    d = 2 / 11
    assert avg.shadow["w"].tolist() == pytest.approx([d * 0.9 + (1 - d) * 2.0] * 2)
    for _ in range(30):
        avg.update(net)
    assert avg.current_decay() == 0.5
    assert net.w.tolist() == [2.0, 2.0]  # the model itself is never touched
    avg.copy_to(net)
    assert net.w.tolist() == pytest.approx(avg.shadow["w"].tolist())


def test_average_round_trips_its_state_and_rejects_another_decay():
    net = _Net()
    avg = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        net.w.fill_(4.0)
    avg.update(net)
    again = WeightAverage(_Net(), decay=0.9)
    again.load_state_dict(avg.state_dict())
    assert again.updates == 1 and torch.equal(again.shadow["w"], avg.shadow["w"])
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_Net(), decay=0.99).load_state_dict(avg.state_dict())
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(net, decay=bad)
