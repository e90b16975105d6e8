"""``python -m povss_lab.eval``: the paper's protocol and ablation (see `povss_lab.eval.cli`)."""

from povss_lab.eval.cli import main
from povss_lab.interrupt import run_main

run_main(main)
