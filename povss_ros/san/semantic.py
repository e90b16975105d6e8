"""SAN's semantic inference for one image: class logits [N, C+1] and mask logits [N, h, w]
-> per-class scores, or each pixel's best class, at the image's original size.

SAN's rule: softmax over each mask's classes, void dropped; masks resized bilinearly (to the
padded input, crop, to the original size) and passed through a sigmoid; a class's score at a
pixel is sum over masks of P(class | mask) x P(mask at pixel). Class logits and mask logits may
carry extra rows (personal classes, negative masks): the rule is the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .model import BatchGeometry

# Image rows per band in `mask_bands`. On the CPU a band's [pixels, C] scores (8 rows x 640
# pixels x 176 classes, 3.6 MB) stay in cache; on a GPU fewer, larger products launch fewer
# kernels.
BAND_ROWS = {"cpu": 8, "cuda": 24}
# The class axis of a band's product is padded to a multiple of this: MKL's fp32 product is
# faster at such widths than at, say, COCO-Stuff's 171 (docs/experiments.md, section 9.1).
CLASS_PAD = 16


def class_probs(class_logits: torch.Tensor) -> torch.Tensor:
    """[N, C+1] logits of one image's masks -> [N, C] class probabilities, void dropped
    after the softmax (SAN's rule)."""
    return class_logits.float().softmax(dim=-1)[:, :-1].contiguous()


def masks_to_image(
    mask_logits: torch.Tensor, geometry: BatchGeometry, index: int = 0
) -> torch.Tensor:
    """[N, h, w] side-grid logits of one image -> [N, H, W] at its original size.

    SAN upsamples to the padded size, crops the padding and resizes to the original size,
    all bilinear. Each step is linear and separable, so the chain is exactly
    rows @ mask @ cols^T with two small interpolation matrices: same result (up to float
    summation order) without materializing N full-size masks twice.
    """
    rows, cols = grid_to_image_matrices(
        tuple(mask_logits.shape[-2:]), geometry, index, mask_logits.device)
    return rows @ mask_logits.float() @ cols.t()


def semantic_scores(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometry: BatchGeometry,
    index: int = 0,
) -> torch.Tensor:
    """SAN's semantic inference for one image: [C, H, W] scores, void column dropped."""
    probs = class_probs(class_logits)
    masks = masks_to_image(mask_logits, geometry, index).sigmoid()
    n, h, w = masks.shape
    return (probs.t() @ masks.reshape(n, h * w)).reshape(-1, h, w)


class BestClass:
    """Each pixel's best class in a band of mask probabilities: max over C of [P, N] @ [N, C].

    The class axis is padded with zero columns to a multiple of `CLASS_PAD`, and every band's
    product goes to one buffer (a fresh multi-MB buffer per band costs page faults); the
    padding is never read. `semantic_argmax` and the personal fusion share it, so the pixels
    the fusion leaves to plain SAN get its scores bit for bit.
    """

    def __init__(self, probs: torch.Tensor, pixels: int) -> None:
        """``probs`` [N, C] class probabilities; ``pixels``: the largest band's pixel count."""
        n, self.classes = probs.shape
        padded = -(-self.classes // CLASS_PAD) * CLASS_PAD
        self.probs = torch.cat([probs, probs.new_zeros(n, padded - self.classes)], 1)
        self._product = probs.new_empty(pixels, padded)

    def __call__(self, band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, class index) of each pixel of ``band`` [P, N], P at most ``pixels``; ties
        go to the first class. Inference only (no autograd through the reused buffer)."""
        if band.shape[0] > len(self._product):
            raise ValueError(
                f"a band of {band.shape[0]} pixels; the buffer holds {len(self._product)}")
        product = torch.mm(band, self.probs, out=self._product[: band.shape[0]])
        return product[:, : self.classes].max(dim=1)


def band_rows(device: torch.device) -> int:
    """Image rows per band on ``device`` (`BAND_ROWS`)."""
    return BAND_ROWS.get(device.type, BAND_ROWS["cuda"])


def semantic_argmax(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometry: BatchGeometry,
    index: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [H, W], label [H, W]) of `semantic_scores`' best class, without its [C, H, W]
    tensor: the same arithmetic a band of image rows at a time (`mask_bands`), so a band's
    per-class scores stay in cache instead of a few hundred MB travelling through memory."""
    oh, ow = geometry.original_hw[index]
    device = mask_logits.device
    best = BestClass(class_probs(class_logits), band_rows(device) * ow)
    score = torch.empty(oh * ow, device=device)
    label = torch.empty(oh * ow, dtype=torch.long, device=device)
    for span, band in mask_bands(mask_logits, geometry, index):
        values, indices = best(band)
        score[span] = values
        label[span] = indices
    return score.view(oh, ow), label.view(oh, ow)


def mask_bands(
    mask_logits: torch.Tensor,
    geometry: BatchGeometry,
    index: int = 0,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Mask probabilities at the image's own size, `band_rows` image rows at a time.

    Yields (span of flat pixel indices, sigmoid of the resized masks [pixels, N]): SAN's
    upsampling (to the padded input, crop, to the original size) as two bilinear matrices.
    """
    oh, ow = geometry.original_hw[index]
    n, h, w = mask_logits.shape
    rows, cols = grid_to_image_matrices((h, w), geometry, index, mask_logits.device)
    # [h, W*N]: masks resized along x, laid out so a band of rows becomes [pixels, N].
    half = (mask_logits.float() @ cols.t()).permute(1, 2, 0).reshape(h, ow * n)
    # A band of output rows reads only a few grid rows (bilinear: the rest of its matrix
    # rows are exact zeros); on the CPU, multiply those only. On a GPU finding them would
    # stall the frame on the host, and the whole product is cheap there.
    used = None if rows.is_cuda else (rows != 0)
    step = band_rows(mask_logits.device)
    for r0 in range(0, oh, step):
        r1 = min(oh, r0 + step)
        k0, k1 = 0, h
        if used is not None:
            hit = used[r0:r1].any(dim=0).nonzero()
            if hit.numel():
                k0, k1 = int(hit[0]), int(hit[-1]) + 1
        band = torch.sigmoid_(rows[r0:r1, k0:k1] @ half[k0:k1]).view((r1 - r0) * ow, n)
        yield slice(r0 * ow, r1 * ow), band


def grid_to_image_matrices(
    grid_hw: tuple[int, int],
    geometry: BatchGeometry,
    index: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [H, h], cols [W, w]): SAN's bilinear path from a grid over the padded input to
    image `index` at its original size (up to the padded size, crop, down to the original)."""
    (ph, pw), (rh, rw) = geometry.padded_hw, geometry.resized_hw[index]
    oh, ow = geometry.original_hw[index]
    h, w = grid_hw
    rows = bilinear_matrix(ph, oh, crop=rh, device=device) @ bilinear_matrix(h, ph, device=device)
    cols = bilinear_matrix(pw, ow, crop=rw, device=device) @ bilinear_matrix(w, pw, device=device)
    return rows, cols


def bilinear_matrix(
    src: int, dst: int, crop: int | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """[dst, src] matrix of F.interpolate(mode="bilinear", align_corners=False) along one axis.

    With `crop`, the source is first cut to its first `crop` entries and then resized to
    `dst` (the matrix is still [dst, src], zero beyond the crop).
    """
    n = crop if crop is not None else src
    pos = ((torch.arange(dst, dtype=torch.float64) + 0.5) * (n / dst) - 0.5).clamp(min=0)
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo
    m = torch.zeros(dst, src, dtype=torch.float64)
    idx = torch.arange(dst)
    m.index_put_((idx, lo), 1 - frac, accumulate=True)
    m.index_put_((idx, hi), frac, accumulate=True)
    return m.to(device=device, dtype=torch.float32)
