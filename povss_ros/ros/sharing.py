"""One memory across nodes, over ROS 2 itself: each concept a node learns, corrects or forgets
goes out on one latched topic, and every node on the same weights adopts what the others send.

The topic is absolute (`SHARED_TOPIC`), so nodes in any namespace, on any robot of the DDS
domain (or of a Zenoh router's network), share one memory. Its messages are
std_msgs/UInt8MultiArray whose ``data`` is one envelope of `personal.store.shared` (a
safetensors file: the concept's stored meta.json and tensors, optionally its shots; or a
forget). The publisher is reliable and transient local, keeping the last `SHARED_HISTORY`
events: a node that starts later receives them and catches up. A received message is untrusted:
`PerceptionEngine.adopt_shared` checks it as a stored concept is checked at load, and a bad one
is refused with one warning, nothing stored.
"""

from __future__ import annotations

import array
import socket

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import UInt8MultiArray

from ..perception import PerceptionEngine
from .services import after_the_fact

SHARED_TOPIC = "/povss/concepts/shared"
# Events each node keeps for late joiners: a teach and a forget each take one. With messages
# of at most `shared.MAX_SHARED_BYTES` (32 MiB), the topic holds at most 16 x 32 MiB = 512 MiB
# on each publisher and, as received, on each subscriber; a concept without shots takes tens
# of KiB, a few MiB with a thousand look-alikes (docs/ros.md, Sharing concepts).
SHARED_HISTORY = 16
SHARED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=SHARED_HISTORY,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def node_id(node: Node) -> str:
    """This node's id in the messages: host name and fully qualified node name (one node of a
    name per host and domain), so a node knows its own messages and ties resolve alike."""
    return f"{socket.gethostname()}{node.get_fully_qualified_name()}"


class ConceptSharing:
    """The shared topic's publisher and subscription for one configured engine."""

    def __init__(self, node: Node, engine: PerceptionEngine, shots: bool) -> None:
        self.node, self.engine, self.shots = node, engine, shots
        engine.node_id = node_id(node)
        self.publisher = node.create_publisher(UInt8MultiArray, SHARED_TOPIC, SHARED_QOS)
        engine.share_listener = self.publish
        self.subscription = node.create_subscription(
            UInt8MultiArray, SHARED_TOPIC, self._on_message, SHARED_QOS,
            callback_group=MutuallyExclusiveCallbackGroup())

    def publish(self, event: str, cid: str, stamp: str) -> None:
        """Send one teach or forget of this node (`PerceptionEngine.shared_message`)."""
        data = self.engine.shared_message(event, cid, stamp, self.shots)
        self.publisher.publish(UInt8MultiArray(data=array.array("B", data)))
        self.node.get_logger().info(f"shared: {event} {cid} ({len(data)} bytes)")

    def _on_message(self, msg: UInt8MultiArray) -> None:
        """Adopt another node's concept, or refuse it with one warning; never raises."""
        try:
            done, note = self.engine.adopt_shared(msg.data.tobytes())
        except Exception as exc:  # noqa: BLE001 - untrusted input never stops the node
            self.node.get_logger().warning(f"shared concept refused, nothing stored: {exc}")
            return
        if note:
            self.node.get_logger().warning(f"shared concept: {note}")
        if done:
            self.node.get_logger().info(f"shared concept {done}")
            after_the_fact(self.node.get_logger(), "publishing the concepts",
                           self.node.concepts_changed)

    def close(self) -> None:
        """Stop sending and receiving (cleanup, shutdown)."""
        self.engine.share_listener = None
        self.node.destroy_subscription(self.subscription)
        self.node.destroy_publisher(self.publisher)
