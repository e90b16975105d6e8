"""Ctrl-C ends the long-running tools cleanly: no traceback, status 0 or 130, nothing left
running. Each runs as a real process in its own process group, and SIGINT goes to the whole
group, as a terminal sends it (children such as the demo's node or training workers get it
too). DDS stays on loopback in a private domain.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _waiting import wait_until

from povss_lab.spawn import private_domain_id

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "syn_small.safetensors"


def _env() -> dict:
    return dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_DOMAIN_ID=str(private_domain_id()), PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _interrupt(cmd: list[str], ready: str, within: float, cwd: Path = ROOT,
               running: Callable[[dict], None] | None = None) -> tuple[int, str]:
    """Start `cmd`, wait until its output shows `ready` (at most `within` s) and, if given,
    until `running(env)` returns (it waits on a sign that the tool is at work), then Ctrl-C
    its process group; returns (exit status, all its output). Fails if anything of the group
    is still alive 5 s after the tool ended."""
    env = _env()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        # SIGINT at its default even when this test runs as a background job (ignored there).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = []
    end = time.monotonic() + within
    try:
        for line in proc.stdout:
            lines.append(line)
            if ready in line or time.monotonic() > end:
                break
        assert ready in "".join(lines), "".join(lines)[-3000:]
        if running is not None:
            running(env)
        os.killpg(proc.pid, signal.SIGINT)
        out = "".join(lines) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def group_gone() -> bool:  # no orphaned node or worker
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        wait_until(group_gone, 5, "the tool's process group to end")
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"processes of the group outlived Ctrl-C:\n{out[-3000:]}") from None
    return proc.returncode, out


def _frames_arrive(topic: str) -> Callable[[dict], None]:
    """A `running` check: a frame has arrived on `topic` (the tool is publishing)."""

    def wait(env: dict) -> None:
        import rclpy
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
        try:
            node = rclpy.create_node("test_ctrl_c_watcher", context=context)
            got = []
            node.create_subscription(Image, topic, got.append, qos_profile_sensor_data)
            executor = rclpy.executors.SingleThreadedExecutor(context=context)
            executor.add_node(node)

            def arrived() -> bool:
                executor.spin_once(timeout_sec=0.05)
                return bool(got)

            wait_until(arrived, 60, f"a frame on {topic}")
            executor.shutdown()
            node.destroy_node()
        finally:
            context.try_shutdown()

    return wait


def test_replay_stops_on_ctrl_c_with_status_0():
    pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
    image = ROOT / "models" / "syn_small_samples.png"
    code, out = _interrupt(
        [sys.executable, "-u", "-c",
         "import sys; from povss_ros.ros import replay; print('ready', flush=True); "
         "sys.exit(replay.main(sys.argv[1:]))",
         str(image), "--loop", "--rate", "10", "--seconds", "120", "--topic", "/replay/image"],
        "ready", 60, running=_frames_arrive("/replay/image"))
    assert code == 0, out
    assert "Traceback" not in out and "published" in out, out


@pytest.mark.ros
@pytest.mark.slow
def test_demo_stops_on_ctrl_c_and_stops_its_node(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
    pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built")
    code, out = _interrupt([sys.executable, "-m", "povss_lab.demo", "--out", str(tmp_path),
                            "--device", "cpu"], "[demo] BEFORE: streaming", 300)
    assert code == 130, out
    assert "Traceback" not in out and "interrupted (Ctrl-C)" in out, out


@pytest.mark.slow
def test_training_with_two_workers_stops_on_ctrl_c(tmp_path):
    pytest.importorskip("torch")
    code, out = _interrupt(
        [sys.executable, "-m", "povss_lab.training.train", "--out", str(tmp_path / "w.safetensors"),
         "--steps", "5000", "--workers", "2", "--threads", "2", "--min-size", "64",
         "--low-res", "0", "0", "--eval-scenes", "2"],
        "step 25/", 300)
    assert code == 130, out
    assert "Traceback" not in out and "interrupted (Ctrl-C)" in out, out
