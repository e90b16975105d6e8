"""Shots: validated image+mask pairs after their ONE frozen forward, on every grid training reads.

Shot masks live in the network's padded input frame (resized like the image, bilinear with
antialiasing when shrinking, zero-padded), so point-sampled targets line up with SAN's mask grid
exactly; area-averaged copies sit on M's grid (for L_M) and on F's grid (for F_per).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..san.model import SAN, BatchGeometry, SANFeatures


@dataclass
class ShotFeatures:
    """One shot after its single frozen forward: what every training iteration reads."""

    image: np.ndarray  # [H, W, 3] uint8, kept for the store and the recomputing loop
    mask: torch.Tensor  # [H, W] bool at the image's own size
    z: torch.Tensor  # [1, N, D]
    m: torch.Tensor  # [1, N, h, w]
    f: torch.Tensor  # [1, D, hc, wc]
    geometry: BatchGeometry
    target: torch.Tensor  # [Hp, Wp] mask in the padded input frame, values in [0, 1]
    mask_m: torch.Tensor  # [h, w] area fraction on M's grid
    mask_f: torch.Tensor  # [hc, wc] area fraction on F's grid

    def features(self) -> SANFeatures:
        return SANFeatures(self.z, self.m, self.f, self.geometry)


def encoder_of(source: object) -> tuple[SAN, Callable[[np.ndarray], SANFeatures]]:
    """A SAN or a Segmenter (duck-typed: `.model` + `.encode`, keeps its device/precision)."""
    if isinstance(source, SAN):
        model = source

        @torch.no_grad()
        def encode(image: np.ndarray) -> SANFeatures:
            return model.encode(*model.preprocess(image))

        return model, encode
    return source.model, source.encode  # type: ignore[attr-defined]


def _binary_mask(mask: object, hw: tuple[int, int], i: int) -> np.ndarray:
    a = np.asarray(mask)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.shape != hw:
        raise ValueError(f"shot {i}: mask shape {a.shape} does not match the image's {hw}")
    if a.dtype != bool:
        values = set(np.unique(a).tolist())
        if values <= {0, 1}:
            a = a == 1
        elif values <= {0, 255}:
            a = a == 255
        else:
            raise ValueError(f"shot {i}: mask must be binary (bool, 0/1 or 0/255), got {a.dtype}")
    if not a.any():
        raise ValueError(f"shot {i}: mask is empty; mark the object's pixels")
    return np.ascontiguousarray(a)


def _frame_target(mask: np.ndarray, geometry: BatchGeometry, device: torch.device) -> torch.Tensor:
    """The mask ([H, W], or a stack [R, H, W]) as the network sees it: resized like the image,
    zero-padded to the batch."""
    (h, w), (rh, rw), (ph, pw) = geometry.original_hw[0], geometry.resized_hw[0], geometry.padded_hw
    t = torch.from_numpy(mask).to(device=device, dtype=torch.float32)
    t = t[None, None] if t.ndim == 2 else t[:, None]
    if (rh, rw) != (h, w):
        t = F.interpolate(t, (rh, rw), mode="bilinear", align_corners=False, antialias=rh < h)
    t = F.pad(t.clamp(0, 1), (0, pw - rw, 0, ph - rh))[:, 0]
    return t[0] if mask.ndim == 2 else t


def features_nbytes(features: SANFeatures) -> int:
    """Bytes of the tensors of one encoding (what keeping it costs)."""
    return sum(t.nbytes for t in (features.mask_embeddings, features.mask_logits,
                                  features.dense_features))


def cache_shots(
    source: object,
    images: Sequence[np.ndarray],
    masks: Sequence[object],
    encodings: Sequence[SANFeatures | None] | None = None,
    before_forward: Callable[[], None] | None = None,
) -> list[ShotFeatures]:
    """ONE frozen forward per shot, none where `encodings` holds the image's features already
    (a frame the node segmented); validates every shot first and names the bad one.
    `before_forward` is called before each forward: raising there stops the work (a teach
    called off between two shots, not after all of them)."""
    if len(images) != len(masks) or not images:
        raise ValueError(f"need as many masks as images (>= 1), got {len(images)}/{len(masks)}")
    checked = []
    for i, (img, mask) in enumerate(zip(images, masks)):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
            raise ValueError(
                f"shot {i}: expected an RGB uint8 HxWx3 image, got {img.dtype} {img.shape}"
            )
        checked.append((np.ascontiguousarray(img), _binary_mask(mask, img.shape[:2], i)))
    model, encode = encoder_of(source)
    known = list(encodings) if encodings is not None else [None] * len(checked)
    shots = []
    for (img, mask), enc in zip(checked, known):
        if enc is None and before_forward is not None:
            before_forward()
        shots.append(make_shot(img, mask, enc if enc is not None else encode(img),
                               model.device))
    return shots


def make_shot(
    image: np.ndarray, mask: np.ndarray, features: SANFeatures, device: torch.device
) -> ShotFeatures:
    """Cache one encoded shot (batch of one) with its mask on every grid training reads."""
    z, m, f = (
        t.detach().float()
        for t in (features.mask_embeddings, features.mask_logits, features.dense_features)
    )
    target = _frame_target(mask, features.geometry, device)
    return ShotFeatures(
        image,
        torch.from_numpy(mask).to(device),
        z,
        m,
        f,
        features.geometry,
        target,
        F.adaptive_avg_pool2d(target[None, None], m.shape[-2:])[0, 0],
        F.adaptive_avg_pool2d(target[None, None], f.shape[-2:])[0, 0],
    )


def grid_matrices(geometry: BatchGeometry, grid_hw: tuple[int, int], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """([hc, H], [wc, W]): the two linear maps, one per axis, that take a mask at the image's
    own size onto F's grid as `_frame_target` and area pooling do (resize like the image,
    bilinear with antialiasing when shrinking; zero-pad to the batch; average each cell).
    Every step is separable, so mask -> rows @ mask @ cols^T, up to float summation order.
    Cached per frame geometry: a camera's frames all share one."""
    (h, w), (rh, rw), (ph, pw) = geometry.original_hw[0], geometry.resized_hw[0], geometry.padded_hw
    return _grid_matrices(h, w, rh, rw, ph, pw, tuple(grid_hw), str(device))


@functools.lru_cache(maxsize=8)
def _grid_matrices(h: int, w: int, rh: int, rw: int, ph: int, pw: int,
                   grid_hw: tuple[int, int], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    def axis(n: int, resized: int, padded: int, cells: int) -> torch.Tensor:
        # n unit impulses laid along the last axis (torch's antialiased resize of an [n, 1]
        # column is not the 2-D resize's column factor; of a [1, n] row it is)
        unit = torch.eye(n, device=device)[:, None, None, :]
        if resized != n:
            unit = F.interpolate(unit, (1, resized), mode="bilinear", align_corners=False,
                                 antialias=rh < h)
        unit = F.pad(unit, (0, padded - resized))
        return F.adaptive_avg_pool2d(unit, (1, cells))[:, 0, 0, :].t()

    return axis(h, rh, ph, grid_hw[0]), axis(w, rw, pw, grid_hw[1])


def region_sums(features: SANFeatures, regions: np.ndarray, count: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """([count, D], [count]): for each region r = 1..count of the id map `regions` ([H, W]
    ints at the image's own size, 0 = none), the sum of one image's dense features F weighted
    by the region's area on F's grid, and that weight. A region pools onto F's grid as a
    shot's mask does for F_per (`grid_matrices`); sums of disjoint regions add, so a union's
    mean is (sum of sums) / (sum of weights). All regions at once: each pixel adds its few
    non-zero column weights to its region's row (one `index_add_`), then one product with the
    row weights and one with F, whatever the number of regions."""
    f = features.dense_features[0].float()
    if count == 0:
        return f.new_zeros(0, f.shape[0]), f.new_zeros(0)
    rows, cols = grid_matrices(features.geometry, tuple(f.shape[-2:]), f.device)
    h, w = regions.shape
    wc = cols.shape[0]
    # each image column's non-zero grid columns (a few: the resize kernel's reach)
    reach = int((cols > 0).sum(dim=0).max())
    weight, cell = cols.t().topk(reach, dim=1)  # [W, reach]
    ids = torch.from_numpy(np.ascontiguousarray(regions, dtype=np.int64)).to(f.device)
    row = ids * h + torch.arange(h, device=f.device)[:, None]  # [H, W]: (region, image row)
    per_row = f.new_zeros((count + 1) * h * wc)
    per_row.index_add_(0, (row[:, :, None] * wc + cell).reshape(-1),
                       weight.expand(h, w, reach).reshape(-1))
    weights = torch.einsum("iy,ryj->rij", rows, per_row.view(count + 1, h, wc)[1:])
    return torch.einsum("rij,dij->rd", weights, f), weights.sum(dim=(1, 2))


def region_embedding(features: SANFeatures, mask: np.ndarray) -> torch.Tensor:
    """[D]: the area-weighted mean of one image's dense features F inside `mask` (bool, the
    image's own size), pooled onto F's grid exactly as a shot's mask is for F_per; zeros for a
    mask that covers no part of the grid."""
    sums, total = region_sums(features, np.asarray(mask, np.uint8), 1)
    return sums[0] / total[0] if total[0] > 0 else sums[0].new_zeros(sums.shape[1])


def visual_embedding(shots: Sequence[ShotFeatures]) -> torch.Tensor:
    """F_per [1, D]: area-weighted mean of F inside each mask, then the mean over shots."""
    per = [(s.f[0] * s.mask_f).sum(dim=(1, 2)) / s.mask_f.sum() for s in shots]
    return torch.stack(per).mean(dim=0, keepdim=True)


def surroundings_embeddings(shots: Sequence[ShotFeatures]) -> torch.Tensor:
    """[K, D]: per shot, the mean dense feature of everything outside its mask (the table, the
    wall, the things beside the object): what the object is NOT, for `identity` to tell a part
    of the object from what it stands on. Zeros for a shot whose mask covers the frame."""
    return torch.stack([region_embedding(s.features(), ~s.mask.cpu().numpy()) for s in shots])
