"""precision auto: the fastest arithmetic the device really has, decided once at start-up.

The decision is a pure function of facts (CPU flags, torch's CPU capability, a CUDA compute
capability), tested here with the facts of machines we cannot run on; the real machine's
decision is checked against a matmul measured on it. These tests pass on CPUs with and
without native bf16: what they assert about this machine follows from what it measures.
"""

import dataclasses
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from povss_lab.training.recipe import TRAIN_PRECISIONS, TrainOptions, resolve_precision
from povss_lab.training.train import build_parser as train_parser
from povss_ros.cli import build_parser
from povss_ros.options import check, user_fields
from povss_ros.perception import build_engine
from povss_ros.precision import (
    EMULATED_BELOW,
    DeviceFacts,
    auto_precision,
    choose,
    cpu_flags,
    emulation_warning,
    is_emulated,
    matmul_ratio,
    parse_cpu_flags,
)
from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter, SegmenterError
from povss_ros.settings import EngineSettings

CPU = torch.device("cpu")
# /proc/cpuinfo excerpts: an AVX2-only EPYC (Zen 2), an AVX512 Xeon without BF16 (Skylake),
# an AVX512-BF16 EPYC (Zen 4), a Sapphire Rapids Xeon (AMX), a Graviton3 and a Jetson Orin CPU.
ZEN2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2 sha_ni\nbogomips\t: 4491\n"
SKYLAKE = "flags\t\t: fpu avx avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni\n"
ZEN4 = "flags\t\t: avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: avx2 avx512f avx512_fp16 amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve i8mm bf16 dcpop\n"
ORIN_CPU = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def cpu(cpuinfo: str, capability: str) -> DeviceFacts:
    return DeviceFacts("cpu", parse_cpu_flags(cpuinfo), capability)


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo():
    assert {"avx2", "sha_ni"} <= parse_cpu_flags(ZEN2) and "4491" not in parse_cpu_flags(ZEN2)
    assert {"bf16", "sve"} <= parse_cpu_flags(GRAVITON3)
    assert parse_cpu_flags("processor\t: 0\nmodel name\t: x\n") == frozenset()


@pytest.mark.parametrize("cpuinfo, capability, expected", [
    (ZEN2, "AVX2", "fp32"),  # the machine: bf16 ran at 1 GFLOP/s against 106 for fp32
    (SKYLAKE, "AVX512", "fp32"),  # torch's capability alone says nothing about bf16
    (ZEN4, "AVX512", "bf16"),
    (SAPPHIRE, "AVX512", "bf16"),
    (GRAVITON3, "SVE256", "bf16"),
    (ORIN_CPU, "DEFAULT", "fp32"),
    ("", "", "fp32"),  # nothing known: the safe choice
])
def test_the_cpu_gets_bf16_only_where_it_reports_native_bf16(cpuinfo, capability, expected):
    choice = choose(cpu(cpuinfo, capability))
    assert choice.precision == expected
    assert capability in choice.reason


@pytest.mark.parametrize("capability, expected", [
    ((8, 7), "bf16"),  # Jetson Orin (Ampere)
    ((8, 0), "bf16"),
    ((9, 0), "bf16"),
    ((7, 2), "fp16"),  # Jetson Xavier (Volta): no bf16
    ((7, 5), "fp16"),
    (None, "fp16"),
])
def test_cuda_gets_bf16_from_compute_capability_8_else_fp16(capability, expected):
    choice = choose(DeviceFacts("cuda", cuda_capability=capability))
    assert choice.precision == expected
    assert (f"{capability[0]}.{capability[1]}" if capability else "unknown") in choice.reason


def test_an_unknown_device_keeps_fp32():
    assert choose(DeviceFacts("mps", parse_cpu_flags(ZEN4), "AVX512")).precision == "fp32"


def test_this_machines_decision_agrees_with_its_measured_matmuls():
    """auto picks bf16 only where a bf16 matmul is not emulated, and never leaves a clearly
    faster bf16 unused."""
    ratio = matmul_ratio(CPU, torch.bfloat16)
    chosen = auto_precision(CPU).precision
    if chosen == "bf16":
        assert not is_emulated(ratio), ratio
    if ratio > 1.5:
        assert chosen == "bf16", ratio
    assert matmul_ratio(CPU, torch.bfloat16) == ratio  # measured once per process


def test_auto_resolves_at_construction_and_runs_in_that_precision(caplog):
    model = build_san(TINY, seed=0)
    seen: list[torch.dtype] = []
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    first_linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    with caplog.at_level(logging.INFO, logger="povss_ros.segmenter"):
        seg = Segmenter(model, "cat,wall", "cpu", precision="auto", random_weights=True)
    expected = auto_precision(CPU)
    assert seg.precision == expected.precision
    assert seg.precision_reason == f"auto: {expected.reason}"
    assert any("precision auto" in r.message and expected.precision in r.message
               for r in caplog.records)
    seen.clear()
    seg.segment(np.zeros((48, 64, 3), np.uint8))
    assert seen and seen[0] == (torch.bfloat16 if seg.precision == "bf16" else torch.float32)


def test_the_engine_defaults_to_auto_and_describes_the_decision(tmp_path):
    settings = EngineSettings(variant="tiny", device="cpu", allow_random_weights=True,
                              vocabulary=["cat"], text_cache_dir="",
                              concept_store=str(tmp_path / "store"))
    assert EngineSettings().precision == "auto"
    engine = build_engine(settings)
    assert engine.segmenter.precision == auto_precision(CPU).precision
    assert f"({engine.segmenter.precision}, RANDOM weights)" in engine.describe()


def test_an_explicit_emulated_precision_runs_with_one_warning_naming_the_slowdown(caplog):
    emulated = is_emulated(matmul_ratio(CPU, torch.bfloat16))
    with caplog.at_level(logging.WARNING, logger="povss_ros.segmenter"):
        seg = Segmenter(build_san(TINY, seed=0), "cat", "cpu", precision="bf16")
    assert seg.precision == "bf16"  # runs as asked either way
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    if emulated:
        assert len(warnings) == 1, warnings
        assert "emulated" in warnings[0].message and "slower than fp32" in warnings[0].message
        assert seg.precision_reason == "requested (emulated here)"
    else:
        assert warnings == []
        assert seg.precision_reason == "requested"


def test_the_probe_names_an_emulated_precision():
    """fp16 matmuls on an x86 CPU without AVX512-FP16/AMX-FP16 are emulated (torch's
    reference kernel): the probe sees it and the warning names the factor. The segmenter
    refuses fp16 on a CPU, but the probe is the same one."""
    if not _linux_x86() or cpu_flags() & {"avx512_fp16", "amx_fp16"}:
        pytest.skip("needs a Linux x86 CPU without native fp16")
    ratio = matmul_ratio(CPU, torch.float16)
    assert ratio < EMULATED_BELOW
    warning = emulation_warning("fp16", CPU)
    assert f"{1 / ratio:.0f}x slower than fp32" in warning
    assert emulation_warning("fp32", CPU) is None


def _linux_x86() -> bool:
    import platform

    return platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")


def test_unknown_precisions_are_refused_everywhere():
    with pytest.raises(SegmenterError, match="auto"):
        Segmenter(build_san(TINY, seed=0), "cat", "cpu", precision="fp64")
    with pytest.raises(SegmenterError, match="fp16 needs a CUDA"):
        Segmenter(build_san(TINY, seed=0), "cat", "cpu", precision="fp16")
    field = next(f for f in user_fields(EngineSettings) if f.name == "precision")
    assert check(field, "auto") is None and check(field, "bf16") is None
    assert "fp64" in check(field, "fp64")


def test_the_cli_defaults_to_auto_and_refuses_fp64(capsys):
    parser = build_parser()
    args = parser.parse_args(["segment", "x.png", "--random-weights"])
    assert args.precision == "auto"
    assert parser.parse_args(["segment", "x.png", "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "x.png", "--precision", "fp64"])
    assert "fp64" in capsys.readouterr().err


def test_training_decides_its_forward_precision_the_same_way():
    assert TrainOptions().precision == "auto" and train_parser().parse_args([]).precision == "auto"
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--precision", "fp16"])  # would need a gradient scaler
    opts, line = resolve_precision(TrainOptions(), "cpu")
    assert opts.precision == auto_precision(CPU).precision
    assert opts.precision in TRAIN_PRECISIONS
    assert line.startswith(f"forward precision {opts.precision} (auto: ")
    explicit, line = resolve_precision(replace(TrainOptions(), precision="fp32"), "cpu")
    assert explicit.precision == "fp32" and line == "forward precision fp32 (requested)"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision(replace(TrainOptions(), precision="fp16"), "cpu")
    assert dataclasses.asdict(opts) == {**dataclasses.asdict(TrainOptions()),
                                        "precision": opts.precision}
