"""An RGB-D camera stand-in for the 3D node tests: a synthetic scene with exact depth.

Run as its own process (real DDS between processes):
    python test/_rgbd_camera.py CONTROL_FILE TRUTH_JSON [RATE_HZ]

Renders one synthetic table scene with "my mug" (world 0, mug identity 0) and the same
scene with my mug taken away, with their depth and intrinsics (povss_lab.synthetic.depth),
and writes my mug's true 3D centroid to TRUTH_JSON. Then publishes, per frame, rgb8 on
/cam/image, the depth on /cam/depth and a CameraInfo on /cam/camera_info, all with the stamp
sec = 1000 + i and frame_id "camera_optical". Before each frame it reads CONTROL_FILE, one
line of words (anything after a "#" is a tag the camera ignores):
    with | without         the scene with or without my mug
    mm | m | bgr8          depth as 16UC1 millimetres, 32FC1 metres, or (bad) bgr8
    offset=MS              the depth's stamp MS milliseconds after the colour frame's
    half | wide            depth at half the resolution | of another aspect (bad)
    noinfo | zerok         no CameraInfo | a CameraInfo with K all zero (bad)
When the line changes (tag included), the camera writes "SEC LINE" to CONTROL_FILE.sent: SEC
is the stamp of the first frame sent as the new line says, so a test waits for outputs of
that frame or a later one instead of sleeping.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from _camera_script import pinhole_info, run_until_stopped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from povss_lab.synthetic.depth import render_depth
from povss_lab.synthetic.world import SceneSpec, World, render_scene, sample_spec
from povss_ros.ros.conversions import array_to_image
from povss_ros.ros.dds import use_large_image_transport

SIZE = (320, 240)
SCENE_SEED = 11


def scenes() -> tuple[dict, dict, dict]:
    """(with my mug, without it, the truth): each scene as image, depth, intrinsics."""
    world = World(0)
    mine = world.identity("mug", 0)
    others = [i for i in world.identities("mug") if i != mine]
    spec = sample_spec(np.random.default_rng(SCENE_SEED), world, [mine], size=SIZE,
                       exclude=others)
    out = []
    for objects in (spec.objects, [o for o in spec.objects if o.identity != mine]):
        scene = render_scene(SceneSpec(spec.seed, spec.size, objects, spec.photometric,
                                       spec.shadows))
        out.append((scene, render_depth(scene)))
    (scene, depth), _ = out
    index = next(o.index for o in scene.objects if o.identity == mine)
    truth = next(t for t in depth.objects if t.index == index)
    pack = [{"image": s.image, "depth": d.depth, "intrinsics": d.intrinsics} for s, d in out]
    return pack[0], pack[1], {"centroid": truth.centroid, "box_min": truth.box_min,
                              "box_max": truth.box_max}


def depth_message(depth: np.ndarray, words: set[str]) -> Image:
    if "half" in words:
        depth = depth[::2, ::2]
    if "wide" in words:
        depth = depth[:, : depth.shape[1] // 2]
    if "m" in words:
        return array_to_image(np.ascontiguousarray(depth, np.float32), "32FC1")
    if "bgr8" in words:
        return array_to_image(np.zeros((*depth.shape, 3), np.uint8), "bgr8")
    mm = np.where(np.isfinite(depth), np.round(depth * 1000), 0).astype(np.uint16)
    return array_to_image(mm, "16UC1")


def main() -> None:
    control, truth_path = Path(sys.argv[1]), Path(sys.argv[2])
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    with_mug, without_mug, truth = scenes()
    truth_path.write_text(json.dumps(truth))
    use_large_image_transport()  # as docs/ros.md asks of a camera driver: see povss_ros.ros.dds
    rclpy.init()
    node = rclpy.create_node("test_rgbd_camera")
    pubs = {name: node.create_publisher(kind, f"/cam/{name}", qos_profile_sensor_data)
            for name, kind in (("image", Image), ("depth", Image), ("camera_info", CameraInfo))}
    sent = control.with_name(control.name + ".sent")
    sent_new = control.with_name(control.name + ".sent.new")
    i, line = 0, None
    while rclpy.ok():
        text = control.read_text().strip() if control.exists() else "with"
        words = set(text.split("#")[0].split())
        if text != line:
            line = text
            sent_new.write_text(f"{1000 + i} {text}")
            sent_new.replace(sent)  # the test never reads it half-written
        scene = without_mug if "without" in words else with_mug
        msg = array_to_image(scene["image"], "rgb8")
        msg.header.frame_id = "camera_optical"
        msg.header.stamp.sec = 1000 + i
        depth = depth_message(scene["depth"], words)
        depth.header.frame_id = "camera_optical"
        offset = next((int(w[7:]) for w in words if w.startswith("offset=")), 0)
        depth.header.stamp.sec, depth.header.stamp.nanosec = 1000 + i, offset * 1_000_000
        k = scene["intrinsics"]
        info = pinhole_info(msg, k.fx, k.fy, k.cx, k.cy)
        if "zerok" in words:
            info.k = [0.0] * 9
        if "noinfo" not in words:
            pubs["camera_info"].publish(info)
        pubs["image"].publish(msg)
        pubs["depth"].publish(depth)
        i += 1
        time.sleep(1.0 / rate)  # the camera's frame rate, not a wait on anything


if __name__ == "__main__":
    run_until_stopped(main)
