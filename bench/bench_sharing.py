"""How soon a concept taught on one robot is in use on the others (`share_concepts`).

Three povss nodes, each its own process with its own concept store, sharing concepts over real
DDS on loopback (a private domain), all watching one synthetic 320x240 camera at --rate Hz; the
small synthetic-world model on the CPU. For each of --repeats new names, this process teaches
the concept on the first node (three exact masks, as an operator's correction would send
them) and, from the moment the teach's answer arrives, times how long until each other node
publishes the concept's mask (`~/concepts/<id>/mask`, its first message: the node has adopted
the concept, swapped it into its model and segmented a frame with it). Then it forgets the
concept on the first node and times until each other node no longer lists it. Prints a
markdown table: median and worst over the repeats.

    python bench/bench_sharing.py [--repeats 5] [--rate 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from hardware import cpu_name  # noqa: E402 - bench/ sibling
from small_engine import SMALL_MODEL  # noqa: E402 - bench/ sibling

from povss_lab.spawn import loopback_dds, node_command, write_params
from povss_ros.personal.names import concept_id

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = ("/r0", "/r1", "/r2")
CAMERA = "/bench/c0"  # where `bench_cameras.publish_cameras` sends its first camera
WAIT_S = 120.0  # bound of each wait (a node that never adopts fails the bench, named)


def wait_for(check, what: str, nodes: list[subprocess.Popen]) -> float:  # noqa: ANN001
    """Poll `check` until true; the seconds it took. SystemExit naming `what` on a timeout or
    a node that stopped."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > WAIT_S or any(n.poll() is not None for n in nodes):
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.005)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="concepts taught and forgotten")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    args = parser.parse_args()
    env = loopback_dds(ROOT)
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image

    from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept
    from povss_lab.synthetic.world import World, sample_scene
    from povss_ros.ros.conversions import array_to_image
    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()
    rclpy.init()
    tmp = Path(tempfile.mkdtemp(prefix="povss_bench_sharing_"))
    nodes = []
    for ns in ROBOTS:
        params = write_params(tmp / f"{ns.strip('/')}.yaml", {
            "weights": f'"{SMALL_MODEL}"', "device": "cpu", "precision": "fp32",
            "concept_store": f'"{tmp / ns.strip("/")}"', "share_concepts": "true",
            "teach_iterations": "40"})
        nodes.append(subprocess.Popen(
            node_command(params, {"__ns": ns, "image": f"{CAMERA}/image",
                                  "camera_info": f"{CAMERA}/camera_info"}),
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    camera = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_cameras.py"),
                               "--publish", "1", "--rate", str(args.rate)], cwd=ROOT, env=env)
    client = rclpy.create_node("bench_sharing_client")
    teach = client.create_client(TeachConcept, f"{ROBOTS[0]}/teach_concept")
    forget = client.create_client(ForgetConcept, f"{ROBOTS[0]}/forget_concept")
    lists = [client.create_client(ListConcepts, f"{ns}/list_concepts") for ns in ROBOTS[1:]]
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()

    def call(service, request):  # noqa: ANN001, ANN202
        if not service.wait_for_service(timeout_sec=WAIT_S):
            raise SystemExit(f"no service {service.srv_name}")
        return service.call(request, timeout_sec=WAIT_S)

    def listed(i: int, name: str) -> bool:
        return name in call(lists[i], ListConcepts.Request()).names

    world = World(0)
    mine = world.identity("mug", 0)
    rng = np.random.default_rng(3)
    shots = [sample_scene(rng, world, [mine], size=(320, 240)) for _ in range(3)]
    shot_images = [array_to_image(s.image, "rgb8") for s in shots]
    shot_masks = [array_to_image(s.mask(mine).astype(np.uint8) * 255, "mono8") for s in shots]
    arrived: dict[tuple[int, str], float] = {}
    teach_s, adopt_s, forget_s = [], [[] for _ in lists], [[] for _ in lists]
    try:
        for i in range(2):  # every other node up (answers its list service)
            call(lists[i], ListConcepts.Request())
        for r in range(args.repeats):
            name = f"my mug {r}"
            cid = concept_id(name)
            for i, ns in enumerate(ROBOTS[1:]):
                client.create_subscription(
                    Image, f"{ns}/povss/concepts/{cid}/mask",
                    lambda _m, key=(i, cid): arrived.setdefault(key, time.monotonic()), 10)
            started = time.monotonic()
            res = call(teach, TeachConcept.Request(name=name, base_class="mug",
                                                   images=shot_images, masks=shot_masks))
            answered = time.monotonic()
            if not res.success:
                raise SystemExit(f"teach failed: {res.message}")
            teach_s.append(answered - started)
            for i in range(len(lists)):
                wait_for(lambda key=(i, cid): key in arrived, f"{ROBOTS[i + 1]}'s mask", nodes)
                adopt_s[i].append(arrived[(i, cid)] - answered)
            res = call(forget, ForgetConcept.Request(name=name))
            if not res.success:
                raise SystemExit(f"forget failed: {res.message}")
            for i in range(len(lists)):
                forget_s[i].append(wait_for(lambda i=i, n=name: not listed(i, n),
                                            f"{ROBOTS[i + 1]} to forget", nodes))
            print(f"[{r + 1}/{args.repeats}] {name}: taught in {teach_s[-1]:.2f} s; masks "
                  f"after {', '.join(f'{s[-1]:.2f}' for s in adopt_s)} s", file=sys.stderr)
    finally:
        camera.send_signal(2)
        for n in nodes:
            n.send_signal(2)
        camera.wait(timeout=30)
        for n in nodes:
            n.wait(timeout=60)
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown()

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.0f} / {max(values) * 1e3:.0f}"

    print(f"Sharing concepts between three nodes (separate processes and stores, one DDS domain "
          f"on loopback): SAN syn_small on the CPU (fp32), one 320x240 camera at {args.rate:g} "
          f"Hz watched by all; {args.repeats} concepts, each taught on {ROBOTS[0]} from three "
          f"masked shots (40 iterations), then forgotten there; {cpu_name()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} (CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}), {date.today().isoformat()}.\n")
    print("| node | teach answered -> its first mask of the concept, ms (median / worst) | "
          "forget answered -> no longer listed, ms (median / worst) |")
    print("|---|---:|---:|")
    for i, ns in enumerate(ROBOTS[1:]):
        print(f"| {ns} | {cell(adopt_s[i])} | {cell(forget_s[i])} |")
    print(f"\nThe teach itself on {ROBOTS[0]}: {cell(teach_s)} ms (median / worst). "
          "A forget is timed by polling list_concepts, so its figure includes up to one "
          "service round trip.")


if __name__ == "__main__":
    main()
