"""Overlays: personal concepts are filled and outlined in the highlight colour, size errors."""

import numpy as np
import pytest

from povss_ros.vis import HIGHLIGHT, HIGHLIGHTS, overlay


def test_personal_concept_is_outlined_in_the_highlight_colour():
    image = np.full((120, 160, 3), 200, np.uint8)
    labels = np.zeros((120, 160), np.uint16)
    labels[40:80, 60:120] = 2  # the personal concept, id 2
    out = overlay(image, labels, ["table", "mug", "my mug"], highlight=[2], alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tuple(out[40, 90]) == HIGHLIGHT  # its outline
    assert tuple(out[60, 90]) == tuple((np.array(HIGHLIGHT) * 0.5 + 100).astype(np.uint8))
    assert tuple(out[110, 150]) != HIGHLIGHT  # the table is not highlighted


def test_each_personal_concept_has_its_own_colour():
    image = np.full((120, 160, 3), 200, np.uint8)
    labels = np.zeros((120, 160), np.uint16)
    labels[70:110, 20:60] = 2  # my mug (clear of the legend, top left)
    labels[70:110, 100:140] = 3  # my bottle
    out = overlay(image, labels, ["table", "mug", "my mug", "my bottle"], highlight=[2, 3])
    assert tuple(out[70, 40]) == HIGHLIGHTS[0] and tuple(out[70, 120]) == HIGHLIGHTS[1]
    assert HIGHLIGHTS[0] != HIGHLIGHTS[1]


def test_overlay_rejects_labels_of_another_size():
    with pytest.raises(ValueError, match="differ in size"):
        overlay(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), np.uint16), ["a"])
