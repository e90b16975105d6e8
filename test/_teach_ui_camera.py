"""A camera stand-in for the teach UI test: a synthetic table with two mugs, mine and a
look-alike, published as rgb8 frames over real DDS.

Run as its own process:
    python test/_teach_ui_camera.py TRUTH_JSON [RATE_HZ]
Renders one scene of the synthetic world (world 0: my mug is mug identity 0, the look-alike
identity 1, no other mug) and writes to TRUTH_JSON each mug's box (x0, y0, x1, y1, pixels)
and a pixel well inside it, so the test marks them as a person would. Then publishes the
scene on /cam/image with stamps sec = 1000 + i until SIGINT.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from _camera_script import run_until_stopped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from povss_lab.synthetic.world import World, sample_scene
from povss_ros.ros.conversions import array_to_image
from povss_ros.ros.dds import use_large_image_transport

SIZE = (320, 240)
SCENE_SEED = 6


def inner_point(mask: np.ndarray) -> list[float]:
    """The pixel of `mask` farthest from its edge (a click surely on the object)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return [float(x), float(y)]


def scene() -> tuple[np.ndarray, dict]:
    world = World(0)
    mugs = world.identities("mug")
    mine, other = mugs[0], mugs[1]
    shot = sample_scene(np.random.default_rng(SCENE_SEED), world, [mine, other], n_objects=(3, 4),
                        size=SIZE, exclude=mugs[2:])
    truth = {}
    for key, ident in (("mine", mine), ("other", other)):
        mask = shot.mask(ident)
        ys, xs = np.nonzero(mask)
        truth[key] = {"box": [float(xs.min()), float(ys.min()), float(xs.max() + 1),
                              float(ys.max() + 1)], "point": inner_point(mask),
                      "pixels": int(mask.sum())}
    return shot.image, truth


def main() -> None:
    truth_path = Path(sys.argv[1])
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    image, truth = scene()
    truth_path.write_text(json.dumps(truth))
    use_large_image_transport()  # as docs/ros.md asks of a camera driver: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("test_teach_ui_camera")
    pub = node.create_publisher(Image, "/cam/image", qos_profile_sensor_data)
    i = 0
    while rclpy.ok():
        msg = array_to_image(image, "rgb8")
        msg.header.frame_id = "camera_optical"
        msg.header.stamp.sec = 1000 + i
        pub.publish(msg)
        i += 1
        time.sleep(1.0 / rate)  # the camera's frame rate, not a wait on anything


if __name__ == "__main__":
    run_until_stopped(main)
