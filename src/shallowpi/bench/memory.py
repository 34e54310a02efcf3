"""Peak memory of one call.

CUDA: torch.cuda.max_memory_allocated. CPU: the kernel's peak resident set (VmHWM in /proc/self/status,
reset before the measured call through /proc/self/clear_refs, after glibc's malloc_trim has returned freed
heap pages; falls back to getrusage's ru_maxrss, which cannot be reset). Reported as "peak" (whole process:
the weights of every loaded model included) and "delta" (peak minus what was resident/allocated just before
the call: the call's working set, activations and caches). On CPU the delta is a lower bound: pages the
allocator kept from earlier calls are reused without raising the RSS.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
from collections.abc import Callable
from pathlib import Path

import torch


def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc malloc_trim), so the RSS before a call excludes memory
    an earlier call freed; otherwise reused free pages hide a call's working set from the peak delta."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    if _status_kb("VmHWM") is not None and _reset_cpu_peak():
        return "VmHWM (/proc/self/status) reset via /proc/self/clear_refs, after glibc malloc_trim"
    return "ru_maxrss (getrusage; process lifetime, not resettable)"


def measure_peak(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Peak memory of one call (MiB): whole-process peak and the increase over what was there before."""
    mib = 2**20
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_mb": peak / mib, "delta_mb": (peak - before) / mib}
    _release_free_heap()
    if _status_kb("VmHWM") is not None and _reset_cpu_peak():
        before = _status_kb("VmRSS") or 0
        fn()
        peak = _status_kb("VmHWM") or 0
        return {"peak_mb": peak / 1024, "delta_mb": max(peak - before, 0) / 1024}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_mb": peak / 1024, "delta_mb": max(peak - before, 0) / 1024}
