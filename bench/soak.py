"""The node under a long camera stream with a teach and a forget every period: memory and
throughput over time (`make soak`, not in CI).

Three kinds of processes over real DDS on loopback (private domain): the node (the small
synthetic-world model by default), a camera replay looping over synthetic scenes at --rate,
and this script, which counts the labels it receives, teaches "soak mug" from five shots
every --teach-every seconds and forgets it half a period later. Every --interval seconds it
prints one row: the node's RSS, the labels rate, dropped frames and the teach/forget counts;
at the end a markdown table and the RSS growth from the first to the last interval.

    python bench/soak.py [--minutes 10] [--rate 5] [--interval 30] [--teach-every 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
from bench_node import rss_mib
from hardware import cpu_name
from small_engine import SMALL_MODEL  # noqa: E402 - bench/ sibling

from povss_lab.interrupt import run_main
from povss_lab.ros_demo import synthetic_frames
from povss_lab.spawn import loopback_dds, node_command, write_params
from povss_ros.io import write_png

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Counts:
    """What the client saw since the start (the rows are differences of these)."""

    labels: int = 0
    teach_ok: int = 0
    teach_failed: int = 0
    forget_ok: int = 0
    forget_failed: int = 0
    failures: list[str] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="camera frames per second")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per row")
    parser.add_argument("--teach-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--weights", default=str(SMALL_MODEL))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    env = loopback_dds()
    tmp = Path(tempfile.mkdtemp(prefix="povss_soak_"))
    data = synthetic_frames()
    scenes = [tmp / f"scene{i}.png" for i in range(len(data["test"]))]
    for path, rgb in zip(scenes, data["test"]):
        write_png(path, rgb)
    mug = data["concepts"][0]
    params = write_params(tmp / "params.yaml", {
        "weights": f'"{args.weights}"', "device": args.device,
        "concept_store": f'"{tmp / "concepts"}"', "diagnostics_period": "1.0",
    })
    node = subprocess.Popen(node_command(params, {"image": "/soak/image"}), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    camera = None
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    client = SoakClient()
    try:
        client.wait_ready(node)
        camera = subprocess.Popen(
            [sys.executable, "-m", "povss_ros.ros.replay", *map(str, scenes), "--topic",
             "/soak/image", "--rate", str(args.rate), "--seconds", str(args.minutes * 60 + 5),
             "--loop"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        rows = soak(client, node, mug, args)
    finally:
        client.close()
        rclpy.try_shutdown()
        for proc in (camera, node):
            if proc is not None and proc.poll() is None:
                proc.send_signal(2)
                proc.wait(timeout=60)
    report(rows, client.counts, args)
    return 0


def soak(client: SoakClient, node: subprocess.Popen, mug: dict, args: argparse.Namespace
         ) -> list[tuple]:
    """Stream, teach and forget for --minutes; one row per --interval, printed as it comes."""
    start = time.monotonic()
    end = start + args.minutes * 60
    next_row, next_teach, forget_at = start + args.interval, start + 5.0, None
    last = (0.0, 0)
    rows = []
    print("| minute | node RSS (MiB) | labels (Hz) | dropped | teaches ok/failed | forgets ok |",
          flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    while time.monotonic() < end:
        now = time.monotonic()
        if node.poll() is not None:
            raise SystemExit(f"the node died:\n{node.stderr.read()[-3000:]}")
        if now >= next_teach:
            client.teach(mug)
            next_teach, forget_at = now + args.teach_every, now + args.teach_every / 2
        if forget_at is not None and now >= forget_at:
            client.forget("soak mug")
            forget_at = None
        if now >= next_row:
            c = client.counts
            elapsed = now - start
            rate = (c.labels - last[1]) / (elapsed - last[0])
            row = (elapsed / 60, rss_mib(node.pid), rate,
                   c.diagnostics.get("dropped_frames", "?"), c.teach_ok, c.teach_failed,
                   c.forget_ok)
            rows.append(row)
            print("| {:.1f} | {:.0f} | {:.2f} | {} | {}/{} | {} |".format(*row), flush=True)
            last, next_row = (elapsed, c.labels), now + args.interval
        time.sleep(0.2)
    return rows


def report(rows: list[tuple], counts: Counts, args: argparse.Namespace) -> None:
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"\npovss node soak, {args.minutes:g} min at {args.rate:g} Hz, a teach every "
          f"{args.teach_every:g} s, {date.today().isoformat()}, {cpu_name()} "
          f"(torch CPU capability {capability}), device: {counts.diagnostics.get('device')}")
    if len(rows) >= 2:
        first, last = rows[0][1], rows[-1][1]
        print(f"RSS {first:.0f} -> {last:.0f} MiB from the first to the last interval "
              f"({last - first:+.0f} MiB); labels {np.median([r[2] for r in rows]):.2f} Hz "
              "median per interval")
    print(f"teaches {counts.teach_ok} ok, {counts.teach_failed} failed; forgets "
          f"{counts.forget_ok} ok, {counts.forget_failed} failed")
    for line in counts.failures:
        print(f"  {line}")


class SoakClient:
    """Labels counter, diagnostics reader, teach and forget caller, in this process."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        from povss_interfaces.srv import ForgetConcept, TeachConcept

        self.counts = Counts()
        self.node = rclpy.create_node("povss_soak")
        self.node.create_subscription(Image, "/povss/labels", self._on_labels, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.teach_cli = self.node.create_client(TeachConcept, "/teach_concept")
        self.forget_cli = self.node.create_client(ForgetConcept, "/forget_concept")
        self.executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_labels(self, msg: object) -> None:
        self.counts.labels += 1

    def _on_diag(self, msg: object) -> None:
        if msg.status and msg.status[0].name.startswith("/povss:"):
            self.counts.diagnostics = {kv.key: kv.value for kv in msg.status[0].values}

    def wait_ready(self, node: subprocess.Popen, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while self.counts.diagnostics.get("lifecycle_state") != "active":
            if node.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the node did not start:\n{node.stderr.read()[-3000:]}")
            time.sleep(0.2)

    def _call(self, client: object, request: object, timeout: float = 600.0) -> object:
        assert client.wait_for_service(timeout_sec=60), "service not available"
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > end:
                return None
            time.sleep(0.05)
        return future.result()

    def teach(self, concept: dict) -> None:
        from povss_interfaces.srv import TeachConcept
        from povss_ros.ros.conversions import array_to_image

        req = TeachConcept.Request(name="soak mug", base_class=concept["base_class"])
        req.images = [array_to_image(i, "rgb8") for i in concept["teach"]]
        req.masks = [array_to_image(np.where(m, 255, 0).astype(np.uint8), "mono8")
                     for m in concept["operator_masks"]]
        res = self._call(self.teach_cli, req)
        if res is not None and res.success:
            self.counts.teach_ok += 1
        else:
            self.counts.teach_failed += 1
            self.counts.failures.append(f"teach: {res.message if res else 'no answer'}")

    def forget(self, name: str) -> None:
        from povss_interfaces.srv import ForgetConcept

        res = self._call(self.forget_cli, ForgetConcept.Request(name=name))
        if res is not None and res.success:
            self.counts.forget_ok += 1
        else:
            self.counts.forget_failed += 1
            self.counts.failures.append(f"forget: {res.message if res else 'no answer'}")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


if __name__ == "__main__":
    run_main(main)
