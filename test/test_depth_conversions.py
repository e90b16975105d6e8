"""Depth images and camera info at the node's boundary (povss_ros.ros.conversions)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS messages not installed (make setup)")
pytestmark = pytest.mark.ros  # the messages of each distribution `make test` covers

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from povss_ros.objects import lift  # noqa: E402
from povss_ros.ros.conversions import (  # noqa: E402
    MAX_DEPTH_M,
    UnsupportedEncoding,
    array_to_image,
    camera_info_at,
    depth_to_metres,
    intrinsics_from_info,
)

K = [500.0, 0.0, 319.5, 0.0, 510.0, 239.5, 0.0, 0.0, 1.0]


def info(**fields: object) -> CameraInfo:
    msg = CameraInfo(width=640, height=480, k=K)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_16uc1_millimetres_big_endian_and_padded_rows():
    mm = np.array([[0, 1000, 65535], [250, 0, 1]], np.uint16)
    msg = Image(height=2, width=3, encoding="16UC1", is_bigendian=1, step=8)
    rows = [r.astype(">u2").tobytes() + b"\0\0" for r in mm]  # 2 padding bytes a row
    msg.data = b"".join(rows)
    got = depth_to_metres(msg)
    assert got.dtype == np.float32 and np.isnan(got[0, 0]) and np.isnan(got[1, 1])
    np.testing.assert_allclose(got[~np.isnan(got)], [1.0, 65.535, 0.25, 0.001], rtol=1e-6)


def test_32fc1_metres_with_every_kind_of_missing_reading():
    raw = np.array([[1.5, 0.0, -1.0], [np.nan, np.inf, 0.25]], np.float32)
    got = depth_to_metres(array_to_image(raw, "32FC1"))
    assert got[0, 0] == 1.5 and got[1, 2] == 0.25 and np.isnan(got).sum() == 4


def test_depth_beyond_the_maximum_range_is_no_reading():
    """A driver's float maximum (3.4e38) or 1e30 m is no reading, like 0 and NaN: no consumer
    sees it (battery failure (b): it was published as 3D at infinity, or z = 1e30)."""
    far = np.float32(3.4e38)
    raw = np.array([[far, 1e30, MAX_DEPTH_M], [np.nextafter(np.float32(MAX_DEPTH_M), far),
                                              2.0, 1e3]], np.float32)
    got = depth_to_metres(array_to_image(raw, "32FC1"))
    assert got[0, 2] == MAX_DEPTH_M and got[1, 1] == 2.0  # the bound itself is a reading
    assert np.isnan(got[0, :2]).all() and np.isnan(got[1, ::2]).all()
    assert MAX_DEPTH_M * 1000 > 65535  # every 16UC1 millimetre value stays a reading
    near = depth_to_metres(array_to_image(raw, "32FC1"), max_depth_m=2.0)
    assert np.isnan(near).sum() == 5 and near[1, 1] == 2.0
    mm = depth_to_metres(array_to_image(np.array([[1500, 2500]], np.uint16), "16UC1"),
                         max_depth_m=2.0)
    assert mm[0, 0] == pytest.approx(1.5) and np.isnan(mm[0, 1])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_depth_m"):
            depth_to_metres(array_to_image(raw, "32FC1"), max_depth_m=bad)


@pytest.mark.parametrize("value", [3.4e38, 1e30, 101.0])
def test_an_object_at_an_absurd_depth_gets_no_3d(value):
    """What the node lifts (objects.lift) from such a depth image: nothing, not a point at
    infinity; the same region at 2 m is lifted."""
    mask = np.ones((20, 20), bool)
    intr = intrinsics_from_info(info(width=20, height=20,
                                     k=[50.0, 0, 9.5, 0, 50.0, 9.5, 0, 0, 1]))
    depth = depth_to_metres(array_to_image(np.full((20, 20), value, np.float32), "32FC1"))
    assert lift(mask, (0, 0, 20, 20), depth, intr, 3.0) is None
    near = depth_to_metres(array_to_image(np.full((20, 20), 2.0, np.float32), "32FC1"))
    points = lift(mask, (0, 0, 20, 20), near, intr, 3.0)
    assert points is not None and np.isfinite(points.centroid).all()
    assert abs(float(points.centroid[2]) - 2.0) < 1e-3


def test_an_unknown_depth_encoding_is_refused_naming_the_right_ones():
    with pytest.raises(UnsupportedEncoding, match="16UC1 .* 32FC1"):
        depth_to_metres(array_to_image(np.zeros((2, 2, 3), np.uint8), "bgr8"))


def test_k_p_binning_and_region_of_interest():
    k = intrinsics_from_info(info())
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (500, 510, 319.5, 239.5, 640, 480)
    rectified = info(p=[480.0, 0, 320.0, 0, 0, 490.0, 240.0, 0, 0, 0, 1.0, 0])
    p = intrinsics_from_info(rectified, "p")
    assert (p.fx, p.fy, p.cx, p.cy) == (480, 490, 320, 240)
    with pytest.raises(ValueError, match="P is all zero"):
        intrinsics_from_info(info(), "p")
    binned = intrinsics_from_info(info(binning_x=2, binning_y=2))
    assert (binned.fx, binned.cx, binned.width, binned.height) == (250, 159.75, 320, 240)
    crop = info()
    crop.roi.x_offset, crop.roi.y_offset, crop.roi.width, crop.roi.height = 100, 50, 320, 240
    roi = intrinsics_from_info(crop)
    assert (roi.cx, roi.cy, roi.width, roi.height) == (219.5, 189.5, 320, 240)


@pytest.mark.parametrize(("fields", "reason"), [
    ({"k": [0.0] * 9}, "positive focal"),
    ({"width": 0}, "no image size"),
    ({"k": [1e-40, 0, 320, 0, 1e-40, 240, 0, 0, 1]}, "not a camera's"),
    ({"k": [500, 0, 1e9, 0, 500, 240, 0, 0, 1]}, "principal point"),
])
def test_camera_info_no_camera_has_is_refused(fields, reason):
    with pytest.raises(ValueError, match=reason):
        intrinsics_from_info(info(**fields))


def test_camera_info_republished_at_the_labels_size():
    half = camera_info_at(info(), 320, 240)
    assert (half.width, half.height) == (320, 240)
    assert list(half.k) == [250.0, 0.0, 159.5, 0.0, 255.0, 119.5, 0.0, 0.0, 1.0]
    assert not any(half.p)  # no P given: none invented
    assert camera_info_at(info(), 640, 480).width == 640
    other = camera_info_at(info(), 640, 640)  # another aspect: describes no such image
    assert other.width == 640 and other.height == 480
