"""The node's executor: callbacks on a pool of threads, and a shutdown that waits for them.

rclpy's `Executor.shutdown(timeout_sec)` promises to wait for the callbacks in flight, but it
sets its shut-down flag and then tests that same flag to decide whether to wait, so it never
waits (rclpy 9 of Kilted, and rolling's alike). It then destroys its guard condition, and a
callback that a pool thread has not started yet fails on it ("cannot use Destroyable"). This
executor takes its work from the public `wait_for_ready_callbacks` (rclpy's way for a custom
executor), as `MultiThreadedExecutor` does, and keeps what it handed to its pool, so that
`drain` and `shutdown` wait for exactly those callbacks. An entity another thread destroys
while the wait set is being built voids that one wait, instead of ending the spin.
"""

from __future__ import annotations

import concurrent.futures
from concurrent.futures import ThreadPoolExecutor

from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)
from rclpy.task import Task


class DrainingExecutor(Executor):
    """MultiThreadedExecutor's behaviour (one spinning thread hands ready callbacks to a
    pool), plus `drain`: wait until every callback handed out has returned."""

    def __init__(self, num_threads: int, *, context: Context | None = None) -> None:
        super().__init__(context=context)
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="povss-callback")
        self._handed: list[tuple[concurrent.futures.Future, Task]] = []

    def spin_once(self, timeout_sec: float | None = None) -> None:
        """Wait up to `timeout_sec` for a ready callback and hand it to the pool; raise the
        exception of a callback that failed since (as MultiThreadedExecutor does). Call it
        from one thread only."""
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec)
        except (ExternalShutdownException, ShutdownException, TimeoutException):
            pass
        except InvalidHandle:
            # An entity was destroyed by another thread (a concept's publishers replaced after
            # a teach) between rclpy listing it and adding it to the wait set: that wait is
            # void, and the next one is built without it.
            pass
        else:
            self._handed.append((self._pool.submit(handler), handler))
        finished = [(run, task) for run, task in self._handed if run.done()]
        self._handed = [(run, task) for run, task in self._handed if not run.done()]
        for _, task in finished:
            if task.done():  # else a coroutine waiting: it comes back as ready work
                task.result()  # raise any exception

    def drain(self, timeout_sec: float | None = None) -> bool:
        """Wait up to `timeout_sec` (None: for ever) for the callbacks handed to the pool;
        True when all have returned. Nothing new starts meanwhile: no thread spins."""
        _, running = concurrent.futures.wait([run for run, _ in self._handed], timeout_sec)
        return not running

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        """Wait for the callbacks in flight (`drain`), then let rclpy release the executor
        (its guard condition, its wait set of the nodes' handles) and end the pool's
        threads; False when some callback was still running after `timeout_sec`."""
        drained = self.drain(timeout_sec)
        super().shutdown(timeout_sec)
        self._pool.shutdown(wait=drained)
        return drained
