"""A camera stand-in: publish image files at a fixed rate, as a camera driver would.

For trying the node without a camera, and for the node benchmark, which streams frames from
another process over real DDS. Stamps are wall-clock time, so a subscriber can measure
end-to-end latency. Ctrl-C (or SIGTERM) stops it cleanly, with status 0.

    python -m povss_ros.ros.replay IMAGE... --topic /camera/image_raw --rate 30 --seconds 10
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import numpy as np


def load_frames(paths: list[str]) -> list[np.ndarray]:
    """RGB frames from image files."""
    from ..io import read_rgb

    return [read_rgb(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    """Publish the frames; 0 when done or stopped by Ctrl-C, 130 on Ctrl-C before ROS starts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files, published in this order")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frame-id", default="camera_optical")
    parser.add_argument("--loop", action="store_true", help="cycle through the images")
    args = parser.parse_args(argv)
    try:
        frames = [np.ascontiguousarray(f[:, :, ::-1]) for f in load_frames(args.images)]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # Our own handler, not rclpy's: a signal only ends the loop, and ROS is torn down after it.
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        sent = _publish(frames, args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"published {sent} frames", flush=True)
    return 0


def _publish(frames: list[np.ndarray], args: argparse.Namespace, stop: threading.Event) -> int:
    """Publish until done, `args.seconds` ran out or `stop` is set; returns the frames sent."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from .conversions import array_to_image
    from .dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("povss_replay")
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    period = 1.0 / args.rate
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < args.seconds and not stop.is_set():
            if not args.loop and sent >= len(frames) and len(frames) > 1:
                break
            msg = array_to_image(frames[sent % len(frames)], "bgr8")
            msg.header.frame_id = args.frame_id
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            sent += 1
            stop.wait(max(0.0, start + sent * period - time.monotonic()))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return sent


if __name__ == "__main__":
    sys.exit(main())
