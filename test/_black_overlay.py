"""A stand-in for a povss node's per-camera overlay, for the teach page test: for every frame
on IMAGE_TOPIC it publishes an all-black image of the frame's size and stamp on OVERLAY_TOPIC.

    python test/_black_overlay.py IMAGE_TOPIC OVERLAY_TOPIC

A teach page watching OVERLAY_TOPIC then freezes black pictures, which no overlay of the real
node looks like: the test tells by them which overlay the page watches. Runs until SIGINT.
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from _camera_script import run_until_stopped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from povss_ros.ros.conversions import array_to_image


def main() -> None:
    image_topic, overlay_topic = sys.argv[1], sys.argv[2]
    rclpy.init()
    node = rclpy.create_node("test_black_overlay")
    pub = node.create_publisher(Image, overlay_topic, 2)

    def on_frame(msg: Image) -> None:
        black = array_to_image(np.zeros((msg.height, msg.width, 3), np.uint8), "rgb8")
        black.header = msg.header
        pub.publish(black)

    node.create_subscription(Image, image_topic, on_frame, qos_profile_sensor_data)
    rclpy.spin(node)


if __name__ == "__main__":
    run_until_stopped(main)
