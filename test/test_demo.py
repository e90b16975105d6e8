"""`make demo`, the product's main job, end to end: the real node, DDS on loopback, "my mug"
taught and then corrected with one "not this one" through /teach_concept, and a picture a
reader can check by eye."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from povss_lab.spawn import private_domain_id

pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_make_demo_teaches_my_mug_corrects_it_and_draws_the_story(tmp_path):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(private_domain_id()), PYTHONUNBUFFERED="1")
    # Its own session: on a time-out the demo and the node it started go down together.
    proc = subprocess.Popen([sys.executable, "-m", "povss_lab.demo", "--out", str(tmp_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the demo did not finish in 300 s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "percent" in summary["units"]
    teach, fix, phases = summary["teach"], summary["correction"], summary["phases"]
    before, after = phases["before teaching"], phases["after teaching"]
    # my mug fits its own five shots (IoU on them, in percent): measured 46 (docs/demo/
    # summary.json); below the floor, teaching broke.
    assert teach["concept"] == "my mug" and teach["shots_used"] == 5, teach
    assert 30 <= teach["fit_iou_on_shots_pct"] <= 100, teach
    assert after["iou_per_pct"] > before["iou_per_pct"] + 5  # teaching found MY object
    # Before teaching every mug is "mug" (the look-alikes too); identity keeps them off.
    assert after["wrong_object_frames"] < before["wrong_object_frames"], phases
    # The correction: one look-alike, the same concept and class id, the shots kept.
    assert fix["success"] and fix["negatives_used"] == 1, fix
    assert fix["class_id"] == teach["class_id"] and fix["class_id_unchanged"], fix
    assert fix["concept_id"] == teach["concept_id"] == "my_mug", fix
    assert fix["shots_used"] == teach["shots_used"], fix
    # It was made where the node erred, or, only when no frame erred, on the closest call.
    if fix["frames_erred_after_teaching"]:
        assert fix["frame"] in fix["frames_erred_after_teaching"], fix
    else:
        assert "closest call" in fix["why"] and fix["frame"] in fix["identity_margins"], fix
    corrected = phases["after the correction"]
    assert corrected["wrong_object_frames"] <= after["wrong_object_frames"], phases
    assert corrected["false_present_frames"] <= after["false_present_frames"], phases
    picture = cv2.imread(str(tmp_path / "story.png"))
    # Per shown frame one row: truth | before | after teaching | after the correction, each a
    # 320x240 frame under a 22-pixel title bar; three rows, the legend strip below.
    assert picture.shape[1] == 4 * 320
    assert 3 * (240 + 22) < picture.shape[0] < 4 * (240 + 22)
    sheet = cv2.imread(str(tmp_path / "teach_my_mug.png"))
    assert sheet.shape[1] == 5 * 320  # the five teaching shots side by side
