"""A camera-topic listener for the transport tests: counts distinct frames for a while.

    python test/_image_counter.py TOPIC SECONDS
Prints "ready" once subscribed, then "received N" (distinct stamps) when time is up.
"""

import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from povss_ros.ros.dds import use_large_image_transport


def main() -> None:
    topic, seconds = sys.argv[1], float(sys.argv[2])
    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("test_image_counter")
    stamps: set[int] = set()
    node.create_subscription(
        Image, topic, lambda m: stamps.add(m.header.stamp.sec), qos_profile_sensor_data
    )
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    print(f"received {len(stamps)}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
