# Everything the project needs is installed by these targets, from PyPI only.
#   make test    set up the venvs (first run); the test suite on ROS 2 Kilted, then the ROS tests
#                on Jazzy (make test ROS_DISTRO=jazzy: the whole suite on Jazzy alone)
#   make demo    the node learns "my mug" in the synthetic world (WEIGHTS=... real photos)
#   make train-synthetic / eval-synthetic   the small model and the SYN^per benchmark
#   make bench   speed tables: one 640x480 frame, teaching, the node under a 30 Hz stream,
#                objects and 3D, identity, several cameras, sharing between nodes
#   make soak    the node for MINUTES under a stream, teaching and forgetting: RSS, throughput
#   make lint    ruff
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
# The ROS 2 distribution whose PyPI wheels (requirements-ros-$(ROS_DISTRO).txt) the venv holds:
# kilted in .venv, jazzy in .venv-jazzy. Only the command line picks one: a sourced ROS shell
# exports ROS_DISTRO too, for its own install, which the venv does not use.
ifneq ($(origin ROS_DISTRO),command line)
ROS_DISTRO := kilted
endif
ifeq ($(wildcard requirements-ros-$(ROS_DISTRO).txt),)
$(error ROS_DISTRO=$(ROS_DISTRO) has no requirements-ros-$(ROS_DISTRO).txt: kilted or jazzy)
endif
# `make test` also runs the ROS tests on these distributions (none when one is named).
TEST_ALSO_ON := $(if $(filter command line,$(origin ROS_DISTRO)),,jazzy)
VENV ?= $(if $(filter kilted,$(ROS_DISTRO)),.venv,.venv-$(ROS_DISTRO))
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.povss-installed
WEIGHTS ?=
# The lab (povss_lab) and the benchmarks run from this checkout; only the runtime is installed.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH),)
# Keep every DDS packet of tests and scripts on this machine, in a private domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42

.PHONY: setup test test-ros demo bench soak lint interfaces clean train-synthetic eval-synthetic browser

setup: $(STAMP) interfaces browser

$(STAMP): requirements.txt requirements-dev.txt requirements-ros-$(ROS_DISTRO).txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# A second venv (.venv-jazzy) hard-links .venv's torch build instead of a second 5 GB copy.
	if [ "$(VENV)" != .venv ] && [ -f .venv/.povss-installed ]; then $(PY) scripts/share_packages.py .venv $(VENV); fi
	$(PIP) install -q --progress-bar off -r requirements-dev.txt -r requirements-ros-$(ROS_DISTRO).txt 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PIP) install -q --progress-bar off --no-deps -e . 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(PY) -c "import torch, open_clip, rclpy, cv2, imgviz; print('venv ready: torch', torch.__version__)"
	touch $(STAMP)

interfaces: $(STAMP)
	scripts/build_interfaces.sh $(VENV)

# Headless chromium + chromedriver (apt) for the teach UI's browser tests; nothing when present.
browser:
	scripts/install_browser.sh

test: setup
	$(PY) -m pytest -q
	for distro in $(TEST_ALSO_ON); do $(MAKE) --no-print-directory test-ros ROS_DISTRO=$$distro VENV=.venv-$$distro; done

# The ROS tests alone (marker `ros`: rclpy, messages, DDS, the node) in this distribution's venv.
test-ros: setup
	@echo "ROS tests on $(ROS_DISTRO) ($(VENV))"
	$(PY) -m pytest -q -m ros

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The main job: the real node, a camera stream, /teach_concept, before/after overlays.
# Default: the small SAN trained on the synthetic world; WEIGHTS=san_vit_b_16.pth runs the
# same flow on the bundled real photographs. UI=1 then leaves the teach page open on it.
demo: setup
	$(PY) -m povss_lab.demo $(if $(WEIGHTS),--weights $(WEIGHTS),) $(if $(UI),--ui,)

# Retrain the small synthetic-world SAN (seeded; two 1-thread workers; auto precision: a bf16 forward
# where the CPU has native bf16 (avx512_bf16/amx_bf16), about 46 minutes on 2 such cores, else fp32).
train-synthetic: setup
	$(PY) -m povss_lab.training.train --out models/syn_small.safetensors --steps 6600 --low-res 128 3300 --precision auto --workers 2 --seed 0

# SYN^per: the paper's protocol and ablation on the synthetic world -> docs/results/
# (about 7 minutes each): concepts among the identities the model was trained on, then
# concepts it never saw (world seed 1), as a real user's mug would be.
eval-synthetic: setup
	$(PY) -m povss_lab.eval --weights models/syn_small.safetensors --out docs/results --threads 2
	$(PY) -m povss_lab.eval --weights models/syn_small.safetensors --out docs/results --threads 2 \
	    --world-seed 1 --name synper_unseen

# Speed tables (markdown) into docs/bench/; docs/experiments.md quotes them with date and machine.
bench: setup
	mkdir -p docs/bench
	$(PY) bench/bench_segment.py --out docs/bench/segment.md
	$(PY) bench/bench_teach.py | tee docs/bench/teach.md
	$(PY) bench/bench_node.py | tee docs/bench/node.md
	$(PY) bench/bench_objects.py | tee docs/bench/objects.md
	$(PY) bench/bench_identity.py | tee docs/bench/identity.md
	$(PY) bench/bench_attention.py | tee docs/bench/attention.md
	$(PY) bench/bench_cameras.py | tee docs/bench/cameras.md
	$(PY) bench/bench_sharing.py | tee docs/bench/sharing.md

# The node for MINUTES under a RATE Hz stream with a teach and a forget every minute: RSS and
# throughput per interval (not in CI; make soak MINUTES=10 RATE=30).
MINUTES ?= 10
RATE ?= 5
soak: setup
	$(PY) bench/soak.py --minutes $(MINUTES) --rate $(RATE)

clean:
	rm -rf build install log out .pytest_cache
