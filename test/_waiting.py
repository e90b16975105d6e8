"""Bounded waits on conditions for the tests (no ROS needed): poll a predicate until it
holds, and fail after a deadline naming what was awaited. Tests wait on conditions with this,
never with a bare sleep."""

from __future__ import annotations

import inspect
import subprocess
import time
from collections.abc import Callable

POLL_S = 0.05


def describe(predicate: Callable[[], object]) -> str:
    """The predicate's source (a lambda's line), else its name."""
    try:
        return " ".join(inspect.getsource(predicate).split())
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))


def wait_until(predicate: Callable[[], object], timeout: float, what: str = "",
               proc: subprocess.Popen | None = None) -> None:
    """Return once `predicate()` is true; AssertionError after `timeout` seconds, or at once
    if `proc` (when given) has ended, naming `what` (default: the predicate's source)."""
    end = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (status {proc.returncode}) while waiting "
                                 f"for: {what or describe(predicate)}")
        if time.monotonic() >= end:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for: {what or describe(predicate)}")
        time.sleep(POLL_S)  # the polling interval of this bounded wait, not a condition
