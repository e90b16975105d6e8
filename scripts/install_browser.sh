#!/usr/bin/env bash
# Headless Chromium and its driver, Debian's packages, for the teach UI's browser tests
# (test/test_teach_ui.py, driven by Selenium). Idempotent: nothing to do when both are on PATH.
# Where apt-get is not there, or neither root nor sudo is, it says so and leaves it: those
# tests then skip, except in CI (CI=true), where they fail naming what is missing.
set -euo pipefail
if command -v chromedriver >/dev/null && { command -v chromium >/dev/null ||
        command -v chromium-browser >/dev/null; }; then
    exit 0
fi
why="the teach UI's browser tests need chromium and chromedriver"
if ! command -v apt-get >/dev/null; then
    echo "warning: no apt-get: install chromium and chromedriver yourself ($why)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
        echo "warning: not root and no sudo: apt-get install chromium chromium-driver ($why)" >&2
        exit 0
    fi
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing chromium and chromium-driver ($why)"
$sudo apt-get install -y -q chromium chromium-driver >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
