"""Training data for the small SAN: a seeded scene stream and Mask2Former-style targets.

SAN trains semantic segmentation as a set problem: one target per class present in the image
(all of its pixels, stuff included), labelled by the class id (`scene_targets`). The synthetic
model can instead take one target per object instance and one per stuff class
(`instance_targets`, Mask2Former's panoptic targets), so that a mask proposal, and its query
embedding, stands for ONE object: what personalization needs to tell my mug from the mug
beside it. The set loss point-samples targets and predictions with the same normalized
coordinates of the *padded* input, so the targets are built in that frame: the label map is
resized like the image (shortest side to min_size) and placed top-left in a canvas of the
padded size, whose padding belongs to no class.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from povss_lab.synthetic.world import SCENE_OBJECTS, Scene, SceneObject, World, sample_scene
from povss_ros.san.model import BatchGeometry
from povss_ros.vocabulary import UNLABELED

PAD_LABEL = UNLABELED  # padding pixels: no class, no target mask covers them


def resize_nearest(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Label-map resize mapping each output pixel centre to the source pixel containing it.

    Centre-aligned like the bilinear image resize (align_corners=False), so a label stays
    under the pixels it was painted on; a plain floor(i * scale) would shift it by half a pixel.
    """
    h, w = labels.shape
    nh, nw = hw
    rows = np.minimum(((np.arange(nh) + 0.5) * (h / nh)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * (w / nw)).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def padded_labels(semantic: np.ndarray, geometry: BatchGeometry, index: int) -> np.ndarray:
    """The image's label map in the padded input frame; padding is PAD_LABEL."""
    if semantic.shape != tuple(geometry.original_hw[index]):
        raise ValueError(
            f"label map {semantic.shape} does not match image {geometry.original_hw[index]}"
        )
    resized = resize_nearest(semantic, geometry.resized_hw[index])
    canvas = np.full(geometry.padded_hw, PAD_LABEL, dtype=np.uint16)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas


def padded_instances(scene: Scene, geometry: BatchGeometry, index: int) -> np.ndarray:
    """The scene's instance map (0 = no object) in the padded input frame; padding is 0."""
    if scene.instance.shape != tuple(geometry.original_hw[index]):
        raise ValueError(f"instance map {scene.instance.shape} does not match image "
                         f"{geometry.original_hw[index]}")
    rh, rw = geometry.resized_hw[index]
    canvas = np.zeros(geometry.padded_hw, dtype=np.int32)
    canvas[:rh, :rw] = resize_nearest(scene.instance, (rh, rw))
    return canvas


def grid_labels(
    semantic: np.ndarray, geometry: BatchGeometry, index: int, grid: tuple[int, int]
) -> torch.Tensor:
    """[h, w] int64 class ids on a coarse grid over the padded frame (padding = PAD_LABEL)."""
    canvas = padded_labels(semantic, geometry, index)
    return torch.from_numpy(resize_nearest(canvas, grid).astype(np.int64))


def instance_weights(
    scene: Scene, geometry: BatchGeometry, index: int, grid: tuple[int, int]
) -> tuple[torch.Tensor, list[SceneObject]]:
    """Each visible object's share of every cell of a coarse grid over the padded frame.

    Returns [K, h, w] area weights (K = objects visible on the grid) and those objects, for
    pooling dense features per object instance.
    """
    canvas = padded_instances(scene, geometry, index)
    visible = [o for o in scene.objects if o.visible > 0]
    if not visible:
        return torch.zeros(0, *grid), []
    ids = np.array([o.index for o in visible])[:, None, None]
    masks = torch.from_numpy(canvas[None] == ids).float()[:, None]  # [K, 1, Hp, Wp]
    weights = torch.nn.functional.adaptive_avg_pool2d(masks, grid)[:, 0]
    keep = weights.flatten(1).sum(1) > 0.5  # at least half a cell of the object
    return weights[keep], [o for o, k in zip(visible, keep.tolist()) if k]


def scene_targets(
    semantic: np.ndarray, geometry: BatchGeometry, index: int
) -> dict[str, torch.Tensor]:
    """{"labels": [T] int64 class ids, "masks": [T, Hp, Wp] float} for one image of a batch."""
    canvas = padded_labels(semantic, geometry, index)
    labels = np.unique(canvas)
    labels = labels[labels != PAD_LABEL]
    masks = canvas[None] == labels[:, None, None]
    return {
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "masks": torch.from_numpy(masks).float(),
    }


def instance_targets(
    scene: Scene, geometry: BatchGeometry, index: int
) -> tuple[dict[str, torch.Tensor], list[SceneObject | None]]:
    """Panoptic-style targets: one per visible object instance, one per stuff class present.

    Returns the targets dict of `scene_targets` (labels are class ids in both cases) and, per
    target, its SceneObject (None for stuff), so a caller can attach identities to targets.
    Objects with no pixel left after the resize get no target.
    """
    semantic = padded_labels(scene.semantic, geometry, index)
    instance = padded_instances(scene, geometry, index)
    labels, masks, owners = [], [], []
    stuff = (instance == 0) & (semantic != PAD_LABEL)
    for cls in np.unique(semantic[stuff]):
        labels.append(int(cls))
        masks.append(stuff & (semantic == cls))
        owners.append(None)
    for obj in scene.objects:
        mask = instance == obj.index
        if obj.visible > 0 and mask.any():
            labels.append(int(np.bincount(semantic[mask]).argmax()))
            masks.append(mask)
            owners.append(obj)
    stacked = np.stack(masks) if masks else np.zeros((0, *geometry.padded_hw), dtype=bool)
    return {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(stacked).float(),
    }, owners


class SceneStream:
    """An endless, deterministic sequence of random scenes of one world.

    The n-th scene is a pure function of (world seed, stream seed, shard, n); the generator
    state can be saved and restored, so a resumed run sees the scenes the killed run would have
    seen. ``shard`` gives each data-parallel training process a stream of its own (shard 0 is
    the single-process stream), so no process draws scenes another one uses.
    """

    def __init__(self, world: World, seed: int, shard: int = 0,
                 n_objects: tuple[int, int] = SCENE_OBJECTS) -> None:
        if shard < 0:
            raise ValueError(f"shard must be >= 0, got {shard}")
        if not 1 <= n_objects[0] <= n_objects[1]:
            raise ValueError(f"n_objects must be a range (min, max) with 1 <= min <= max, "
                             f"got {n_objects}")
        self.world = world
        self.n_objects = (int(n_objects[0]), int(n_objects[1]))
        self.seed = seed
        self.rng = np.random.default_rng([seed, 101] if shard == 0 else [seed, 101, shard])
        self.count = 0

    def next(self, n: int) -> list[Scene]:
        """The next n scenes."""
        scenes = [sample_scene(self.rng, self.world, n_objects=self.n_objects)
                  for _ in range(n)]
        self.count += n
        return scenes

    def state(self) -> str:
        """JSON text of the stream position (numpy's 128-bit state does not fit a tensor)."""
        return json.dumps({"rng": self.rng.bit_generator.state, "count": self.count})

    def restore(self, text: str) -> None:
        """Continue from a `state()`."""
        data = json.loads(text)
        self.rng.bit_generator.state = data["rng"]
        self.count = int(data["count"])
