"""`povss node teach|forget|list`: call a running povss node's services without the ros2 CLI.

For users with the PyPI wheels only (no `ros2 service call`), and for scripts: the outcome
is printed in words (each rejected frame with its reason), the exit status is 0 on success
and 1 on failure (the node is not there, it refused, or no answer came in time), 130 after
Ctrl-C. Standard ROS arguments pass through after `--ros-args`.

    povss node teach "my mug" --base cup --shots a.png:a_mask.png b.png:b_mask.png
    povss node teach "my mug" --base cup --frames 5 --box 120,80,260,240
    povss node forget "my mug"
    povss node list --namespace robot1
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from rclpy.utilities import remove_ros_args

from ..io import shots_have_masks
from ..teaching.requests import add_teach_mode_flags

PROGRAM = "povss-node"  # argv[0] of the command line rclpy sees
INTERRUPTED = 130  # the shell's status for a process ended by SIGINT
WAIT_DEFAULT = 10.0
ANSWER_DEFAULTS = {"teach": 900.0, "forget": 60.0, "list": 60.0}


class ClientError(Exception):
    """A failure to report in one line (no node, no answer in time, a bad file)."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived while waiting."""


def numbers(count: int, what: str) -> Callable[[str], tuple[float, ...]]:
    """An argparse type: 'a,b,...' -> a tuple of `count` floats."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{what} must be {count} comma-separated numbers")
        return values

    parse.__name__ = what  # argparse names the type in its error message
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The `povss node` command line (ROS arguments are removed before it parses)."""
    parser = argparse.ArgumentParser(
        prog="povss node",
        description="Call the services of a running povss node (teach, forget, list).",
        epilog="Standard ROS arguments go after --ros-args (e.g. --ros-args -r __ns:=/robot).",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", default=None,
                        help="namespace of the node's services: /NS/teach_concept "
                        "(default: this client's namespace, normally /)")
    common.add_argument("--timeout", type=float, default=WAIT_DEFAULT, metavar="SECONDS",
                        help=f"how long to wait for the node's service (default {WAIT_DEFAULT:g})")
    common.add_argument("--answer-timeout", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for the answer (default: teach "
                        f"{ANSWER_DEFAULTS['teach']:g}, forget and list "
                        f"{ANSWER_DEFAULTS['list']:g})")
    sub = parser.add_subparsers(dest="action", required=True)
    t = sub.add_parser("teach", parents=[common], help="teach the node a personal concept")
    t.add_argument("name", help='the concept\'s name, e.g. "my mug"')
    t.add_argument("--base", "--base-class", dest="base", required=True, metavar="WORD",
                   help="the vocabulary word it is a kind of, e.g. cup")
    t.add_argument("--shots", nargs="+", default=[], metavar="IMAGE[:MASK]",
                   help="image files as the shots, each with its mask file (nonzero = the "
                   "concept) or without (a --box/--point, else the node's automatic mask)")
    t.add_argument("--frames", type=int, default=None, metavar="N",
                   help="use the node's N most recently captured camera frames (default when "
                   "no --shots: the node's teach_default_frames)")
    t.add_argument("--camera", default="", metavar="NAME",
                   help="whose captured frames: one of the node's cameras (its cameras "
                   "parameter); default: its first camera")
    prompt = t.add_mutually_exclusive_group()
    prompt.add_argument("--box", action="append", default=[], type=numbers(4, "box"),
                        metavar="X0,Y0,X1,Y1",
                        help="a box around the object, in pixels; repeat: one per shot, or "
                        "once for the newest shot")
    prompt.add_argument("--point", action="append", default=[], type=numbers(2, "point"),
                        metavar="X,Y", help="a pixel on the object; one per shot or one for "
                        "the newest shot, as --box")
    add_teach_mode_flags(t, "--not-box/--not-point")
    not_this = t.add_mutually_exclusive_group()
    not_this.add_argument("--not-box", action="append", default=[], type=numbers(4, "box"),
                          metavar="X0,Y0,X1,Y1",
                          help='"not this one": a box around a look-alike; one per shot or '
                          "once for the newest shot, as --box")
    not_this.add_argument("--not-point", action="append", default=[],
                          type=numbers(2, "point"), metavar="X,Y",
                          help='"not this one": a pixel on a look-alike, as --not-box')
    f = sub.add_parser("forget", parents=[common], help="remove a personal concept")
    f.add_argument("name", metavar="NAME_OR_ID", help="its name or concept id")
    sub.add_parser("list", parents=[common], help="list the personal concepts")
    return parser


def check_teach_args(args: argparse.Namespace) -> str:
    """What is wrong with a teach command line ('' when nothing): caught before any ROS."""
    if args.shots and args.frames is not None:
        return "give --shots or --frames, not both"
    if args.frames is not None and args.frames < 1:
        return "--frames must be at least 1"
    try:
        with_masks = shots_have_masks(args.shots)  # IMAGE:MASK
    except ValueError as exc:
        return str(exc)
    prompts = args.box or args.point
    if prompts and with_masks:
        return "--box/--point mark the object when the shots have no mask files: not both"
    shots = len(args.shots) or args.frames
    if prompts and shots and len(prompts) not in (1, shots):
        kind = "--box" if args.box else "--point"
        return f"{len(prompts)} {kind} for {shots} shots: give one per shot, or one"
    marks = args.not_box or args.not_point
    if marks and shots and len(marks) not in (1, shots):
        kind = "--not-box" if args.not_box else "--not-point"
        return f"{len(marks)} {kind} for {shots} shots: give one per shot, or one"
    for x0, y0, x1, y1 in [*args.box, *args.not_box]:
        if x1 <= x0 or y1 <= y0:
            return f"box {x0:g},{y0:g},{x1:g},{y1:g}: need x0 < x1 and y0 < y1"
    return ""


def teach_request(args: argparse.Namespace) -> object:
    """The TeachConcept request a teach command line describes."""
    from povss_interfaces.srv import TeachConcept

    from ..io import read_shots
    from .conversions import array_to_image

    images, masks = read_shots(args.shots)
    request = TeachConcept.Request(name=args.name, base_class=args.base,
                                   num_frames=args.frames or 0, overwrite=args.overwrite)
    request.images = [array_to_image(np.ascontiguousarray(im), "rgb8") for im in images]
    request.masks = [array_to_image(np.where(m, 255, 0).astype(np.uint8), "mono8")
                     for m in masks]
    request.boxes = [v for box in args.box for v in box]
    request.points = [v for point in args.point for v in point]
    request.negative_boxes = [v for box in args.not_box for v in box]
    request.negative_points = [v for point in args.not_point for v in point]
    request.correct, request.category = args.correct, args.category
    request.camera = args.camera
    return request


def report_teach(name: str, response: object) -> tuple[str, bool]:
    """The printed outcome of a teach and whether it succeeded."""
    lines = []
    if response.success:
        lines.append(
            f"taught {name!r} as concept {response.concept_id} (class id {response.class_id}):"
            f" {response.shots_used} shot(s)"
            + (f", {response.negatives_used} look-alike(s)" if response.negatives_used else "")
            + f", fit IoU {response.fit_iou:.2f}, "
            f"{response.training_seconds:.1f} s of training"
        )
    else:
        lines.append(f"error: teaching {name!r} failed: {response.message}")
    if response.success and response.message:
        lines.append(response.message)
    reasons = list(response.rejected_frames)
    if response.frames_rejected or reasons:
        lines.append(f"{max(response.frames_rejected, len(reasons))} frame(s) rejected:")
        lines += [f"  rejected: {why}" for why in reasons]
    return "\n".join(lines), bool(response.success)


def listing_table(response: object) -> str:
    """The node's concepts as a text table (one row per concept)."""
    if not response.concept_ids:
        return "no personal concepts"
    header = ("concept id", "name", "base class", "class id", "shots")
    rows = [header] + [
        (cid, name, base, str(class_id), str(shots))
        for cid, name, base, class_id, shots in zip(
            response.concept_ids, response.names, response.base_classes,
            response.class_ids, response.shot_counts, strict=False)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     .rstrip() for row in rows)


class ServiceCaller:
    """One rclpy node that waits for a service, calls it and waits for the answer, giving up
    on a deadline or at once on Ctrl-C/SIGTERM (handled here, so no traceback and no hang)."""

    def __init__(self, argv: list[str]) -> None:
        """`argv`: the command line; rclpy takes its ROS arguments (``--ros-args ...``)."""
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        from .dds import use_large_image_transport

        self.stop = threading.Event()
        self._previous = {s: signal.signal(s, lambda *_: self.stop.set())
                          for s in (signal.SIGINT, signal.SIGTERM)}
        use_large_image_transport()  # explicit shots are camera-sized images
        self.context = rclpy.Context()
        rclpy.init(args=[PROGRAM, *argv], context=self.context,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"povss_client_{os.getpid()}", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def call(self, srv_type: type, name: str, request: object, wait: float,
             answer: float) -> object:
        """Wait up to `wait` s for service `name`, call it, wait up to `answer` s for the
        response. Raises ClientError or Interrupted."""
        client = self.node.create_client(srv_type, name)
        resolved = client.service_name
        end = time.monotonic() + wait
        while not client.service_is_ready():
            if self.stop.is_set():
                raise Interrupted(f"interrupted while waiting for {resolved}")
            if time.monotonic() > end:
                raise ClientError(
                    f"no service {resolved} after {wait:g} s: is the povss node running, "
                    "in this namespace and ROS_DOMAIN_ID? Start it with "
                    "`ros2 launch povss_ros perception.launch.py` or `povss_node`; "
                    "--namespace NS looks under /NS")
            time.sleep(0.05)
        future = client.call_async(request)
        end = time.monotonic() + answer
        while not future.done():
            if self.stop.is_set():
                client.remove_pending_request(future)
                raise Interrupted(f"interrupted while waiting for {resolved}'s answer (the "
                                  "node may still complete the request)")
            if time.monotonic() > end:
                client.remove_pending_request(future)
                raise ClientError(f"no answer from {resolved} within {answer:g} s "
                                  "(--answer-timeout)")
            self.executor.spin_once(timeout_sec=0.1)
        return future.result()

    def close(self) -> None:
        """Tear down the node and this client's ROS context; restore the signal handlers."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def service_name(namespace: str | None, service: str) -> str:
    """Relative (resolved in the client's namespace) unless --namespace was given."""
    if namespace is None:
        return service
    ns = namespace.strip("/")
    return f"/{ns}/{service}" if ns else f"/{service}"


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Carry out one parsed command (`argv`: the whole command line, whose ROS arguments
    rclpy reads); returns the exit status."""
    from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

    if args.action == "teach":
        request = teach_request(args)  # files are read before any ROS start-up
        srv, service = TeachConcept, "teach_concept"
    elif args.action == "forget":
        srv, service, request = ForgetConcept, "forget_concept", ForgetConcept.Request(
            name=args.name)
    else:
        srv, service, request = ListConcepts, "list_concepts", ListConcepts.Request()
    answer = args.answer_timeout or ANSWER_DEFAULTS[args.action]
    caller = ServiceCaller(argv)
    try:
        if args.action == "teach":
            print(f"teaching {args.name!r} (a kind of {args.base!r}); the node answers when "
                  "training ends", file=sys.stderr, flush=True)
        response = caller.call(srv, service_name(args.namespace, service), request,
                               args.timeout, answer)
    finally:
        caller.close()
    if args.action == "teach":
        text, ok = report_teach(args.name, response)
    elif args.action == "forget":
        ok = bool(response.success)
        text = response.message if ok else f"error: {response.message}"
    else:
        text, ok = listing_table(response), True
    print(text, file=sys.stdout if ok else sys.stderr, flush=True)
    return 0 if ok else 1


def own_arguments(argv: Sequence[str]) -> list[str]:
    """This command's own arguments: `argv` without the ROS ones (``--ros-args ... [--]``),
    as rclpy removes them (`remove_ros_args`); ClientError for malformed ROS arguments."""
    try:
        return remove_ros_args([PROGRAM, *argv])[1:]  # rcl never reads argv[0] as ROS's
    except RuntimeError as exc:  # rcl's RCLInvalidROSArgsError, which rclpy does not export
        raise ClientError(f"bad ROS arguments: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """`povss node ...` (argv without the `povss node` prefix)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        own = own_arguments(argv)
    except ClientError as exc:
        parser.error(str(exc))
    args = parser.parse_args(own)
    if args.action == "teach":
        problem = check_teach_args(args)
        if problem:
            parser.error(problem)
    from ..io import ImageError

    try:
        return run(args, argv)
    except (ClientError, ImageError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"\n{exc or 'interrupted'}", file=sys.stderr, flush=True)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
