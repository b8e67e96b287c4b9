"""glibc's heap through a `sercli analyze` run: resident memory, the heap's size, the memory in
use in it and the free memory it keeps, sampled each second (`mallinfo2`).

    python bench/heap_profile.py bench/media/programme-180.mp4   # after bench/run.py built it

Memory in use that grows with the input's length is a leak; free memory that grows while use
stays level is fragmentation (how the growth fixed by computing spectrograms a few segments at a time was found).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import threading
import time


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("media", help="a file to analyse")
    parser.add_argument("--every", type=float, default=6.0, help="seconds between printed rows")
    args = parser.parse_args()
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        raise SystemExit("needs glibc 2.33 or later (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    page = os.sysconf("SC_PAGE_SIZE")
    rows: list[tuple[float, ...]] = []
    started = time.perf_counter()

    def sample() -> None:
        while True:
            info = libc.mallinfo2()
            with open("/proc/self/statm") as statm:
                resident = int(statm.read().split()[1]) * page
            rows.append((time.perf_counter() - started, resident, info.arena + info.hblkhd, info.uordblks + info.hblkhd,
                         info.fordblks))
            time.sleep(1.0)

    threading.Thread(target=sample, daemon=True).start()
    from sercli.cli import main as sercli

    try:
        sercli(["analyze", args.media, "-q", "-o", os.devnull])
    except SystemExit as exc:
        if exc.code:
            raise
    mb = 1 << 20
    print("| seconds | resident MB | heap MB | in use MB | free in heap MB |")
    print("|---|---|---|---|---|")
    shown = -args.every
    for seconds, resident, heap, used, free in rows:
        if seconds - shown >= args.every:
            print(f"| {seconds:.0f} | {resident / mb:.0f} | {heap / mb:.0f} | {used / mb:.0f} | {free / mb:.0f} |")
            shown = seconds
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\nresident at most {max(r[1] for r in rows) / mb:.0f} MB in the samples, {peak / mb:.0f} MB at its peak")


if __name__ == "__main__":
    main()
