"""Which arithmetic SAN's forward runs in: the fastest precision the device really has.

bf16 is fast only where the hardware does it: a CPU without native bf16 emulates it about a
hundred times slower than fp32 (an AVX2-only EPYC), and a Volta GPU (Jetson Xavier) has no bf16
while an Ampere one (Orin) has. `choose` decides "auto" from facts about the device (a pure
function; `device_facts` reads them from this machine), once at start-up. An explicit request
is honoured, but `emulation_warning` times a short matmul against fp32 (`matmul_ratio`,
a few ms, cached per process) and names the slowdown when the device only emulates it.

The segmenter, the training recipe and the benchmarks all decide here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch

AUTO = "auto"
# precision name -> autocast dtype (None: plain fp32, no autocast)
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
CHOICES = (AUTO, *PRECISIONS)
# CPU feature flags (/proc/cpuinfo) that mean bf16 matmuls in hardware: x86's AVX512-BF16 and
# AMX-BF16, ARM's BF16 extension ("Features" line).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# CUDA compute capability from which the GPU has bf16 (Ampere; Volta/Turing only emulate it).
CUDA_BF16_CAPABILITY = (8, 0)
# A precision whose matmul runs at under this share of fp32's throughput is emulated.
EMULATED_BELOW = 0.25
# The probe's square matmul size: large enough that native bf16 beats fp32 on a CPU, small
# enough that an emulated one costs a few ms.
PROBE_SIZE = {"cpu": 128, "cuda": 512}


@dataclass(frozen=True)
class DeviceFacts:
    """What the decision needs to know about a device (all of it injectable in tests)."""

    device_type: str  # "cpu", "cuda", ...
    cpu_flags: frozenset[str] = frozenset()
    cpu_capability: str = ""  # torch.backends.cpu.get_cpu_capability(), e.g. "AVX512"
    cuda_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Choice:
    """A decided precision and why, in words (what the node logs)."""

    precision: str
    reason: str


def choose(facts: DeviceFacts) -> Choice:
    """The fastest precision `facts` say the device supports natively.

    CUDA: bf16 from compute capability 8.0, else fp16. CPU: bf16 where the CPU reports a native
    bf16 flag (torch's capability string, e.g. "AVX512", is not enough: AVX512 CPUs without
    the BF16 extension emulate it), else fp32. Any other device: fp32."""
    if facts.device_type == "cuda":
        cap = facts.cuda_capability
        shown = "unknown" if cap is None else f"{cap[0]}.{cap[1]}"
        if cap is not None and tuple(cap) >= CUDA_BF16_CAPABILITY:
            return Choice("bf16", f"CUDA compute capability {shown} has bf16")
        return Choice("fp16", f"CUDA compute capability {shown} has no bf16 (it needs 8.0)")
    if facts.device_type == "cpu":
        capability = f"torch CPU capability {facts.cpu_capability or 'unknown'}"
        native = sorted(NATIVE_BF16_FLAGS & facts.cpu_flags)
        if native:
            return Choice("bf16", f"the CPU has native bf16 ({', '.join(native)}; {capability})")
        return Choice("fp32", "the CPU has no native bf16 (no avx512_bf16, amx_bf16 or bf16 "
                      f"flag; {capability}), so bf16 would be emulated")
    return Choice("fp32", f"no reduced precision is known to be native on {facts.device_type}")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in /proc/cpuinfo text ("flags" on x86,
    "Features" on ARM); empty when there are none."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (empty where /proc/cpuinfo cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpu_flags(f.read())
    except OSError:
        return frozenset()


def device_facts(device: torch.device) -> DeviceFacts:
    """The facts `choose` needs, read from this machine for `device`."""
    if device.type == "cuda":
        return DeviceFacts("cuda", cuda_capability=tuple(torch.cuda.get_device_capability(device)))
    if device.type == "cpu":
        return DeviceFacts("cpu", cpu_flags(), torch.backends.cpu.get_cpu_capability())
    return DeviceFacts(device.type)


def auto_precision(device: torch.device) -> Choice:
    """What "auto" means on `device` of this machine."""
    return choose(device_facts(device))


def _matmul_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Best wall time of `a @ b` after one warm-up (kernel selection, allocation)."""
    sync = torch.cuda.synchronize if a.device.type == "cuda" else (lambda *_: None)
    a @ b
    sync(a.device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(a.device)
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)


@functools.cache
def _ratio(device: str, dtype: torch.dtype, repeats: int) -> float:
    dev = torch.device(device)
    n = PROBE_SIZE.get(dev.type, 128)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dev) for _ in range(2))
    fp32 = _matmul_seconds(a, b, repeats)
    return fp32 / _matmul_seconds(a.to(dtype), b.to(dtype), repeats)


def matmul_ratio(device: torch.device | str, dtype: torch.dtype, repeats: int = 5) -> float:
    """Throughput of a short square matmul in `dtype` over fp32's on `device` (1.0: as fast;
    below `EMULATED_BELOW`: emulated). Measured once per process and device."""
    return _ratio(str(torch.device(device)), dtype, repeats)


def is_emulated(ratio: float) -> bool:
    """Whether a `matmul_ratio` says the precision is emulated."""
    return ratio < EMULATED_BELOW


def emulation_warning(precision: str, device: torch.device) -> str | None:
    """For an explicitly requested precision: the warning naming its measured slowdown when
    `device` only emulates it, else None (fp32 is never emulated)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    ratio = matmul_ratio(device, dtype)
    if not is_emulated(ratio):
        return None
    return (f"precision {precision} is emulated on this {device.type}: a matmul runs "
            f"{1 / ratio:.0f}x slower than fp32 (a {PROBE_SIZE.get(device.type, 128)}x"
            f"{PROBE_SIZE.get(device.type, 128)} probe); running anyway, but precision auto "
            f"would choose {auto_precision(device).precision}")
