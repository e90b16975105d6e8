"""What the test cameras (test/_*camera*.py, _image_publisher.py) share: each runs as its own
process until the test stops it with SIGINT, sends a pinhole CameraInfo with its frames, and
some send them JPEG-compressed as image_transport does."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image


def pinhole_info(image: Image, fx: float, fy: float | None = None,
                 cx: float | None = None, cy: float | None = None) -> CameraInfo:
    """A CameraInfo for `image` (its header and size) with intrinsics fx, fy (fx when None)
    and principal point cx, cy (the image centre when None); no distortion."""
    info = CameraInfo(header=image.header, height=image.height, width=image.width,
                      distortion_model="plumb_bob")
    cx = image.width / 2 if cx is None else cx
    cy = image.height / 2 if cy is None else cy
    info.k = [fx, 0.0, cx, 0.0, fx if fy is None else fy, cy, 0.0, 0.0, 1.0]
    return info


def jpeg_image(image: Image, bgr: np.ndarray) -> CompressedImage:
    """`bgr` (the pixels of `image`, in BGR order) as image_transport's compressed frame: a
    JPEG with `image`'s header."""
    jpeg = CompressedImage(header=image.header, format="rgb8; jpeg compressed bgr8")
    jpeg.data = cv2.imencode(".jpg", np.ascontiguousarray(bgr))[1].tobytes()
    return jpeg


def run_until_stopped(main: Callable[[], None]) -> None:
    """Run a test camera's `main`; SIGINT (how the tests stop it) ends it quietly, and rclpy
    is shut down either way."""
    try:
        main()
    except KeyboardInterrupt:
        pass
    finally:
        if rclpy.ok():
            rclpy.try_shutdown()
