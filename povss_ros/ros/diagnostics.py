"""Frame statistics and their /diagnostics message.

The status is WARN while a configure error stands or a frame error is under `ERROR_HOLD_S`
old, else OK; `last_error` keeps naming the last frame error, with `last_error_age_s`."""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..cameras import describe_cameras

# A frame error keeps the status at WARN this long; then, with no newer error, it is OK again
# (last_error still names it, with its age).
ERROR_HOLD_S = 5.0
# rate_hz counts the frames finished in this many past seconds: long enough to hold a few
# frames of a CPU that segments one a second, short enough that a stopped stream reads 0 soon.
RATE_WINDOW_S = 10.0


class FrameStats:
    """Rolling numbers about the image pipeline, updated by the worker thread."""

    def __init__(self, window: int = 60, error_hold: float = ERROR_HOLD_S) -> None:
        self.done: deque[float] = deque(maxlen=window)  # wall time of each finished frame
        self.latency: deque[float] = deque(maxlen=window)  # stamp -> published, seconds
        self.processing: deque[float] = deque(maxlen=window)
        self.model_seconds: deque[float] = deque(maxlen=window)
        self.postprocess_seconds: deque[float] = deque(maxlen=window)
        self.publish_seconds: deque[float] = deque(maxlen=window)
        self.frames = 0
        self.batched = 0  # frames that shared SAN's forward with another camera's frame
        self.dropped = 0
        self.frames_3d = 0  # with use_depth: frames whose objects got 3D
        self.frames_no_3d = 0  # ... and frames that got none (last_error says why)
        self.last_error = ""
        self.errors = 0
        self.error_hold = error_hold
        self._error_at: float | None = None  # monotonic time of last_error
        self._lock = threading.Lock()

    def stages(self, model: float, postprocess: float, publish: float) -> None:
        """One frame's time per stage, in seconds."""
        with self._lock:
            self.model_seconds.append(model)
            self.postprocess_seconds.append(postprocess)
            self.publish_seconds.append(publish)

    def depth_frame(self, problem: str, is_error: bool = True, where: str = "") -> None:
        """A frame processed with use_depth: `problem` is why it has no 3D ("" if it has);
        `is_error` False for an expected gap (the first depth image has not come yet);
        `where`: which camera, as the error should say it (" on camera wrist")."""
        with self._lock:
            if problem:
                self.frames_no_3d += 1
            else:
                self.frames_3d += 1
        if problem and is_error:
            self.error(f"3D skipped{where}: {problem}")

    def frame_done(self, seconds: float, stamp_ns: int, batch: int = 1) -> None:
        """A frame published, `seconds` after the worker took it; `batch`: the frames that
        went through SAN's forward with it, itself included."""
        now = time.time()
        with self._lock:
            self.frames += 1
            self.batched += batch > 1
            self.done.append(time.monotonic())
            self.processing.append(seconds)
            self.latency.append(now - stamp_ns * 1e-9)

    def error(self, text: str) -> None:
        with self._lock:
            self.last_error = text
            self.errors += 1
            self._error_at = time.monotonic()

    def error_age(self) -> float | None:
        """Seconds since the last error, None if there was none."""
        at = self._error_at
        return None if at is None else time.monotonic() - at

    def current_error(self) -> str:
        """The last error while it is younger than `error_hold` seconds, else ''."""
        age = self.error_age()
        return self.last_error if age is not None and age < self.error_hold else ""

    def rate(self, now: float | None = None) -> float:
        """Frames per second over the frames finished in the last `RATE_WINDOW_S` seconds
        (monotonic `now`); 0 once the stream stopped or the node paused that long."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self.done if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-9, recent[-1] - recent[0])


def _median_ms(values: deque[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f}" if values else "n/a"


def diagnostics_message(node, stats: FrameStats, engine,  # noqa: ANN001
                        cameras: dict[str, FrameStats] | None = None) -> DiagnosticArray:
    """One status: the lifecycle state, the frame numbers (of all cameras, and of each named
    camera in `cameras` under keys "<camera>/<key>"), and the model's when loaded."""
    status = DiagnosticStatus()
    status.name = f"{node.get_fully_qualified_name().lstrip('/')}: segmentation"  # "node: task"
    state = node.state_label()
    status.hardware_id = engine.describe() if engine is not None else "no model loaded"
    error = stats.current_error() or node.configure_error
    status.level = DiagnosticStatus.WARN if error else DiagnosticStatus.OK
    status.message = error or state
    age = stats.error_age()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    values = {
        "lifecycle_state": state,
        "rate_hz": f"{stats.rate():.2f}",
        "frames": str(stats.frames),
        "batched_frames": str(stats.batched),
        "dropped_frames": str(stats.dropped),
        "frames_with_3d": str(stats.frames_3d),
        "frames_without_3d": str(stats.frames_no_3d),
        "latency_ms_median": _median_ms(stats.latency),
        "processing_ms_median": _median_ms(stats.processing),
        "model_ms_median": _median_ms(stats.model_seconds),
        "postprocess_ms_median": _median_ms(stats.postprocess_seconds),
        "publish_ms_median": _median_ms(stats.publish_seconds),
        "peak_rss_mib": f"{rss_mib:.0f}",
        "last_error": stats.last_error,
        "last_error_age_s": "" if age is None else f"{age:.1f}",
        "errors": str(stats.errors),
    }
    for name, own in (cameras or {}).items():
        values.update({
            f"{name}/rate_hz": f"{own.rate():.2f}",
            f"{name}/frames": str(own.frames),
            f"{name}/dropped_frames": str(own.dropped),
            f"{name}/frames_with_3d": str(own.frames_3d),
            f"{name}/frames_without_3d": str(own.frames_no_3d),
            f"{name}/latency_ms_median": _median_ms(own.latency),
            f"{name}/last_error": own.last_error,
        })
    if engine is not None:
        buffers = [memory.capture for memory in engine.cameras.values()]  # all cameras'
        values.update({
            "device": engine.device_name(),
            "precision": engine.segmenter.precision,
            "precision_reason": engine.segmenter.precision_reason,
            "gpu_memory_mib": engine.gpu_memory_mib(),
            "concepts": str(len(engine.concept_entries())),
            "vocabulary_size": str(len(engine.vocabulary)),
            "input_min_size": str(engine.segmenter.input_min_size),
            "resize": engine.segmenter.resize,
            "capture_buffer_size": str(engine.capture.capacity),
            "capture_buffer_mib_held": f"{sum(held.nbytes for held in buffers) / 2**20:.1f}",
            "capture_encodings_mib_held":
                f"{sum(held.encoding_nbytes for held in buffers) / 2**20:.3f}",
            "teaching": str(engine.teaching),
            "cameras": describe_cameras(list(engine.cameras)),
            "batch_cameras": str(node.batching()).lower(),
        })
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.status = [status]
    return msg
