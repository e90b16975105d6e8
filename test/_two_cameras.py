"""Two synthetic cameras for the multi-camera node test, in one process (real DDS).

    python test/_two_cameras.py NAMESPACE CONTROL_FILE [RATE_HZ]

The head camera shows a synthetic table without my mug, on NAMESPACE/head/image and
NAMESPACE/head/camera_info (frame_id head_optical); the wrist camera shows a table with my
mug (world 0, mug identity 0, the only mug in view) on /rig/wrist/color and
/rig/wrist/camera_info (frame_id wrist_optical; the test remaps the node's wrist inputs
there), and after each frame my mug's exact mask on NAMESPACE/wrist/teach_mask with the
frame's stamp. Both cameras send 320x240 rgb8 frames, stamped sec = 1000 + i, at RATE_HZ.
Before each frame it reads CONTROL_FILE: a line "bad wrist" makes the wrist camera send
frames in an encoding no decoder knows; anything else is normal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from povss_lab.synthetic.world import World, sample_scene
from povss_ros.ros.conversions import array_to_image
from povss_ros.ros.dds import use_large_image_transport

SIZE = (320, 240)


def scenes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head's image: no mug at all, wrist's image: my mug, my mug's mask in it)."""
    world = World(0)
    mine = world.identity("mug", 0)
    others = [i for i in world.identities("mug") if i != mine]
    wrist = sample_scene(np.random.default_rng(11), world, [mine], size=SIZE, exclude=others)
    head = sample_scene(np.random.default_rng(9), world, [], size=SIZE,
                        exclude=world.identities("mug"))
    return head.image, wrist.image, wrist.mask(mine)


def main() -> None:
    ns, control = sys.argv[1].rstrip("/"), Path(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 8.0
    head_image, wrist_image, wrist_mask = scenes()
    use_large_image_transport()  # as docs/ros.md asks of a camera driver
    rclpy.init()
    node = rclpy.create_node("test_two_cameras")
    pub = node.create_publisher
    topics = {"head": (f"{ns}/head/image", f"{ns}/head/camera_info"),
              "wrist": ("/rig/wrist/color", "/rig/wrist/camera_info")}
    pubs = {cam: (pub(Image, image, qos_profile_sensor_data),
                  pub(CameraInfo, info, qos_profile_sensor_data))
            for cam, (image, info) in topics.items()}
    mask_pub = pub(Image, f"{ns}/wrist/teach_mask", 10)
    mask = np.where(wrist_mask, 255, 0).astype(np.uint8)
    i = 0
    while rclpy.ok():
        bad_wrist = control.exists() and control.read_text().split() == ["bad", "wrist"]
        for cam, rgb in (("head", head_image), ("wrist", wrist_image)):
            msg = array_to_image(rgb, "rgb8")
            msg.header.frame_id = f"{cam}_optical"
            msg.header.stamp.sec = 1000 + i
            if cam == "wrist" and bad_wrist:
                msg.encoding = "no_such_encoding"
            info = CameraInfo(header=msg.header, height=msg.height, width=msg.width,
                              distortion_model="plumb_bob")
            info.k = [300.0, 0.0, msg.width / 2, 0.0, 300.0, msg.height / 2, 0.0, 0.0, 1.0]
            image_pub, info_pub = pubs[cam]
            info_pub.publish(info)
            image_pub.publish(msg)
            if cam == "wrist":
                mask_msg = array_to_image(mask, "mono8")
                mask_msg.header = msg.header
                mask_pub.publish(mask_msg)
        i += 1
        time.sleep(1.0 / rate)  # the cameras' frame rate, not a wait on anything


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the tests stop the cameras with SIGINT
        pass
    finally:
        if rclpy.ok():
            rclpy.try_shutdown()
