#!/usr/bin/env bash
# The checks only a CUDA machine can make, in one run: the CUDA tests and the GPU rows of the
# speed tables, each output written to OUT_DIR.
#
#   scripts/gpu_check.sh OUT_DIR [WHEELS_DIR]
#
# Needs python3 with a CUDA build of torch, numpy, opencv, safetensors, scipy and pytest. The
# runtime's pure-Python packages a bare GPU image lacks (open_clip_torch, ftfy, wcwidth) can
# come as wheels in WHEELS_DIR, installed to a private folder first, e.g. made here with
#   pip download --no-deps -d .whl open_clip_torch==3.3.0 ftfy wcwidth
# No ROS is needed: the node's own tests run on any machine. Each step's log is kept when a
# later step fails.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [WHEELS_DIR]}
mkdir -p "$out"
if [ -n "${2:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/povss_site \
        "$2"/*.whl || exit 1
    export PYTHONPATH=/tmp/povss_site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-42}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" || status=1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
    >>"$out/gpu.txt" 2>&1 || status=1
# The tests with CUDA cases: agreement with the CPU, sync-freedom, compiled vs eager, fusion.
python3 -m pytest -q -p no:cacheprovider test/test_compiled.py \
    test/test_san_architecture.py test/test_personal_fusion.py test/test_engine_runtime.py \
    2>&1 | tee "$out/cuda_tests.log" || status=1
python3 bench/bench_segment.py --device cuda --out "$out/segment.md" \
    >"$out/segment.log" 2>&1 || status=1
python3 bench/bench_teach.py --device cuda 2>&1 | tee "$out/teach.md" || status=1
exit $status
