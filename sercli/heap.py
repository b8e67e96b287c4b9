"""Keeping freed memory in the process, so the large short-lived arrays of each batch do not
cost page faults.

glibc serves an allocation above its mmap threshold (at most 32 MB, adjusted as it goes) with a
fresh mapping and gives it back on free, and trims freed memory at the top of the heap; the
next batch then faults in and zeroes every page again. The spectrograms of a batch of 32
segments take arrays of 60 MB, and the network's of over 100 MB: fed whole batches, the CNN-LSTM
spent a fifth of its CPU time in the kernel doing that (2,800 page faults per segment).
Raising both thresholds above any batch's arrays keeps the pages; `python bench/cpu_profile.py`
measures what it saves end to end, and training steps are about 10% faster.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
RETAIN_BYTES = 1 << 30  # above the arrays of any batch size that fits the default memory budget


def retain_freed_memory(limit: int = RETAIN_BYTES) -> bool:
    """Ask glibc to serve allocations up to `limit` bytes from its heap and to keep up to `limit`
    freed bytes for reuse. Arrays of varying sizes can fragment what is kept, so analysis feeds
    both spectrograms and network 8 segments at a time on the CPU (features.CPU_SUBBATCH; whole
    batches raised peak memory, bench/CPU_PROFILE.md). Set by the commands that run batches
    (commands.common.tune_for_batches), not by the Python API. Returns False where the C
    library is not glibc or refuses the setting."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them: no ldconfig subprocess
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # musl's mallopt does nothing
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))
