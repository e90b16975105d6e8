"""The suite cannot hide a failure: in CI, a module the tests need that does not import fails
the run, naming it, instead of turning the tests that need it into skips (conftest.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import NEEDED, in_ci

ROOT = Path(__file__).resolve().parents[1]
NOT_ON_PYPI = {"launch_ros"}  # its tests run on a real ROS 2 install only


def _pytest(tmp_path: Path, ci: str, broken: str | None,
            target: str) -> subprocess.CompletedProcess:
    """`pytest --collect-only` of `target` in a fresh process with CI=`ci`; `broken`: a module
    made unimportable there, as if uninstalled (a package of that name first on the path raises
    ModuleNotFoundError)."""
    path = [str(ROOT)]
    if broken is not None:
        shadow = tmp_path / "shadow" / broken
        shadow.mkdir(parents=True)
        (shadow / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{broken} is not installed here', name='{broken}')\n")
        path.insert(0, str(shadow.parent))
    env = dict(os.environ, CI=ci, PYTHONPATH=os.pathsep.join(path))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_in_ci_a_missing_rclpy_fails_the_run_and_names_it(tmp_path):
    out = _pytest(tmp_path, "true", "rclpy", "test/test_lifecycle.py")
    text = out.stdout + out.stderr
    assert out.returncode not in (0, 5), text[-3000:]  # 5: nothing collected, still "green"
    assert "rclpy (ModuleNotFoundError: rclpy is not installed here)" in text, text[-3000:]
    assert "skipped" not in text, text[-3000:]


def test_in_ci_a_missing_message_package_fails_the_run_and_names_it(tmp_path):
    out = _pytest(tmp_path, "1", "sensor_msgs", "test/test_depth_conversions.py")
    text = out.stdout + out.stderr
    assert out.returncode not in (0, 5), text[-3000:]
    assert "sensor_msgs.msg (" in text, text[-3000:]


def test_outside_ci_the_same_install_skips_the_ros_tests(tmp_path):
    """What CI must not accept: without CI the ROS module skips and the run is green."""
    out = _pytest(tmp_path, "", "rclpy", "test/test_lifecycle.py")
    text = out.stdout + out.stderr
    assert out.returncode in (0, 5) and "SKIPPED" in text, text[-3000:]


def test_in_ci_a_complete_install_passes_the_guard(tmp_path):
    out = _pytest(tmp_path, "true", None, "test/test_suite_guards.py")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]


def test_ci_is_read_as_services_set_it():
    assert in_ci({"CI": "true"}) and in_ci({"CI": "1"}) and in_ci({"CI": "TRUE"})
    assert not in_ci({}) and not in_ci({"CI": ""}) and not in_ci({"CI": "false"})
    assert not in_ci({"CI": "0"})


def _suite_sources() -> list[Path]:
    return sorted((ROOT / "test").glob("*.py"))


def test_every_module_the_tests_skip_without_is_checked_in_ci():
    """An `importorskip` of a module the guard does not check would skip in CI again."""
    skipped = set()
    for path in _suite_sources():
        skipped |= set(re.findall(r"importorskip\(\s*\"([\w.]+)\"", path.read_text()))
    assert skipped, "no importorskip found: the pattern is stale"
    unchecked = {m for m in skipped - NOT_ON_PYPI
                 if m not in NEEDED and m.split(".")[0] not in NEEDED}
    assert not unchecked, f"add to conftest.NEEDED: {sorted(unchecked)}"


def test_every_ros_message_package_the_tests_and_node_use_is_checked_in_ci():
    sources = [*_suite_sources(), *(ROOT / "povss_ros" / "ros").glob("*.py"),
               ROOT / "docs" / "grasp_subscriber.py"]
    used = set()
    for path in sources:
        used |= {f"{pkg}.{kind}" for pkg, kind in re.findall(
            r"^\s*from (\w+_(?:msgs|interfaces))\.(msg|srv) import", path.read_text(), re.M)}
    assert "sensor_msgs.msg" in used, "the pattern is stale"
    assert used <= set(NEEDED), f"add to conftest.NEEDED: {sorted(used - set(NEEDED))}"
