"""The node's executor (`ros.executor.DrainingExecutor`): callbacks run on a pool, and its
shutdown waits for every callback it handed out, started or still queued, before rclpy
releases the executor (rclpy's own shutdown does not wait, see the module's docstring)."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
from rclpy.callback_groups import ReentrantCallbackGroup  # noqa: E402

from povss_ros.ros.executor import DrainingExecutor  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def ros():
    """A private context and node; an executor with ONE pool thread, so that a second
    callback waits in the pool's queue while the first runs."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("draining_executor_probe", context=context)
    executor = DrainingExecutor(1, context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown(timeout_sec=10)
    node.destroy_node()
    context.try_shutdown()


def _hand_out_a_blocking_callback(node, executor, release: threading.Event) -> list[str]:
    """A timer callback that blocks until `release`, running on the pool's one thread, and a
    guard condition's callback handed to the pool behind it (queued, not started)."""
    group, ran, started = ReentrantCallbackGroup(), [], threading.Event()

    def slow() -> None:
        timer.cancel()
        started.set()
        release.wait(30)
        ran.append("slow")

    timer = node.create_timer(0.01, slow, callback_group=group)
    deadline = time.monotonic() + 10
    while not started.is_set():  # bounded: a 10 ms timer fires at once
        assert time.monotonic() < deadline, "the timer never fired"
        executor.spin_once(0.1)
    late = node.create_guard_condition(lambda: ran.append("late"), callback_group=group)
    late.trigger()
    executor.spin_once(5.0)  # the guard condition is ready: handed to the busy pool
    assert ran == []
    return ran


def test_shutdown_waits_for_running_and_queued_callbacks(ros):
    node, executor = ros
    release = threading.Event()
    ran = _hand_out_a_blocking_callback(node, executor, release)
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    assert executor.shutdown(timeout_sec=30) is True
    assert time.monotonic() - start >= 0.25  # it waited for the running one ...
    assert ran == ["slow", "late"]  # ... and the queued one ran after it, with no error


def test_shutdown_gives_up_after_its_timeout(ros):
    node, executor = ros
    release = threading.Event()
    ran = _hand_out_a_blocking_callback(node, executor, release)
    start = time.monotonic()
    try:
        assert executor.shutdown(timeout_sec=0.2) is False
        assert time.monotonic() - start < 5
    finally:
        release.set()
    assert executor.drain(timeout_sec=30) is True
    # The queued one then met a released executor and did not run (rclpy prints "cannot use
    # Destroyable" for it): what every shutdown did before this executor.
    assert ran == ["slow"]


def test_a_failing_callback_raises_from_spin_once(ros):
    node, executor = ros

    def broken() -> None:
        timer.cancel()
        raise RuntimeError("callback failed")

    timer = node.create_timer(0.01, broken)
    deadline = time.monotonic() + 10
    with pytest.raises(RuntimeError, match="callback failed"):
        while time.monotonic() < deadline:
            executor.spin_once(0.1)


def test_an_entity_destroyed_while_the_wait_set_is_built_does_not_end_the_spin(ros):
    """The node replaces a concept's publishers from a service thread while the main thread
    spins: a QoS event handler destroyed between rclpy listing it and adding it to the wait
    set raises InvalidHandle there. Here the handler is destroyed for good while the node
    still lists it, so every wait meets it: the spin goes on (and works again once the node
    lets it go)."""
    from std_msgs.msg import String

    node, executor = ros
    publisher = node.create_publisher(String, "probe", 1)
    handler = publisher.event_handlers[0]
    handler.destroy()  # gone, but still among the node's waitables
    for _ in range(5):
        executor.spin_once(timeout_sec=0.01)  # raised InvalidHandle before the fix
    node.destroy_publisher(publisher)  # the node lets the handler go with its publisher
    ran = threading.Event()
    node.create_timer(0.01, ran.set)
    end = time.monotonic() + 10
    while not ran.is_set():
        assert time.monotonic() < end, "the executor stopped handing out callbacks"
        executor.spin_once(timeout_sec=0.05)
    executor.drain(10)
