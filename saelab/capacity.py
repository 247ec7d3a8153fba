"""Checks that the machine can hold what a step is about to allocate or write, made before it starts, so that
a width or a cache too large for memory or disk is a one-line error with the estimate instead of a crash."""

import os
import shutil
from pathlib import Path

from saelab.errors import SaelabError

MiB = 2**20
GiB = 2**30


class CapacityError(SaelabError):
    """Not enough memory or disk for a step; the message gives the estimate and what is available."""


def available_memory_bytes() -> int:
    """Memory this process can still allocate: MemAvailable of /proc/meminfo, else free physical pages."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def require_memory(needed_bytes: int, what: str) -> None:
    """Refuse, naming the estimate, when `needed_bytes` exceeds the memory available now."""
    available = available_memory_bytes()
    if needed_bytes > available:
        raise CapacityError(f"{what} needs about {needed_bytes / GiB:,.1f} GiB of memory, "
                            f"{available / GiB:,.1f} GiB is available; choose a smaller size")


def require_disk(directory: Path, needed_bytes: int, what: str) -> None:
    """Refuse, naming the sizes and the place, when `directory`'s filesystem has less than `needed_bytes`
    free."""
    free = shutil.disk_usage(directory).free
    if needed_bytes > free:
        raise CapacityError(no_space_message(directory, needed_bytes, free, what))


def no_space_message(directory: Path, needed_bytes: int, free_bytes: int, what: str) -> str:
    return (f"no space for {what}: needs {needed_bytes / MiB:,.1f} MiB, {free_bytes / MiB:,.1f} MiB free in "
            f"{directory}; free some space or cache fewer tokens")
