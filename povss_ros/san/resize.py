"""SAN's test-time resize: the shortest side to `min_size`, the longest capped at `max_size`.

Two ways to resize, same output size (`resized_shape`, detectron2's rounding):

* ``exact``: what SAN's official test pipeline does (detectron2's ResizeShortestEdge, whose
  ResizeTransform hands uint8 images to PIL's bilinear filter, antialiased when shrinking,
  in PIL's fixed-point arithmetic). Bit for bit the official input; it runs on the CPU.
* ``fast``: torch's bilinear (antialiased when shrinking) rounded to whole grey levels, on the
  model's device. Within one grey level of ``exact`` almost everywhere, not equal.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

RESIZE_MODES = ("exact", "fast")


def check_mode(mode: str) -> str:
    """`mode` if it is one of `RESIZE_MODES`, else ValueError naming them."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {' | '.join(RESIZE_MODES)}, got {mode!r}")
    return mode


def resized_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Shortest edge to `short`, longest capped at `max_size` (detectron2's rounding).

    scale = short / min(h, w); if the longer side then exceeds `max_size`, both sides are
    scaled by max_size / longer; each side is rounded as int(x + 0.5)."""
    scale = short / min(h, w)
    nh, nw = (short, scale * w) if h < w else (scale * h, short)
    if max(nh, nw) > max_size:
        s = max_size / max(nh, nw)
        nh, nw = nh * s, nw * s
    return int(nh + 0.5), int(nw + 0.5)


def resize_exact(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """`img` (HxW or HxWxC) resized to nh x nw as detectron2's ResizeTransform(BILINEAR) does.

    uint8 (gray, HxWx1, RGB, RGBA): PIL's bilinear, same dtype and layout back. Floating
    point: torch's bilinear without antialiasing (detectron2's path for what PIL cannot
    take), same dtype back. Other dtypes (bool, other integers) are refused, as there."""
    img = np.asarray(img)
    if img.ndim not in (2, 3) or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    if nh < 1 or nw < 1:
        raise ValueError(f"output size must be at least 1x1, got {nh}x{nw}")
    if img.dtype == np.uint8:
        single = img.ndim == 3 and img.shape[2] == 1
        if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
            raise ValueError(f"PIL takes 1, 3 or 4 uint8 channels, got {img.shape[2]}")
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if single else img))
        out = np.array(pil.resize((nw, nh), Image.Resampling.BILINEAR))  # writable
        return out[:, :, None] if single else out
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"cannot resize a {img.dtype} image bilinearly: give uint8 or floats")
    x = torch.from_numpy(np.ascontiguousarray(img))
    x = x[None, None] if img.ndim == 2 else x.permute(2, 0, 1)[None]
    x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False)
    out = x[0, 0] if img.ndim == 2 else x[0].permute(1, 2, 0)
    return out.contiguous().numpy()


def resize_fast(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """[B, C, H, W] grey levels (float) -> [B, C, nh, nw]: torch's bilinear, antialiased
    when shrinking, rounded to whole grey levels in [0, 255]; on `x`'s device."""
    h, w = x.shape[-2:]
    shrink = nh < h or nw < w
    y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=shrink)
    return y.round_().clamp_(0, 255)
