"""The README's install, as a user types it: a scratch colcon workspace in a temporary folder,
this repository in its `src/`, the interfaces linked beside it, plain `colcon build`, then
the node started from the install.

The real colcon (colcon-common-extensions from PyPI) builds both packages, povss_interfaces
with cmake; nothing of this checkout is on any path the build or the node sees. ROS comes
from this venv's wheels, which stand in for `source /opt/ros/$ROS_DISTRO/setup.bash`: the
venv is activated and AMENT_PREFIX_PATH names it, as that script would name /opt/ros/...;
everything else is what the README says, in a shell started with a minimal environment.
Checked afterwards: colcon built both packages, the crawl rosdep makes (catkin_pkg's) finds
both (so `rosdep install --from-paths src --ignore-src` resolves `povss_interfaces` to the
workspace), `ros2 run povss_ros povss_node --help` finds the executable the way ros2 run
does (the ament index, then `<prefix>/lib/povss_ros/`), and the node started from there
comes up active on the installed model with the workspace's povss_interfaces, and ends with
status 0 on Ctrl-C. About a minute on two CPU cores (the C code the interfaces generate).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _repository_files() -> list[str]:
    """What `git clone` of this checkout gives (tracked files, as they are in the working
    tree), plus files not yet added that git does not ignore (no dot-folders, nothing over
    50 MB such as downloaded weights); no links."""
    def listed(*flags: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *flags], cwd=ROOT, check=True,
                             capture_output=True).stdout.decode()
        return [p for p in out.split("\0") if p]

    files = set(listed()) | {p for p in listed("-o", "--exclude-standard")
                             if not p.startswith(".") and (ROOT / p).is_file()
                             and (ROOT / p).stat().st_size < 50_000_000}
    return sorted(p for p in files if (ROOT / p).is_file() and not (ROOT / p).is_symlink())


def _clone_into(dest: Path) -> None:
    """`git clone <this repository> povss_ros`, from the working tree (uncommitted edits
    included)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        for rel in _repository_files():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    else:  # an unpacked source archive
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".*", "build", "install", "log", "__pycache__", "*.egg-info"))


def _underlay() -> list[str]:
    """The lines that stand in for `source /opt/ros/$ROS_DISTRO/setup.bash`."""
    venv = Path(sys.prefix)
    if (venv / "bin" / "activate").is_file():  # ROS 2 from the PyPI wheels (make setup)
        return [f"source {shlex.quote(str(venv / 'bin' / 'activate'))}",
                f"export AMENT_PREFIX_PATH={shlex.quote(str(venv))}"]
    distro = os.environ.get("ROS_DISTRO", "")
    setup = Path("/opt/ros") / distro / "setup.bash"
    if distro and setup.is_file():  # a ROS 2 install
        return [f"source {shlex.quote(str(setup))}"]
    pytest.fail(f"no ROS 2 underlay: {sys.executable} is not in a venv and "
                "/opt/ros/$ROS_DISTRO/setup.bash does not exist")


def _user_env(home: Path) -> dict[str, str]:
    """A fresh login's environment: none of this checkout's PYTHONPATH (the Makefile sets
    it), no sourced workspace; a scratch home (no colcon defaults of the machine's user, the
    node's default concept store kept out of the real one)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "LANG": "C.UTF-8", "TMPDIR": str(home),
           "ROS_AUTOMATIC_DISCOVERY_RANGE":
               os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"),
           "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", "71"), "PYTHONUNBUFFERED": "1"}
    if "XDG_CACHE_HOME" in os.environ:  # the suite's private cache (conftest)
        env["XDG_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"]
    return env


def _bash(lines: list[str], cwd: Path, env: dict[str, str], timeout: float,
          ) -> subprocess.CompletedProcess:
    script = "set -eo pipefail\n" + "\n".join(lines) + "\n"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _build_logs(ws: Path) -> str:
    logs = sorted((ws / "log" / "latest_build").glob("*/stderr.log"))
    return "\n".join(f"--- {p.parent.name} stderr:\n{p.read_text()[-2000:]}" for p in logs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str], list[str]]:
    """The README's steps up to `colcon build`; returns (workspace, environment, underlay)."""
    pytest.importorskip("colcon_core", reason="colcon not installed (make setup installs it)")
    pytest.importorskip("catkin_pkg", reason="catkin_pkg not installed (make setup installs it)")
    ws = tmp_path_factory.mktemp("ws")
    env = _user_env(tmp_path_factory.mktemp("home"))
    underlay = _underlay()
    (ws / "src" / "povss_ros").mkdir(parents=True)
    _clone_into(ws / "src" / "povss_ros")
    # The README, verbatim from here (the clone above is its `git clone ... povss_ros`).
    out = _bash([*underlay,
                 "cd src",
                 "ln -s povss_ros/povss_interfaces povss_interfaces",
                 "cd ..",
                 "colcon build"], ws, env, timeout=900)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n{_build_logs(ws)}"
    assert "Summary: 2 packages finished" in out.stdout, out.stdout[-3000:]
    return ws, env, underlay


def test_colcon_and_rosdep_see_both_packages_in_src(workspace):
    from catkin_pkg.packages import find_packages

    ws, _, _ = workspace
    found = {pkg.name for pkg in find_packages(str(ws / "src")).values()}
    assert found == {"povss_ros", "povss_interfaces"}, found
    for pkg in ("povss_ros", "povss_interfaces"):
        assert (ws / "install" / pkg / "share" / pkg / "package.xml").is_file(), pkg


def test_ros2_run_finds_the_node_in_the_install_and_its_help_runs(workspace):
    """`ros2 run povss_ros povss_node --help`, resolved as ros2 run resolves it."""
    ws, env, underlay = workspace
    find = ("from ament_index_python.packages import get_package_prefix as p; "
            "import povss_interfaces.srv as s, povss_ros as r; "
            "print(p('povss_ros'), p('povss_interfaces'), r.__file__, s.__file__, sep='\\n')")
    out = _bash([*underlay, "source install/setup.bash",
                 f"python -c {shlex.quote(find)}"], ws, env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    prefix, interfaces_prefix, runtime, interfaces = out.stdout.split()
    install = ws / "install"
    assert Path(prefix) == install / "povss_ros", out.stdout
    assert Path(interfaces_prefix) == install / "povss_interfaces", out.stdout
    assert Path(runtime).is_relative_to(install / "povss_ros"), out.stdout
    assert Path(interfaces).is_relative_to(install / "povss_interfaces"), out.stdout

    exe = Path(prefix) / "lib" / "povss_ros" / "povss_node"
    assert exe.is_file() and os.access(exe, os.X_OK), sorted(exe.parent.iterdir())
    out = _bash([*underlay, "source install/setup.bash", f"{shlex.quote(str(exe))} --help"],
                ws, env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("usage: povss_node"), out.stdout[:500]


def test_the_installed_node_comes_up_and_ends_on_ctrl_c(workspace):
    """The node from the install, on the model the install ships, goes active (its services
    typed by the workspace's povss_interfaces) and ends with status 0 on SIGINT."""
    ws, env, underlay = workspace
    prefix = ws / "install" / "povss_ros"
    model = prefix / "share" / "povss_ros" / "models" / "syn_small.safetensors"
    assert model.is_file()
    run = (f"exec {shlex.quote(str(prefix / 'lib' / 'povss_ros' / 'povss_node'))} --ros-args "
           f"-p weights:={shlex.quote(str(model))} -p device:=cpu -r __ns:=/colcon_ws")
    script = "\n".join([*underlay, "source install/setup.bash", run])
    proc = subprocess.Popen(["bash", "-c", script], cwd=ws, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("povss active" in line for line in lines), 180,
                   "the installed node reports 'povss active'", proc=proc)
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    text = "".join(lines)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
