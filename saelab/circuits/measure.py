"""Wall-clock time and peak memory of a block of work.

Peak memory is the process's resident-set high-water mark (Linux VmHWM, reset through
/proc/self/clear_refs) minus the resident set at the start (after freed heap pages are returned to the OS), so
it counts tensors torch allocates outside Python's allocator. Where the reset is unavailable it falls back to
ru_maxrss (then the figure is an upper bound: the process's lifetime peak minus the starting RSS). On CUDA the
allocator's own peak is used.
"""

import ctypes
import gc
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Measurement:
    """Filled in when the `measured()` block exits."""

    seconds: float = 0.0
    peak_memory_mb: float = 0.0


def _status_kb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS first, so that a method reusing them still shows its peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_kb() -> float:
    hwm = _status_kb("VmHWM")
    return hwm if hwm is not None else float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


@contextmanager
def measured(device: str | torch.device = "cpu") -> Iterator[Measurement]:
    """Time the block and record its peak memory in MB: `with measured() as m: ...; m.seconds`."""
    result = Measurement()
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    else:
        _release_free_memory()
        _reset_peak()
        start_kb = _status_kb("VmRSS") or _peak_kb()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        if on_cuda:
            result.peak_memory_mb = (torch.cuda.max_memory_allocated(device) - start_bytes) / 2**20
        else:
            result.peak_memory_mb = max(_peak_kb() - start_kb, 0.0) / 1024
