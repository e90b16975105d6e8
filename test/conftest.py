"""Keep the test suite out of the user's home: caches go to a per-run temporary folder.

In CI (the environment variable CI set, as CI services and .ci/run do), a module the suite
needs that does not import fails the run at once, naming it: the ROS tests `importorskip`
rclpy and the messages so that a machine without ROS can run the rest, and in CI those skips
would turn a broken install into a green run.

Under `colcon test` (colcon sets COLCON=1 and puts the install space on PYTHONPATH) the suite
tests the installed povss_ros, not this source tree: see `use_the_install`.
"""

import importlib
import os
import sys
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def installed_runtime(environ: dict | None = None) -> Path | None:
    """The first PYTHONPATH entry that holds a povss_ros other than this source tree's (the
    install space's site-packages under `colcon test`), else None."""
    environ = os.environ if environ is None else environ
    for entry in environ.get("PYTHONPATH", "").split(os.pathsep):
        if not entry or not (Path(entry) / "povss_ros" / "__init__.py").is_file():
            continue
        if Path(entry).resolve() != SOURCE_ROOT:
            return Path(entry)
    return None


def use_the_install() -> Path | None:
    """Under `colcon test`, make povss_ros import from the install space; return where from.

    colcon runs `python -m pytest` in the source folder, and pytest adds the source root to
    sys.path (`-m` and pyproject's `pythonpath`), ahead of the install on PYTHONPATH: without
    this the suite would test the checkout, not what `colcon build` installed (a file
    setup.py forgets to install would pass). povss_ros is imported here from the install, so
    every later `import povss_ros...` of the suite takes that copy; povss_lab (not installed,
    it runs from a checkout) still comes from the source root. Processes the tests start
    inherit PYTHONPATH with the install first, and PYTHONSAFEPATH=1 keeps their working
    directory (the source root) off the front of their path; a test that puts the source
    root first in a child's PYTHONPATH itself still runs the checkout in that child.
    Outside colcon (COLCON unset), or with no installed copy on PYTHONPATH, nothing changes;
    the report header names the povss_ros under test either way."""
    if os.environ.get("COLCON") != "1":
        return None
    installed = installed_runtime()
    if installed is None:  # not built (or a test's own pytest on the checkout): the source
        return None
    sys.path.insert(0, str(installed))
    importlib.invalidate_caches()
    sys.modules.pop("povss_ros", None)
    importlib.import_module("povss_ros")
    rest = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(installed), str(SOURCE_ROOT), *[e for e in rest if e != str(installed)]])
    os.environ["PYTHONSAFEPATH"] = "1"
    return installed


INSTALLED = use_the_install()

# Every module a test module imports or `importorskip`s (test_suite_guards checks the list
# against the suite). launch_ros is not here: it is not on PyPI, so CI has none.
NEEDED = (
    "numpy", "torch", "safetensors", "scipy", "cv2", "PIL", "open_clip", "imgviz",
    "matplotlib", "rclpy", "builtin_interfaces.msg", "std_msgs.msg", "sensor_msgs.msg",
    "geometry_msgs.msg", "diagnostic_msgs.msg", "visualization_msgs.msg", "lifecycle_msgs.msg",
    "lifecycle_msgs.srv", "rcl_interfaces.msg", "povss_interfaces.msg", "povss_interfaces.srv",
    # the scratch-workspace test: the real colcon, and the package crawl rosdep uses
    "colcon_core", "catkin_pkg",
    # the teach UI: its server, and the browser driver of its tests
    "starlette", "uvicorn", "selenium",
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


def pytest_report_header(config: pytest.Config) -> str:
    """Which povss_ros the run tests: the checkout's, or an install space's (colcon test)."""
    where = INSTALLED if INSTALLED is not None else SOURCE_ROOT
    return f"povss_ros under test: {where / 'povss_ros'}" + (
        " (installed)" if INSTALLED is not None else "")


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


@pytest.fixture(scope="module")
def synper():
    """SYN^per on world 0 (the identities the small model was trained on), one per module."""
    from povss_lab.eval.datasets.synper import SynPer

    return SynPer(0)


@pytest.fixture(scope="module")
def small_segmenter(synper):
    """The committed small model on the CPU with SYN^per's vocabulary, one per module (its
    tests set concepts and thresholds on it; `_small_model.engine_on` clears the concepts)."""
    import torch
    from _small_model import SMALL

    from povss_ros import Segmenter

    torch.set_num_threads(1)
    return Segmenter.from_weights(SMALL, synper.vocabulary, device="cpu")
