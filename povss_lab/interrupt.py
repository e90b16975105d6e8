"""Ctrl-C in the lab's scripts: one line on stderr and exit status 130, never a traceback.

The scripts' own `finally` blocks still run first (a demo stops the node it started, a
training run leaves its checkpoint as it was), since KeyboardInterrupt unwinds through them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """`sys.exit(main())`, with Ctrl-C (KeyboardInterrupt) ending it as status 130."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr, flush=True)
        code = INTERRUPTED
    sys.exit(code)
