"""``python -m povss_lab.eval``: the paper's protocol and ablation (see `povss_lab.eval.cli`)."""

import sys

from povss_lab.eval.cli import main

sys.exit(main())
