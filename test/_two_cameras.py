"""Two synthetic cameras for the multi-camera node test, in one process (real DDS).

    python test/_two_cameras.py NAMESPACE CONTROL_FILE [RATE_HZ]

The head camera shows a synthetic table without my mug, on NAMESPACE/head/image and
NAMESPACE/head/camera_info (frame_id head_optical, fx = fy = HEAD_FX); the wrist camera shows
a table with my mug (world 0, mug identity 0, the only mug in view) on /rig/wrist/color and
/rig/wrist/camera_info (frame_id wrist_optical, its scene's intrinsics; the test remaps the
node's wrist inputs there), and after each frame my mug's exact mask on
NAMESPACE/wrist/teach_mask with the frame's stamp. Both cameras send 320x240 rgb8 frames,
stamped sec = 1000 + i, at RATE_HZ.
Before each frame it reads the words of CONTROL_FILE: "bad wrist" makes the wrist camera send
frames in an encoding no decoder knows; "compressed" makes both send JPEG CompressedImage on
<image topic>/compressed instead of raw frames, as image_transport does; "depth" makes the
wrist camera also send its exact depth (32FC1 metres, the frame's stamp, the intrinsics its
camera_info gives) on NAMESPACE/wrist/depth. Without a word, each is off.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from _camera_script import jpeg_image, pinhole_info, run_until_stopped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from povss_lab.synthetic.depth import render_depth
from povss_lab.synthetic.world import World, sample_scene
from povss_ros.ros.conversions import array_to_image
from povss_ros.ros.dds import use_large_image_transport

SIZE = (320, 240)
HEAD_FX = 300.0  # the head camera's focal length in pixels (the wrist's is its scene's)


def scenes() -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """(head's image: no mug at all, wrist's image: my mug, my mug's mask in it, the wrist
    scene's depth and intrinsics)."""
    world = World(0)
    mine = world.identity("mug", 0)
    others = [i for i in world.identities("mug") if i != mine]
    wrist = sample_scene(np.random.default_rng(11), world, [mine], size=SIZE, exclude=others)
    head = sample_scene(np.random.default_rng(9), world, [], size=SIZE,
                        exclude=world.identities("mug"))
    return head.image, wrist.image, wrist.mask(mine), render_depth(wrist)


def main() -> None:
    ns, control = sys.argv[1].rstrip("/"), Path(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
    head_image, wrist_image, wrist_mask, wrist_depth = scenes()
    use_large_image_transport()  # as docs/ros.md asks of a camera driver
    rclpy.init()
    node = rclpy.create_node("test_two_cameras")
    pub = node.create_publisher
    topics = {"head": (f"{ns}/head/image", f"{ns}/head/camera_info"),
              "wrist": ("/rig/wrist/color", "/rig/wrist/camera_info")}
    pubs = {cam: (pub(Image, image, qos_profile_sensor_data),
                  pub(CompressedImage, image + "/compressed", qos_profile_sensor_data),
                  pub(CameraInfo, info, qos_profile_sensor_data))
            for cam, (image, info) in topics.items()}
    mask_pub = pub(Image, f"{ns}/wrist/teach_mask", 10)
    depth_pub = pub(Image, f"{ns}/wrist/depth", qos_profile_sensor_data)
    mask = np.where(wrist_mask, 255, 0).astype(np.uint8)
    k = wrist_depth.intrinsics
    i = 0
    while rclpy.ok():
        words = set(control.read_text().split()) if control.exists() else set()
        for cam, rgb in (("head", head_image), ("wrist", wrist_image)):
            msg = array_to_image(rgb, "rgb8")
            msg.header.frame_id = f"{cam}_optical"
            msg.header.stamp.sec = 1000 + i
            if cam == "wrist" and {"bad", "wrist"} <= words:
                msg.encoding = "no_such_encoding"
            image_pub, jpeg_pub, info_pub = pubs[cam]
            info_pub.publish(pinhole_info(msg, HEAD_FX) if cam == "head" else
                             pinhole_info(msg, k.fx, k.fy, k.cx, k.cy))
            if "compressed" in words:
                jpeg_pub.publish(jpeg_image(msg, rgb[:, :, ::-1]))
            else:
                image_pub.publish(msg)
            if cam == "wrist":
                mask_msg = array_to_image(mask, "mono8")
                mask_msg.header = msg.header
                mask_pub.publish(mask_msg)
                if "depth" in words:
                    depth = array_to_image(wrist_depth.depth, "32FC1")
                    depth.header = msg.header
                    depth_pub.publish(depth)
        i += 1
        time.sleep(1.0 / rate)  # the cameras' frame rate, not a wait on anything


if __name__ == "__main__":
    run_until_stopped(main)
