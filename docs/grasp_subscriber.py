"""Where is my mug? A minimal consumer of the povss node's ~/objects (run beside the node).

    python3 docs/grasp_subscriber.py [CONCEPT_ID] [--count N] [--ros-args -r ...]

Prints one line per frame: the concept's 3D centroid in the camera's optical frame, or that
it is not in view, or that the node was never taught it. A node in a namespace:
`--ros-args -r /povss/objects:=/robot1/povss/objects`.
The test suite runs this file against a real node.
"""

import sys

import rclpy
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from povss_interfaces.msg import ObjectArray


class WhereIsMyMug(Node):
    def __init__(self, concept_id: str, count: int) -> None:
        super().__init__("where_is_my_mug")
        self.concept_id, self.left = concept_id, count
        self.create_subscription(ObjectArray, "/povss/objects", self.on_objects, 10)

    def on_objects(self, msg: ObjectArray) -> None:
        mine = [o for o in msg.objects if o.concept_id == self.concept_id]
        stamp = f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}"
        if not mine:  # the node lists every taught concept in every frame
            print(f"{stamp} {self.concept_id} never taught (the node has no such concept)",
                  flush=True)
        elif not mine[0].present:
            print(f"{stamp} {self.concept_id} taught, not in view", flush=True)
        elif mine[0].area == 0:  # present, briefly hidden: no region in this frame
            print(f"{stamp} {self.concept_id} in view, not seen in this frame", flush=True)
        elif mine[0].has_3d:
            c = mine[0].centroid
            print(f"{stamp} {self.concept_id} at {c.x:.3f} {c.y:.3f} {c.z:.3f} m in "
                  f"{msg.header.frame_id} (score {mine[0].score:.2f})", flush=True)
        else:
            b = mine[0].box
            print(f"{stamp} {self.concept_id} in view at pixels x={b.x_offset} y={b.y_offset} "
                  f"w={b.width} h={b.height}, no depth", flush=True)
        self.left -= 1


def main() -> None:
    args = remove_ros_args(sys.argv)[1:]
    count = int(args[args.index("--count") + 1]) if "--count" in args else -1
    names = [a for i, a in enumerate(args) if not a.startswith("--")
             and (i == 0 or args[i - 1] != "--count")]
    rclpy.init(args=sys.argv)
    node = WhereIsMyMug(names[0] if names else "my_mug", count)
    try:
        while rclpy.ok() and node.left != 0:
            rclpy.spin_once(node, timeout_sec=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
