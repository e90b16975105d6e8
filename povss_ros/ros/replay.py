"""A camera stand-in: publish image files at a fixed rate, as a camera driver would.

For trying the node without a camera, and for the node benchmark, which streams frames from
another process over real DDS. Stamps are wall-clock time, so a subscriber can measure
end-to-end latency.

    python -m povss_ros.ros.replay IMAGE... --topic /camera/image_raw --rate 30 --seconds 10
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def load_frames(paths: list[str]) -> list[np.ndarray]:
    """RGB frames from image files."""
    from ..io import read_rgb

    return [read_rgb(p) for p in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files, published in this order")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frame-id", default="camera_optical")
    parser.add_argument("--loop", action="store_true", help="cycle through the images")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from .conversions import array_to_image

    frames = [np.ascontiguousarray(f[:, :, ::-1]) for f in load_frames(args.images)]
    from .dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("povss_replay")
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    period = 1.0 / args.rate
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < args.seconds:
            if not args.loop and sent >= len(frames) and len(frames) > 1:
                break
            msg = array_to_image(frames[sent % len(frames)], "bgr8")
            msg.header.frame_id = args.frame_id
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            sent += 1
            time.sleep(max(0.0, start + sent * period - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        print(f"published {sent} frames", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
