"""A process-wide memory setting: keep freed large blocks for reuse.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB) with fresh pages and unmaps them when
they are freed, so a loop that allocates and frees the same large tensors faults them in again every time and
the kernel zeroes them. The trainer removes the largest such tensors of a TopK step at their source: its
per-SAE workspace holds the (batch, d_sae) pre-activations (200 MB at batch 4096 and 12,288 latents) and the
two (d_sae, d_in) weight gradients, which took a d_in-768 step from ~75,000 faults to ~16,000 (BENCHMARKS.md).
What is left (input-sized loss temporaries, fused Adam's contiguous copy of W_enc, and evaluation's and
caching's own tensors) this setting removes: with mmap off for large blocks and a high trim threshold the heap
keeps freed blocks and the next use takes them. The cost: the process holds on to its peak memory until it
exits, which suits a command-line process and is why every `saelab` command makes this call for its own
process (saelab.cli.main; a script can make it too), not something the library does on import.
"""

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
"""mallopt parameter: free memory at the top of the heap above this many bytes goes back to the OS."""
M_MMAP_MAX = -4
"""mallopt parameter: how many blocks may be served by mmap at once (0: none, so the heap serves them)."""
KEEP_BYTES = 1 << 30
"""The trim threshold set here: up to 1 GiB of freed heap stays with the process."""


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed large blocks for reuse, for the whole process; True if it applied (Linux
    with glibc), False elsewhere (a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    logger.debug("malloc keeps freed large blocks: %s", applied)
    return applied
