"""The execution settings of a process: device, precision, threads, memory format.

``precision: auto`` is bf16 autocast wherever the hardware computes bf16 natively (CUDA
GPUs, and CPUs with AVX-512 BF16 or AMX: on the 2-core EPYC of this project a ResNet-18
training step runs 2x faster than in fp32, and a full-protocol ResNet-18 reaches the same
test AUROC; see ``leaderboards/perf.md``), fp32 elsewhere; ``fp32`` is one flag away.
Convolutional models run in channels-last memory format (NHWC: the layout oneDNN's and
cuDNN's fastest convolutions use). The CPU thread count follows ``OMP_NUM_THREADS`` when
it is set, else the cores this process may run on (its affinity mask, not the machine's
core count). All of it is recorded in every record's provenance (``execution``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 matmuls in hardware (AVX-512 BF16 or AMX)."""
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            flags = _cpu_flags()
            return not flags or bool(flags & {"avx512_bf16", "amx_bf16"})
    except (AttributeError, RuntimeError):
        pass
    return False


def _cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


# the instruction sets that decide which kernels (and so which roundings) bf16 and fp32 use
NUMERIC_ISA = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def cpu_identity() -> dict:
    """Which CPU computed: a bf16 run on another microarchitecture (another ISA, so other
    oneDNN kernels) can differ in the last digits, so records name it."""
    info = _cpuinfo()
    ids = ("vendor_id", "cpu family", "model", "stepping")
    return {
        "cpu_model": f"{info.get('model name', 'unknown')} ("
        + ", ".join(f"{k} {info[k]}" for k in ids if k in info)
        + ")",
        "cpu_isa": [f for f in NUMERIC_ISA if f in _cpu_flags()],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def resolve_precision(precision: str, use_cpu: bool) -> str:
    if precision not in PRECISIONS:
        from bench.api.errors import BenchError

        raise BenchError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if not use_cpu:
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def allowed_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads() -> int:
    """Set torch's intra-op threads from ``OMP_NUM_THREADS`` or the allowed cores; the
    `bench` command calls it once at start (a library caller keeps its own setting)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(env) if env.isdigit() and int(env) > 0 else allowed_cores()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def make_accelerator(precision: str = "auto", cpu: bool = False):
    """An Accelerator with the resolved precision (bf16 autocast or none)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    use_cpu = cpu or not torch.cuda.is_available()
    precision = resolve_precision(precision, use_cpu)
    mixed = "bf16" if precision == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed):
        # accelerate keeps one precision per process; a library caller (a notebook, the
        # tests) may ask for another one later: start its state afresh, the process
        # group (multi-process runs) kept
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=use_cpu, mixed_precision=mixed), precision


def sync_device(device) -> None:
    """Wait for queued GPU work (timing); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def has_convolutions(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Convolutional modules in NHWC; the layout of their inputs follows their weights."""
    if has_convolutions(module):
        module.to(memory_format=torch.channels_last)
    return module


class StridedConv2d(torch.nn.Conv2d):
    """A strided Conv2d that computes in fp32 where oneDNN's bf16 kernel fails: under CPU
    bf16 autocast, the weight gradient of a strided convolution whose input is 1 pixel
    high or wide reads uninitialised memory on AVX-512 CPUs (NaN in some runs: a 3x3 / 2
    conv on a 1 x 1 input, 59 of 60 tries; on 2 x 2 or larger, none; torch 2.4 to 2.14).
    A ResNet's last stage meets such inputs at 16 px (the smoke and perf shapes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and min(x.shape[-2:]) == 1 and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def guard_strided_convs(module: torch.nn.Module) -> torch.nn.Module:
    """Every plain strided Conv2d of `module` becomes a `StridedConv2d` (same weights,
    same state dict; the class is swapped in place, so copies, EMA ones included, keep it)."""
    for m in module.modules():
        if type(m) is torch.nn.Conv2d and max(m.stride) > 1:
            m.__class__ = StridedConv2d
    return module


def execution_settings(precision: str) -> dict:
    """What a record says about how the numbers were computed (besides the device)."""
    return {
        "precision": precision,
        "autocast": "bf16" if precision == "bf16" else None,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "allowed_cores": allowed_cores(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        **cpu_identity(),
        "memory_format": "channels_last for convolutional models",
    }
