"""Frame statistics and their /diagnostics message."""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


class FrameStats:
    """Rolling numbers about the image pipeline, updated by the worker thread."""

    def __init__(self, window: int = 60) -> None:
        self.done: deque[float] = deque(maxlen=window)  # wall time of each finished frame
        self.latency: deque[float] = deque(maxlen=window)  # stamp -> published, seconds
        self.processing: deque[float] = deque(maxlen=window)
        self.model_seconds: deque[float] = deque(maxlen=window)
        self.frames = 0
        self.dropped = 0
        self.last_error = ""
        self._lock = threading.Lock()

    def frame_done(self, seconds: float, stamp_ns: int) -> None:
        now = time.time()
        with self._lock:
            self.frames += 1
            self.done.append(time.monotonic())
            self.processing.append(seconds)
            self.latency.append(now - stamp_ns * 1e-9)

    def error(self, text: str) -> None:
        self.last_error = text

    def rate(self) -> float:
        with self._lock:
            if len(self.done) < 2:
                return 0.0
            return (len(self.done) - 1) / max(1e-9, self.done[-1] - self.done[0])


def _median_ms(values: deque[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}" if values else "n/a"


def diagnostics_message(node, stats: FrameStats, engine) -> DiagnosticArray:  # noqa: ANN001
    """One status: the lifecycle state, the frame numbers, and the model's when loaded."""
    status = DiagnosticStatus()
    status.name = f"{node.get_fully_qualified_name()}: segmentation"
    state = node.state_label()
    status.hardware_id = engine.describe() if engine is not None else "no model loaded"
    error = stats.last_error or node.configure_error
    status.level = DiagnosticStatus.WARN if error else DiagnosticStatus.OK
    status.message = error or state
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    values = {
        "lifecycle_state": state,
        "rate_hz": f"{stats.rate():.2f}",
        "frames": str(stats.frames),
        "dropped_frames": str(stats.dropped),
        "latency_ms_median": _median_ms(stats.latency),
        "processing_ms_median": _median_ms(stats.processing),
        "model_ms_median": _median_ms(stats.model_seconds),
        "peak_rss_mib": f"{rss_mib:.0f}",
        "last_error": stats.last_error,
    }
    if engine is not None:
        values.update({
            "device": engine.device_name(),
            "gpu_memory_mib": engine.gpu_memory_mib(),
            "concepts": str(len(engine.concept_entries())),
            "vocabulary_size": str(len(engine.vocabulary)),
            "input_min_size": str(engine.segmenter.model.cfg.min_size),
            "capture_buffer_size": str(engine.capture.capacity),
            "teaching": str(engine.teaching),
        })
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.status = [status]
    return msg
