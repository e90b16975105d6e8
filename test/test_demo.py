"""`make demo`, the product's main job, end to end: the real node, DDS on loopback, two
concepts taught through /teach_concept, and pictures a reader can check by eye."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_make_demo_teaches_my_mug_and_my_bottle_and_draws_the_truth(tmp_path):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(random.randint(101, 230)), PYTHONUNBUFFERED="1")
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
    names = [c["concept"] for c in summary["concepts"]]
    assert names == ["my mug", "my bottle"]
    for c in summary["concepts"]:
        assert c["shots_used"] == 5 and 0 <= c["fit_iou_on_shots_pct"] <= 100
        after, before = c["after_personal"], c["before_base_class_as_mine"]
        assert after["iou_per_pct"] > before["iou_per_pct"] + 5  # teaching found MY object
    frames = sorted(tmp_path.glob("frame*_truth_before_after.png"))
    assert len(frames) == 9
    picture = cv2.imread(str(frames[0]))
    assert picture.shape[1] == 3 * 320  # truth | before | after, the scene uncovered
    assert picture.shape[0] > 240 + 22  # a title bar above, the legend strip below
    for name in ("my_mug", "my_bottle"):
        sheet = cv2.imread(str(tmp_path / f"teach_{name}.png"))
        assert sheet.shape[1] == 5 * 320  # the five teaching shots side by side
