"""What the objects and 3D stage adds to a frame (povss_ros.objects), and its ROS messages.

One 640x480 synthetic scene with five objects, one of them a taught personal concept, its
exact depth and intrinsics (povss_lab.synthetic.depth); the label map and scores are the
committed small model's own. Times, median of many runs, each stage on the same frame:
instances and presence from the label map (2D only), the same with 3D from depth, the
engine's whole post-model step (`PerceptionEngine.after_model`: class ids, objects, 3D,
concept masks), and building the node's messages (ObjectArray, MarkerArray, the concept's
PointCloud2) when rclpy is there.

    python bench/bench_objects.py [--repeats 200]
"""

from __future__ import annotations

import argparse
from datetime import date

import numpy as np
import torch
from hardware import cpu_name, timed_ms  # noqa: E402 - bench/ sibling
from small_engine import small_engine, teach_from_scenes  # noqa: E402 - bench/ sibling

from povss_lab.synthetic.depth import render_depth
from povss_lab.synthetic.world import SceneSpec, World, render_scene, sample_spec
from povss_ros.objects import class_infos, frame_objects
from povss_ros.personal.names import concept_id
from povss_ros.vocabulary import stuff_words

SIZE = (640, 480)


def five_object_scene(world: World) -> tuple[object, object]:
    """A 640x480 table scene with exactly five objects, my mug among them, and its depth."""
    mine = world.identity("mug", 0)
    others = [i for i in world.identities("mug") if i != mine]
    spec = sample_spec(np.random.default_rng(7), world, [mine], n_objects=(5, 5), size=SIZE,
                       exclude=others)
    scene = render_scene(SceneSpec(spec.seed, spec.size, spec.objects[:5], spec.photometric,
                                   spec.shadows))
    return scene, render_depth(scene)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    world = World(0)
    engine = small_engine()
    teach_from_scenes(engine, world, "mug", world.identity("mug", 0), np.random.default_rng(5))
    scene, depth = five_object_scene(world)
    frame = engine.segment(scene.image, depth=depth.depth, intrinsics=depth.intrinsics)
    seg = frame.segmentation
    v = len(seg.class_names) - len(seg.personal_ids)
    ids = {e.concept_id: e.class_id for e in engine.concept_entries()}
    lut = np.array([*range(v), *(ids[concept_id(n)] for n in seg.class_names[v:])], np.uint16)
    cfg = engine.settings.objects
    classes = class_infos(seg.class_names, v, lut, stuff_words(cfg.stuff_words),
                          seg.identity)

    def objects_2d() -> object:
        return frame_objects(seg.labels, seg.score, classes, cfg)

    def objects_3d() -> object:
        return frame_objects(seg.labels, seg.score, classes, cfg, depth.depth, depth.intrinsics)

    def post_model() -> object:
        return engine.after_model(seg, 0.0, depth.depth, depth.intrinsics)

    rows = [("instances + presence (2D)", timed_ms(objects_2d, args.repeats)),
            ("instances + presence + 3D", timed_ms(objects_3d, args.repeats)),
            ("post-model step: class ids, objects, 3D, concept masks",
             timed_ms(post_model, args.repeats))]
    rows += message_rows(frame.objects, args.repeats)
    found = ", ".join(f"{o.name}{'' if o.geometry is None else ' (3D)'}" for o in frame.objects)
    model_ms = frame.model_seconds * 1e3
    lines = [
        f"Objects and 3D, one {SIZE[0]}x{SIZE[1]} frame of five objects, in which the model "
        f"finds {len(frame.objects)} regions ({found}); "
        f"{date.today().isoformat()}, 1 thread, median of {args.repeats}",
        "",
        "| stage | median ms | p90 ms |",
        "|---|---|---|",
        *(f"| {name} | {med:.2f} | {p90:.2f} |" for name, (med, p90) in rows),
        "",
        f"For scale: the small model's own forward on this frame took {model_ms:.0f} ms. "
        f"Hardware: {cpu_name()} (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}).",
    ]
    print("\n".join(lines))


def message_rows(objects: list, repeats: int) -> list[tuple[str, tuple[float, float]]]:
    """Building the node's messages from the objects (skipped without rclpy)."""
    try:
        from std_msgs.msg import Header

        from povss_ros.ros.outputs import marker_array, object_array, point_cloud
    except ImportError:
        return []
    header = Header(frame_id="camera_optical")
    mine = next(o for o in objects if o.concept_id)
    points = mine.geometry.points if mine.geometry is not None else np.zeros((0, 3))
    return [("ROS: ObjectArray + MarkerArray + the concept's PointCloud2",
             timed_ms(lambda: (object_array(objects, header), marker_array(objects, header),
                            point_cloud(points, header)), repeats))]


if __name__ == "__main__":
    main()
