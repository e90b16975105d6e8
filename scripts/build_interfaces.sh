#!/usr/bin/env bash
# Build and install the povss_interfaces package (TeachConcept / ForgetConcept / ListConcepts)
# into a Python venv that holds ROS 2 from the PyPI wheels (ros-rclpy, ros-sensor-msgs, ...),
# with plain cmake and no ROS install. See docs/ROS design notes for why these steps are needed.
#
#   scripts/build_interfaces.sh VENV_DIR
#
# Steps (each prints what it does):
#   1. installs what the venv lacks of requirements-ros-<distro>.txt (the build-only wheels:
#      ament_cmake, rosidl generators, catkin_pkg), for the distribution whose rclpy the
#      venv holds (Kilted or Jazzy: the file that pins that rclpy version);
#   2. rewrites the build machine's Python/numpy include dirs baked into the wheels' cmake files
#      (/opt/python/cpXY-cpXY/...) to this venv's real ones (idempotent);
#   3. configures, builds and installs povss_interfaces into the venv prefix
#      (build dir: build/povss_interfaces/<venv name>), skipped when the installed interfaces
#      are newer than every file in povss_interfaces/ and this script.
# Afterwards `VENV_DIR/bin/python -c "from povss_interfaces.srv import TeachConcept"` works with
# no extra environment variables.
#
# Environment:
#   POVSS_BUILD_JOBS   parallel build jobs (default 2)
#   POVSS_FORCE=1      rebuild even if up to date
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR   pip's own variables: install the wheels offline from DIR
set -euo pipefail

log() { printf '[build_interfaces] %s\n' "$*"; }
die() {
    printf '[build_interfaces] ERROR: %s\n' "$*" >&2
    exit 1
}
trap 'printf "[build_interfaces] ERROR: command failed (exit %s) at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

[ $# -eq 1 ] || die "usage: $0 VENV_DIR   (a venv with ros-rclpy[fastrtps] and ros-sensor-msgs installed)"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PKG_DIR="$REPO/povss_interfaces"
BUILD_DIR="$REPO/build/povss_interfaces"
STAMP="$BUILD_DIR/.povss_installed.stamp"
JOBS="${POVSS_BUILD_JOBS:-2}"

[ -d "$1" ] || die "venv directory '$1' does not exist (create it: python3 -m venv $1)"
VENV="$(cd "$1" && pwd)"
# A build dir per venv: the venvs of two distributions (.venv, .venv-jazzy) keep their builds.
VENV_NAME="$(basename "$VENV")"
BUILD_DIR="$BUILD_DIR/${VENV_NAME#.}"
STAMP="$BUILD_DIR/.povss_installed.stamp"
PY="$VENV/bin/python"
[ -x "$PY" ] || die "$PY not found or not executable: '$VENV' is not a Python venv"
[ -f "$PKG_DIR/package.xml" ] || die "$PKG_DIR/package.xml not found (run from a povss_ros checkout)"

command -v cmake >/dev/null 2>&1 || die "cmake not found on PATH (apt-get install cmake, or pip install cmake into the venv)"
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
    die "no C/C++ compiler found (apt-get install build-essential)"
fi

log "venv:    $VENV ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
log "package: $PKG_DIR"

# The runtime wheels must already be there: they provide sensor_msgs and the rosidl runtime.
if ! "$PY" -c "import rclpy, sensor_msgs.msg" >/dev/null 2>&1; then
    die "rclpy / sensor_msgs do not import in $PY; install the ROS 2 runtime wheels first:
    $PY -m pip install -r $REPO/requirements-ros-kilted.txt   (or requirements-ros-jazzy.txt)"
fi
[ -f "$VENV/share/sensor_msgs/cmake/sensor_msgsConfig.cmake" ] \
    || die "$VENV/share/sensor_msgs/cmake/sensor_msgsConfig.cmake missing: reinstall ros-sensor-msgs"

# --- 1. build-only wheels -------------------------------------------------------------------
# One list per distribution, shared with the Makefile: requirements-ros-<distro>.txt pins the
# runtime and the build wheels together. The venv's rclpy picks the file (Jazzy's ament_cmake in
# a Kilted venv would replace half its rosidl packages).
REQS="$("$PY" - "$REPO" <<'EOF'
import glob
import os
import re
import sys
from importlib import metadata

repo = sys.argv[1]
pin = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")
try:
    rclpy = metadata.version("ros-rclpy")
except metadata.PackageNotFoundError:
    rclpy = None
files = sorted(glob.glob(os.path.join(repo, "requirements-ros-*.txt")))
for path in files:
    with open(path, encoding="utf-8") as fh:
        reqs = [m.groups() for m in map(pin.match, fh) if m]
    if ("ros-rclpy", rclpy) not in reqs:
        continue
    print(path)
    for name, version in reqs:
        try:
            if metadata.version(name) == version:
                continue
        except metadata.PackageNotFoundError:
            pass
        print(f"{name}=={version}")
    sys.exit(0)
names = ", ".join(os.path.basename(f) for f in files) or "no requirements-ros-*.txt"
sys.exit(f"[build_interfaces] ERROR: ros-rclpy {rclpy} is pinned by none of {names}: "
         "install one of them into the venv (pip install -r FILE)")
EOF
)" || exit 1
REQ_FILE="${REQS%%$'\n'*}"
MISSING="$(printf '%s\n' "$REQS" | tail -n +2)"
if [ -n "$MISSING" ]; then
    log "installing from $(basename "$REQ_FILE"): ${MISSING//$'\n'/ }"
    # shellcheck disable=SC2086
    "$PY" -m pip install --disable-pip-version-check $MISSING \
        || die "pip install of the build wheels failed (offline? set PIP_NO_INDEX=1 PIP_FIND_LINKS=<dir with the wheels>)"
else
    log "build wheels present: every pin of $(basename "$REQ_FILE")"
fi

# --- 2. fix the include dirs baked into the wheels' cmake files ------------------------------
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INC="$("$PY" -c 'import numpy; print(numpy.get_include())' 2>/dev/null)" \
    || die "numpy does not import in $PY ($PY -m pip install numpy)"
PY_VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ ! -f "$PY_INC/Python.h" ]; then
    die "Python development headers not found: $PY_INC/Python.h does not exist.
    The generated Python bindings are C extensions and need them. Install them for the
    Python this venv was made from ($(readlink -f "$PY")):
      Debian/Ubuntu: apt-get install python${PY_VER}-dev
      Fedora/RHEL:   dnf install python3-devel
      pyenv / python.org / conda builds ship them already (reinstall that Python if they are gone)"
fi
[ -f "$NP_INC/numpy/ndarrayobject.h" ] || die "numpy C headers not found under $NP_INC (reinstall numpy: $PY -m pip install --force-reinstall numpy)"
log "python include dir: $PY_INC"
log "numpy include dir:  $NP_INC"

"$PY" - "$VENV" "$PY_INC" "$NP_INC" <<'EOF' || die "patching the wheels' cmake files failed"
import os
import re
import sys

venv, py_inc, np_inc = sys.argv[1:]
# Paths of the manylinux build machine that the ros-* wheels bake into their cmake exports.
build_root = r"/opt/python/cp3\d+-cp3\d+t?"
subs = [
    (re.compile(build_root + r"/lib/python3\.\d+t?/site-packages/numpy/(?:_core|core)/include"), np_inc),
    (re.compile(build_root + r"/include/python3\.\d+t?"), py_inc),
]
leftover = re.compile(build_root)
patched, left = [], []
for root, dirs, files in os.walk(venv):
    for f in files:
        if not f.endswith(".cmake"):
            continue
        path = os.path.join(root, f)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        if "/opt/python/" not in text:
            continue
        new = text
        for pattern, repl in subs:
            new = pattern.sub(lambda _m, r=repl: r, new)
        if new != text:
            tmp = path + ".povss-tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(new)
            os.replace(tmp, path)
            patched.append(os.path.relpath(path, venv))
        if leftover.search(new):
            left.append(os.path.relpath(path, venv))
for p in patched:
    print(f"[build_interfaces]   patched {p}")
print(f"[build_interfaces] cmake include-dir fix: {len(patched)} file(s) patched"
      + ("" if patched else " (already fixed)"))
for p in left:
    print(f"[build_interfaces] WARNING: {p} still names /opt/python/... (not an include dir);"
          " the build may fail on it", file=sys.stderr)
EOF

# --- 3. configure / build / install ----------------------------------------------------------
up_to_date() {
    [ "${POVSS_FORCE:-0}" = 1 ] && return 1
    [ -f "$STAMP" ] || return 1
    [ "$(cat "$STAMP")" = "$VENV" ] || return 1
    [ -f "$VENV/share/povss_interfaces/package.xml" ] || return 1
    # any file in the package (or this script) newer than the last install?
    [ -z "$(find "$PKG_DIR" "${BASH_SOURCE[0]}" -newer "$STAMP" -print -quit)" ] || return 1
    "$PY" -c "from povss_interfaces.srv import TeachConcept, ForgetConcept, ListConcepts" \
        >/dev/null 2>&1 || return 1
}

if up_to_date; then
    log "povss_interfaces is up to date in $VENV (stamp $STAMP; POVSS_FORCE=1 to rebuild)"
else
    if [ -f "$BUILD_DIR/CMakeCache.txt" ] && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$BUILD_DIR/CMakeCache.txt"; then
        log "build dir was configured for another prefix: removing $BUILD_DIR"
        rm -rf "$BUILD_DIR"
    fi
    mkdir -p "$BUILD_DIR"
    rm -f "$STAMP"
    start=$(date +%s)
    # The generators are Python scripts run by cmake; make sure they see this venv's
    # packages and no ROS install that happens to be sourced in this shell.
    export PATH="$VENV/bin:$PATH"
    unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH || true
    log "configuring: cmake -S $PKG_DIR -B $BUILD_DIR"
    cmake -S "$PKG_DIR" -B "$BUILD_DIR" \
        -DCMAKE_PREFIX_PATH="$VENV" \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_TESTING=OFF \
        || die "cmake configure failed (see output above; full log: $BUILD_DIR/CMakeFiles/CMakeOutput.log)"
    log "building with $JOBS job(s)"
    cmake --build "$BUILD_DIR" -j "$JOBS" || die "build failed (see compiler output above)"
    log "installing into $VENV"
    cmake --install "$BUILD_DIR" || die "install failed"
    echo "$VENV" >"$STAMP"
    log "built and installed in $(($(date +%s) - start)) s"
fi

# --- check ----------------------------------------------------------------------------------
"$PY" -c "from povss_interfaces.srv import TeachConcept, ForgetConcept, ListConcepts" \
    || die "povss_interfaces was installed but does not import in $PY (installed under $VENV/lib/python*/site-packages?)"
log "OK: $PY -c 'from povss_interfaces.srv import TeachConcept' works"
