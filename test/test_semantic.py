"""SAN's semantic inference (`san.semantic`): the banded argmax against the full score tensor.

`semantic_argmax` pads the class axis, reuses one product buffer and walks the image a band of
rows at a time; whatever the class count, band remainder or ties, its labels must be the
argmax of `semantic_scores` (first class on a tie) and its scores their maximum.
"""

from __future__ import annotations

import pytest
import torch

from povss_ros.san.model import BatchGeometry
from povss_ros.san.semantic import CLASS_PAD, BestClass, band_rows, semantic_argmax, semantic_scores


def _case(classes: int, hw: tuple[int, int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, grid = 9, (6, 8)
    class_logits = 3 * torch.randn(n, classes + 1, generator=gen)
    mask_logits = 4 * torch.randn(n, *grid, generator=gen)
    geometry = BatchGeometry((hw,), ((hw[0] + 3, hw[1] + 5),), (grid[0] * 16, grid[1] * 16))
    return class_logits, mask_logits, geometry


@pytest.mark.parametrize("classes", [1, CLASS_PAD - 1, CLASS_PAD, CLASS_PAD + 1, 171])
@pytest.mark.parametrize("hw", [(37, 50), (band_rows(torch.device("cpu")) * 3, 41)])
def test_banded_argmax_is_the_argmax_of_the_full_scores(classes, hw):
    class_logits, mask_logits, geometry = _case(classes, hw)
    full = semantic_scores(class_logits, mask_logits, geometry)
    score, label = semantic_argmax(class_logits, mask_logits, geometry)
    assert label.shape == score.shape == hw
    want_score, want_label = full.max(dim=0)
    assert torch.equal(label, want_label)
    torch.testing.assert_close(score, want_score, rtol=1e-6, atol=1e-7)


def test_ties_go_to_the_first_class_and_padding_is_never_chosen():
    class_logits, mask_logits, geometry = _case(5, (20, 30))
    class_logits[:, 3] = class_logits[:, 1]  # classes 1 and 3 score the same everywhere
    class_logits[:, 1] += 10.0
    class_logits[:, 3] += 10.0
    _, label = semantic_argmax(class_logits, mask_logits, geometry)
    assert set(label.unique().tolist()) == {1}
    probs = torch.zeros(4, 5)  # every class scores 0: the first wins, not a zero pad column
    assert BestClass(probs, 10)(torch.rand(10, 4))[1].eq(0).all()
