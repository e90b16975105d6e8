"""Keep the test suite out of the user's home: caches go to a per-run temporary folder.

In CI (the environment variable CI set, as CI services and .ci/run do), a module the suite
needs that does not import fails the run at once, naming it: the ROS tests `importorskip`
rclpy and the messages so that a machine without ROS can run the rest, and in CI those skips
would turn a broken install into a green run.
"""

import importlib
import os

import pytest

# Every module a test module imports or `importorskip`s (test_suite_guards checks the list
# against the suite). launch_ros is not here: it is not on PyPI, so CI has none.
NEEDED = (
    "numpy", "torch", "safetensors", "scipy", "cv2", "PIL", "open_clip", "imgviz",
    "matplotlib", "rclpy", "builtin_interfaces.msg", "std_msgs.msg", "sensor_msgs.msg",
    "geometry_msgs.msg", "diagnostic_msgs.msg", "visualization_msgs.msg", "lifecycle_msgs.msg",
    "lifecycle_msgs.srv", "rcl_interfaces.msg", "povss_interfaces.msg", "povss_interfaces.srv",
)


def in_ci(environ: dict | None = None) -> bool:
    """CI=true (GitHub, GitLab and most services set it; .ci/run does too)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def missing_modules(names: tuple[str, ...] = NEEDED) -> list[str]:
    """`name (why)` for each module of `names` that does not import."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    return missing


def pytest_configure(config: pytest.Config) -> None:
    if not in_ci():
        return
    missing = missing_modules()
    if missing:
        pytest.exit(
            "CI=true and modules the test suite needs do not import (their tests would "
            "skip): " + "; ".join(missing) + ". `make setup` installs them.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """Point $XDG_CACHE_HOME (read by the text-row cache, inherited by spawned nodes) at a
    temporary folder for the whole run."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
