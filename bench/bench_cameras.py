"""Several cameras: one povss node for N cameras against N nodes of one camera each.

For N = 1, 2, 4 cameras, each sending a 320x240 synthetic scene at --rate Hz (stamped with
the wall clock), over real DDS on loopback (a private domain): one node with `cameras:
[c0, ...]` and `batch_cameras: never`, the same with `always`, and N one-camera nodes, each
its own process. The small synthetic-world model on the CPU. Per configuration, after a
warm-up: the nodes' memory (RSS summed over processes, and PSS, which counts each shared
page once), the labels images received per camera per second, and the latency from the
frame's stamp to its labels received here (median and p95 over all cameras). Prints a
markdown table with the ratios of one node to N nodes.

    python bench/bench_cameras.py [--rate 10] [--warmup 8] [--seconds 20] [--cameras 1 2 4]
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
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from hardware import cpu_name  # noqa: E402 - bench/ sibling
from small_engine import SMALL_MODEL  # noqa: E402 - bench/ sibling

from povss_lab.spawn import loopback_dds, node_command, write_params

ROOT = Path(__file__).resolve().parents[1]
SIZE = (320, 240)
NS = "/bench"


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of a process in MiB (PSS shares each shared page among its users)."""
    rss = pss = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, pss


def publish_cameras(count: int, rate: float) -> None:
    """The cameras' process: `count` synthetic scenes on /bench/c<i>/image (+ camera_info),
    stamped with the wall clock, at `rate` Hz each, until SIGINT."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from povss_lab.synthetic.world import World, sample_scene
    from povss_ros.ros.conversions import array_to_image
    from povss_ros.ros.dds import use_large_image_transport

    world = World(0)
    images = [sample_scene(np.random.default_rng(i), world, [], size=SIZE).image
              for i in range(count)]
    use_large_image_transport()
    rclpy.init()
    node = rclpy.create_node("bench_cameras")
    pubs = [(node.create_publisher(Image, f"{NS}/c{i}/image", qos_profile_sensor_data),
             node.create_publisher(CameraInfo, f"{NS}/c{i}/camera_info",
                                   qos_profile_sensor_data)) for i in range(count)]
    period, tick = 1.0 / rate, time.monotonic()
    try:
        while rclpy.ok():
            now = time.time()
            for i, (image_pub, info_pub) in enumerate(pubs):
                msg = array_to_image(images[i], "rgb8")
                msg.header.frame_id = f"c{i}_optical"
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int(now % 1 * 1e9)
                info_pub.publish(CameraInfo(header=msg.header, height=msg.height,
                                            width=msg.width))
                image_pub.publish(msg)
            tick += period
            time.sleep(max(0.0, tick - time.monotonic()))  # the cameras' frame rate
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


@dataclass
class Result:
    setup: str
    cameras: int
    rss_mib: float
    pss_mib: float
    fps_per_camera: list[float]
    latency_ms: list[float]
    batched_share: str

    def row(self, base: Result | None) -> str:
        fps = statistics.median(self.fps_per_camera)
        lat = statistics.median(self.latency_ms) if self.latency_ms else float("nan")
        p95 = float(np.percentile(self.latency_ms, 95)) if self.latency_ms else float("nan")
        ratios = ""
        if base is not None and base is not self:
            ratios = (f" | {self.pss_mib / base.pss_mib:.2f}x | "
                      f"{fps / statistics.median(base.fps_per_camera):.2f}x | "
                      f"{lat / statistics.median(base.latency_ms):.2f}x")
        elif base is self:
            ratios = " | 1 | 1 | 1"
        else:
            ratios = " | | |"
        return (f"| {self.cameras} | {self.setup} | {self.rss_mib:.0f} | {self.pss_mib:.0f} | "
                f"{fps:.2f} ({min(self.fps_per_camera):.2f}-{max(self.fps_per_camera):.2f}) | "
                f"{lat:.0f} | {p95:.0f} | {self.batched_share}{ratios} |")


def run(setup: str, count: int, args: argparse.Namespace, env: dict, tmp: Path) -> Result:
    """One configuration: start its nodes and the cameras, measure, stop them."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    one_node = setup != "nodes"
    params = {"weights": f'"{SMALL_MODEL}"', "device": "cpu", "precision": "fp32",
              "concept_store": f'"{tmp / "concepts"}"', "diagnostics_period": "0.5"}
    if one_node:
        names = ", ".join(f"c{i}" for i in range(count))
        params.update(cameras=f"[{names}]", batch_cameras=setup)
        commands = [node_command(write_params(tmp / f"{setup}{count}.yaml", params),
                                 {"__ns": NS})]
        topics = [f"{NS}/povss/c{i}/labels" for i in range(count)]
    else:
        file = write_params(tmp / f"nodes{count}.yaml", params)
        commands = [node_command(file, {"__ns": f"{NS}/c{i}"}) for i in range(count)]
        topics = [f"{NS}/c{i}/povss/labels" for i in range(count)]
    nodes = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    client = rclpy.create_node(f"bench_client_{setup}_{count}")
    received: list[list[tuple[float, float]]] = [[] for _ in topics]  # (at, latency)
    diags: dict[str, dict[str, str]] = {}

    def on_labels(i: int, msg: Image) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        received[i].append((now, now - stamp))

    for i, topic in enumerate(topics):
        client.create_subscription(Image, topic, lambda m, i=i: on_labels(i, m), 10)
    client.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.update(
        {m.status[0].name: {kv.key: kv.value for kv in m.status[0].values}}), 10)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    cameras = subprocess.Popen([sys.executable, __file__, "--publish", str(count),
                                "--rate", str(args.rate)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not all(received):  # every camera's labels flow
            if time.monotonic() > deadline or any(n.poll() is not None for n in nodes):
                errors = "".join(n.stderr.read()[-2000:] for n in nodes if n.poll() is not None)
                raise SystemExit(f"{setup} x{count}: no labels from every camera\n{errors}")
            time.sleep(0.2)
        time.sleep(args.warmup)
        start = time.time()
        time.sleep(args.seconds)
        end = time.time()
        memory = [memory_mib(n.pid) for n in nodes]
        batched = [int(d.get("batched_frames", 0)) for d in diags.values()]
        frames = [int(d.get("frames", 0)) for d in diags.values()]
    finally:
        cameras.send_signal(2)
        cameras.wait(timeout=30)
        for n in nodes:
            n.send_signal(2)
        for n in nodes:
            n.wait(timeout=60)
        executor.shutdown()
        client.destroy_node()
    window = [[lat for at, lat in got if start <= at < end] for got in received]
    share = f"{sum(batched) / max(1, sum(frames)):.0%}" if setup == "always" else "-"
    return Result(setup, count, sum(m[0] for m in memory), sum(m[1] for m in memory),
                  [len(w) / (end - start) for w in window],
                  [lat * 1e3 for w in window for lat in w], share)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--publish", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish_cameras(args.publish, args.rate)
        return

    env = loopback_dds(ROOT)
    import rclpy

    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()
    rclpy.init()
    tmp = Path(tempfile.mkdtemp(prefix="povss_bench_cameras_"))
    results: list[tuple[Result, Result | None]] = []
    for count in args.cameras:
        base = run("nodes", count, args, env, tmp)
        if count == 1:  # one node of one camera: the same whatever the setup
            results.append((base, None))
            continue
        results += [(run(s, count, args, env, tmp), base) for s in ("never", "always")]
        results.append((base, base))
    rclpy.try_shutdown()

    print(f"Several cameras, one node against one node per camera: SAN syn_small on the CPU "
          f"(fp32), {SIZE[0]}x{SIZE[1]} frames at {args.rate:g} Hz per camera, "
          f"{args.seconds:g} s measured after {args.warmup:g} s; {cpu_name()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} (CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}), {date.today().isoformat()}.\n")
    print("| cameras | setup | RSS MiB (sum) | PSS MiB (sum) | labels/s per camera, median "
          "(min-max) | latency median ms | latency p95 ms | frames batched | PSS vs N nodes "
          "| per-camera rate vs N nodes | latency vs N nodes |")
    print("|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    names = {"never": "one node, batch_cameras never", "always": "one node, batch_cameras "
             "always", "nodes": "one node per camera"}
    for result, base in results:
        result.setup = names.get(result.setup, result.setup)
        print(result.row(base))


if __name__ == "__main__":
    main()
