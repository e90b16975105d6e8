"""stuff_looks: floor and table errors split by layout and surface style."""

from pathlib import Path

import numpy as np
import pytest

from povss_lab.synthetic.world import FLOOR, TABLE, WALL, Scene
from povss_lab.training.stuff_looks import LookRow, ground_confusion, main, markdown

COMMITTED = Path(__file__).resolve().parents[1] / "models" / "syn_small.safetensors"


def scene(semantic: np.ndarray, layout: str, surfaces: dict[str, str]) -> Scene:
    h, w = semantic.shape
    return Scene(np.zeros((h, w, 3), np.uint8), semantic.astype(np.uint16),
                 np.zeros((h, w), np.int32), [], [], layout=layout, surfaces=surfaces)


def test_ground_confusion_counts_by_class_layout_and_style():
    # a floor-only scene: wall row, then 12 carpet floor pixels
    floor_gt = np.array([[WALL] * 4, [FLOOR] * 4, [FLOOR] * 4, [FLOOR] * 4])
    floor_pred = floor_gt.copy()
    floor_pred[1] = TABLE  # 4 taken for table
    floor_pred[2, :2] = WALL  # 2 for wall: wrong, but not the other ground class
    # a room: 4 planks floor pixels (1 taken for table), 4 paint table pixels (all right)
    room_gt = np.array([[FLOOR, FLOOR, TABLE, TABLE], [FLOOR, FLOOR, TABLE, TABLE]])
    room_pred = room_gt.copy()
    room_pred[0, 0] = TABLE
    # a second carpet floor alone, all right: its 4 pixels add to the first one's row
    more_gt = np.full((2, 2), FLOOR)
    scenes = [scene(floor_gt, "floor", {"wall": "paint", "floor": "carpet"}),
              scene(room_gt, "room", {"floor": "planks", "table": "paint"}),
              scene(more_gt, "floor", {"floor": "carpet"})]
    rows = ground_confusion(scenes, [floor_pred, room_pred, more_gt.copy()])
    assert rows == [
        LookRow("floor", "floor", "carpet", 2, 16, 10 / 16, 4 / 16),
        LookRow("floor", "room", "planks", 1, 4, 3 / 4, 1 / 4),
        LookRow("table", "room", "paint", 1, 4, 1.0, 0.0),
    ]
    table = markdown(rows)
    assert table.splitlines()[2] == "| floor | floor | carpet | 2 | 16 | 0.625 | 0.250 |"
    assert len(table.splitlines()) == 2 + len(rows)


def test_ground_confusion_rejects_mismatched_predictions():
    one = scene(np.full((2, 2), FLOOR), "floor", {"floor": "tiles"})
    with pytest.raises(ValueError, match="1 scenes but 2 predictions"):
        ground_confusion([one], [np.zeros((2, 2)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="does not match"):
        ground_confusion([one], [np.zeros((3, 2))])


def test_cli_scores_the_committed_model(capsys):
    assert main(["--weights", str(COMMITTED), "--scenes", "6", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| class | layout | style |")
    cells = [line.split(" | ") for line in lines[2:]]
    assert cells and all(c[0].lstrip("| ") in ("floor", "table") for c in cells)
    assert sum(int(c[3]) for c in cells) >= 6  # every scene has a floor or a table
    assert all(0.0 <= float(c[5]) + float(c[6].rstrip(" |")) <= 1.0 for c in cells)
