"""`povss_teach_ui`: the teach page's process (`ros2 run povss_ros povss_teach_ui`, or the
launch file's `teach_ui:=true`).

ROS parameters: `host` (default 127.0.0.1; any other address needs the token), `port`
(default 8642; 0 picks a free one), `token` (empty: one is generated), `target` (the povss
node's name, default `povss`, resolved in this node's namespace), `frames_kept` (camera
frames held for freezing). It prints the page's address, with the token where one is needed,
and serves until SIGINT/SIGTERM, then exits 0. Exit status 1 for a bad parameter or a port
that cannot be bound, with one line saying which.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening before the server starts: a taken port is
    a clear error here, port 0 gets its real number to print, and the printed address takes
    connections at once (they wait in the backlog until the server accepts them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    """Console entry point (standard ROS arguments after --ros-args)."""
    import rclpy
    import uvicorn
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from ..dds import use_large_image_transport
    from .app import build_app
    from .bridge import TeachUiNode
    from .guard import Guard, check_token_text, is_loopback, new_token

    argv = list(sys.argv if argv is None else argv)
    stop = threading.Event()
    use_large_image_transport()  # camera frames and overlays: see povss_ros.ros.dds
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = TeachUiNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True, name="ros")
    code = 0
    try:
        host = str(node.get_parameter("host").value).strip()
        port = int(node.get_parameter("port").value)
        given = str(node.get_parameter("token").value)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0..65535, got {port}")
        token = check_token_text(given) if given else new_token()
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        guard = Guard(host, sock.getsockname()[1], token)
        spinner.start()
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else None
        print(f"[povss_teach_ui] teach page for {node.resolve_target()}: "
              f"{guard.address(shown)}", flush=True)
        if not is_loopback(host):
            print(f"[povss_teach_ui] listening on {host} (not loopback): every request needs "
                  "the token in that address", flush=True)
        server = uvicorn.Server(uvicorn.Config(build_app(node, guard), log_level="warning",
                                               lifespan="off", access_log=False))
        previous = {s: signal.signal(s, lambda *_: stop.set())
                    for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[sock])  # uvicorn handles the signal, then re-raises it to us
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except ValueError as exc:
        print(f"[povss_teach_ui] error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # The ROS thread ends before the node and the context go: nothing spins on a destroyed
        # node, however long a callback in flight takes on a loaded machine.
        if not executor.shutdown(timeout_sec=30.0):
            print("[povss_teach_ui] warning: callbacks still running 30 s after the shutdown "
                  "began", file=sys.stderr, flush=True)
        if spinner.is_alive():
            spinner.join(timeout=30.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
