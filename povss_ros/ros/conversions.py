"""sensor_msgs/Image <-> numpy without cv_bridge (not available as a wheel).

Decoding honours `step` (row padding) and `is_bigendian`; every common camera encoding
becomes RGB uint8. Unsupported encodings raise `UnsupportedEncoding` with the list of
supported ones, so the node can warn clearly instead of crashing. Every other malformed
message (a size of 0 or beyond `MAX_SIDE`/`MAX_PIXELS`, a step shorter than a row, too little
data, an odd width in a 2-pixels-per-4-bytes YUV encoding, compressed bytes whose header Pillow
cannot read or that do not decode) raises ValueError naming what is wrong, before any OpenCV
call can assert.
"""

from __future__ import annotations

import copy
import io
import math

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# encoding -> (channels, numpy dtype)
_LAYOUT: dict[str, tuple[int, np.dtype]] = {
    "rgb8": (3, np.dtype(np.uint8)),
    "bgr8": (3, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "8UC1": (1, np.dtype(np.uint8)),
    "8UC3": (3, np.dtype(np.uint8)),
    "8UC4": (4, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "16UC1": (1, np.dtype(np.uint16)),
    "rgb16": (3, np.dtype(np.uint16)),
    "bgr16": (3, np.dtype(np.uint16)),
    "yuv422": (2, np.dtype(np.uint8)),  # UYVY
    "uyvy": (2, np.dtype(np.uint8)),
    "yuv422_yuy2": (2, np.dtype(np.uint8)),  # YUYV
    "yuyv": (2, np.dtype(np.uint8)),
    "bayer_rggb8": (1, np.dtype(np.uint8)),
    "bayer_bggr8": (1, np.dtype(np.uint8)),
    "bayer_gbrg8": (1, np.dtype(np.uint8)),
    "bayer_grbg8": (1, np.dtype(np.uint8)),
}

# OpenCV names Bayer patterns by the second row's first two pixels.
_BAYER = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}

SUPPORTED_ENCODINGS = tuple(_LAYOUT)
# YUV 4:2:2 packs two pixels in four bytes (U Y0 V Y1): the width must be even.
_PAIRED = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")
# Sizes no camera sends; a header declaring them is corrupt (or hostile), whatever its data.
MAX_SIDE = 32768
MAX_PIXELS = 100_000_000
# The compressed formats decoded, as Pillow names them (JPEG includes a camera's multi-picture
# MPO; PPM is PBM/PGM/PPM). Pillow sizes each from its header and OpenCV picks its decoder by
# the same leading bytes, so the size checked is the size decoded. Any other format, one that
# only one of them knows or bytes that Pillow could take for another, is refused undecoded.
DECODED_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "PPM")


class UnsupportedEncoding(ValueError):
    """The image's encoding is not one the node can turn into RGB."""


def image_to_array(msg, layout: tuple[int, np.dtype] | None = None) -> np.ndarray:  # noqa: ANN001
    """The raw pixel array [H, W(, C)] of an Image message, with padding and byte order fixed
    (`layout`: channels and dtype, when the caller knows them; else from the encoding)."""
    enc = msg.encoding
    if layout is None and enc not in _LAYOUT:
        raise UnsupportedEncoding(
            f"unsupported image encoding {enc!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    channels, dtype = layout or _LAYOUT[enc]
    h, w = int(msg.height), int(msg.width)
    check_size(w, h)
    if enc in _PAIRED and w % 2:
        raise ValueError(f"{enc} packs 2 pixels in 4 bytes, so its width must be even: got "
                         f"{w}x{h}")
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than one row of {w} pixels ({row_bytes} bytes) "
                         f"in {enc}")
    if len(msg.data) < step * h:
        raise ValueError(f"image data too short: {len(msg.data)} bytes for {h} rows of step "
                         f"{step} ({step * h} bytes) of a {w}x{h} {enc} image")
    buf = np.frombuffer(msg.data, np.uint8)  # bytes or array.array: both export a buffer
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def check_size(width: int, height: int) -> None:
    """ValueError for an empty or absurd declared size (see `MAX_SIDE`, `MAX_PIXELS`)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image (width or height is 0): {width}x{height}")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ValueError(f"image size {width}x{height} is beyond any camera's (at most "
                         f"{MAX_SIDE} px a side and {MAX_PIXELS // 1_000_000} megapixels)")


def image_to_rgb(msg) -> np.ndarray:  # noqa: ANN001
    """Any supported encoding -> RGB uint8 [H, W, 3]."""
    arr = image_to_array(msg)
    try:
        return _to_rgb(arr, msg.encoding)
    except cv2.error as exc:  # not expected after image_to_array's checks; never a crash
        raise ValueError(f"{msg.encoding} {arr.shape[1]}x{arr.shape[0]} image does not convert "
                         f"to RGB: {exc}") from None


def _to_rgb(arr: np.ndarray, enc: str) -> np.ndarray:
    if arr.dtype == np.uint16:  # scale the used range to 8 bits
        arr = (arr >> 8).astype(np.uint8)
    if enc in ("rgb8", "rgb16"):
        return arr
    if enc in ("bgr8", "8UC3", "bgr16"):
        return arr[:, :, ::-1].copy()
    if enc == "rgba8":
        return arr[:, :, :3].copy()
    if enc in ("bgra8", "8UC4"):
        return arr[:, :, 2::-1].copy()
    if enc in ("mono8", "8UC1", "mono16", "16UC1"):
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if enc in ("yuv422", "uyvy"):
        return cv2.cvtColor(arr, cv2.COLOR_YUV2RGB_UYVY)
    if enc in ("yuv422_yuy2", "yuyv"):
        return cv2.cvtColor(arr, cv2.COLOR_YUV2RGB_YUYV)
    return cv2.cvtColor(arr, _BAYER[enc])


def compressed_to_rgb(msg) -> np.ndarray:  # noqa: ANN001 - sensor_msgs/CompressedImage
    """A CompressedImage (JPEG or PNG, as image_transport's compressed plugin sends, or WebP,
    TIFF, BMP, PNM: `DECODED_FORMATS`) -> RGB. Its header's size is checked before anything
    decodes (`declared_size`), so a decompression bomb is refused unread."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise UnsupportedEncoding(f"compressed depth images are not camera frames ({msg.format!r})")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise ValueError("empty compressed image (no data)")
    check_size(*declared_size(data.tobytes(), msg.format))
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ValueError(f"compressed image ({msg.format!r}, {data.size} bytes) does not decode: "
                         f"{exc}") from None
    if bgr is None:
        raise ValueError(f"compressed image ({msg.format!r}, {data.size} bytes) does not decode")
    check_size(bgr.shape[1], bgr.shape[0])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def declared_size(data: bytes, fmt: str = "") -> tuple[int, int]:
    """(width, height) a compressed image's header declares, read by Pillow without decoding
    the pixels (`Image.open` reads the header only, wherever it sits: behind any padding).
    ValueError when Pillow cannot read a header (garbage, truncated, or a format it does not
    know: nothing unbounded is decoded), when the format is none of `DECODED_FORMATS`, or when
    the size is past Pillow's own decompression-bomb limit (twice `Image.MAX_IMAGE_PIXELS`,
    beyond `MAX_PIXELS` too); `fmt` is the message's format, for the message."""
    try:
        with Image.open(io.BytesIO(data), formats=DECODED_FORMATS) as image:
            return image.size
    except Image.DecompressionBombError as exc:
        raise ValueError(f"compressed image ({fmt!r}) declares a size beyond any camera's: "
                         f"{exc}") from None
    except UnidentifiedImageError:
        raise ValueError(f"compressed image ({fmt!r}, {len(data)} bytes) does not decode: no "
                         f"header of {', '.join(DECODED_FORMATS)} reads") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any parser failure is "no image"
        raise ValueError(f"compressed image ({fmt!r}, {len(data)} bytes) does not decode: "
                         f"{exc}") from None


# Depth encodings of REP-118: millimetres in 16 bits, metres in 32-bit floats.
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
# The farthest depth taken as a reading, in metres: beyond every RGB-D camera's range (stereo
# cameras are rated to 20-40 m; 16UC1 itself stops at 65.535 m) and far beyond any object a
# robot reaches for. A farther value (a driver's 3.4e38 float maximum, 1e30) is a sensor or
# driver fault, and lifting it would put objects at "infinity": it is no reading, like 0/NaN.
MAX_DEPTH_M = 100.0


def depth_to_metres(msg, max_depth_m: float = MAX_DEPTH_M) -> np.ndarray:  # noqa: ANN001
    """A depth image (REP-118: 16UC1 millimetres or 32FC1 metres) -> float32 metres [H, W],
    NaN where there is no reading (0, NaN, negative, infinite or beyond `max_depth_m`), so
    every consumer of the depth sees sane metres only. `msg` is a sensor_msgs/Image."""
    if not (math.isfinite(max_depth_m) and max_depth_m > 0):
        raise ValueError(f"max_depth_m must be a positive number of metres, got {max_depth_m}")
    if msg.encoding not in DEPTH_ENCODINGS:
        raise UnsupportedEncoding(f"depth encoding {msg.encoding!r} is not supported: send "
                                  "16UC1 (millimetres) or 32FC1 (metres), as REP-118 says")
    if msg.encoding == "32FC1":
        raw = image_to_array(msg, (1, np.dtype(np.float32))).astype(np.float32, copy=True)
        raw[~((raw > 0) & (raw <= max_depth_m))] = np.nan  # NaN and -inf compare false
        return raw
    mm = image_to_array(msg)
    metres = mm.astype(np.float32) * np.float32(0.001)
    metres[(mm == 0) | (metres > max_depth_m)] = np.nan
    return metres


def intrinsics_from_info(msg, matrix: str = "k"):  # noqa: ANN001, ANN201 - CameraInfo -> Intrinsics
    """The pinhole intrinsics of the image a CameraInfo describes: its K (`matrix` "k": a raw
    image, its distortion ignored) or the left 3x3 of its P ("p": a rectified image), with its
    binning and region of interest applied (REP-104, as image_geometry does); ValueError for
    an uncalibrated or malformed one (zero focal length, zero size)."""
    from ..objects import Intrinsics

    if msg.width <= 0 or msg.height <= 0:
        raise ValueError(f"camera_info has no image size ({msg.width}x{msg.height})")
    check_size(int(msg.width), int(msg.height))
    if matrix == "p":
        p = [float(v) for v in msg.p]
        if not any(p):
            raise ValueError("camera_info's P is all zero (camera_matrix is p): is the image "
                             "rectified? For a raw image set camera_matrix to k")
        k = [p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]]
    else:
        k = list(msg.k)
    intr = Intrinsics.from_k(k, int(msg.width), int(msg.height))
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    roi = msg.roi
    ox, oy, w, h = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)) \
        if roi.width > 0 and roi.height > 0 else (0, 0, int(msg.width), int(msg.height))
    if (bx, by, ox, oy, w, h) == (1, 1, 0, 0, intr.width, intr.height):
        return intr
    return Intrinsics(intr.fx / bx, intr.fy / by, (intr.cx - ox) / bx, (intr.cy - oy) / by,
                      max(1, w // bx), max(1, h // by))


def camera_info_at(msg, width: int, height: int):  # noqa: ANN001, ANN201 - CameraInfo
    """A copy of a CameraInfo for the same camera at another image size of the same aspect (K
    and P scaled about pixel centres); the message itself when the size is its own or the
    aspect differs (then it describes no image of that size)."""
    if (msg.width, msg.height) == (width, height) or msg.width <= 0 or msg.height <= 0:
        return msg
    sx, sy = width / msg.width, height / msg.height
    if abs(sx / sy - 1.0) > 0.01:
        return msg
    out = copy.deepcopy(msg)
    out.width, out.height = int(width), int(height)
    k, p = list(out.k), list(out.p)
    for m, (fx, cx, fy, cy) in ((k, (0, 2, 4, 5)), (p, (0, 2, 5, 6))):
        if not any(m):  # not given (a P of an unrectified camera): leave it empty
            continue
        m[fx], m[fy] = m[fx] * sx, m[fy] * sy
        m[cx], m[cy] = (m[cx] + 0.5) * sx - 0.5, (m[cy] + 0.5) * sy - 0.5
    p[3] *= sx  # Tx = -fx' * baseline
    out.k, out.p = k, p
    return out


def mask_from_image(msg) -> np.ndarray:  # noqa: ANN001
    """A mono8 (or 8UC1/mono16) mask message -> bool array; nonzero = the concept."""
    if msg.encoding not in ("mono8", "8UC1", "mono16", "16UC1"):
        raise UnsupportedEncoding(f"masks must be mono8, got {msg.encoding!r}")
    return image_to_array(msg) > 0


def image_fields(array: np.ndarray, encoding: str) -> dict:
    """The sensor_msgs/Image fields (all but the header) holding `array`: little-endian, no
    row padding, `data` as bytes. The one layout of every image the project writes, as the
    node's rclpy messages (`array_to_image`) and as `povss bag`'s recorded ones (`ros.bag`)."""
    contiguous = np.ascontiguousarray(array)
    return {"height": int(array.shape[0]), "width": int(array.shape[1]), "encoding": encoding,
            "is_bigendian": 0, "step": int(contiguous.strides[0]),
            "data": contiguous.astype(contiguous.dtype.newbyteorder("<"), copy=False).tobytes()}


def array_to_image(array: np.ndarray, encoding: str, header=None):  # noqa: ANN001, ANN201
    """numpy -> sensor_msgs/Image (`image_fields`), header copied unchanged."""
    from sensor_msgs.msg import Image

    msg = Image(**image_fields(array, encoding))
    if header is not None:
        msg.header = header
    return msg
