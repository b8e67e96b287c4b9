"""What each of sercli's CPU measures buys, end to end: `sercli analyze` on the 60-minute
programme as shipped, with each measure undone in turn, and with all of them undone.

    python bench/cpu_profile.py ../shared/data     # prints a markdown table (about 6 minutes)

Each variant is a fresh process that patches sercli before running the command (the shipped
code has no switches for them), best wall time of two runs; CPU time counts ffmpeg too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

UNDO = {
    "freed memory": "freed memory given back to the system (glibc's default)",
    "grouping": "ffmpeg's frames not grouped",
    "sub-batches": "whole batches of 32 through the network",
    "spectrogram sub-batches": "spectrograms of whole batches of 32",
}


def _patch(undo: list[str]) -> None:
    """Runs in the variant's process, before sercli's command line starts."""
    import sercli.audio
    import sercli.features
    import sercli.heap
    import sercli.predict
    import sercli.weights

    if "freed memory" in undo:
        sercli.heap.retain_freed_memory = lambda *args, **kwargs: False
    if "grouping" in undo:
        command = sercli.audio._decode_command

        def ungrouped(*args):
            words = command(*args)
            at = words.index("-af")
            return words[:at] + words[at + 2 :]

        sercli.audio._decode_command = ungrouped
    if "sub-batches" in undo:
        sercli.weights.CPU_SUBBATCH = 32
    if "spectrogram sub-batches" in undo:
        sercli.features.CPU_SUBBATCH = 32


def run_variant(programme: Path, undo: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s of the process and its ffmpeg, peak RSS MB) of one patched analysis."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the command line sets it
    driver = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import cpu_profile; cpu_profile._patch({undo!r}); "
              f"from sercli.cli import main; main(['analyze', {str(programme)!r}, '-q', '-o', {os.devnull!r}])")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", driver])
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"variant {undo} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    args = parser.parse_args()
    from datetime import date

    from run import _programme, decode_only, machine

    programme = _programme(args.data, 60)
    floor = min(decode_only(programme) for _ in range(2))
    print(f"Machine: {machine()}. Date: {date.today().isoformat()}.\n")
    print("`python bench/cpu_profile.py ../shared/data`\n")
    print(f"ffmpeg alone decodes the programme in {floor:.1f} s (best of two).\n")
    print("| `sercli analyze`, 60 min programme | wall (best of 2) | x decode time | CPU time | peak RSS |")
    print("|---|---|---|---|---|")
    variants = [("as shipped", [])] + [(label, [key]) for key, label in UNDO.items()] + [("all undone", list(UNDO))]
    for label, undo in variants:
        wall, cpu, rss = min(run_variant(programme, undo) for _ in range(2))
        print(f"| {label} | {wall:.1f} s | {wall / floor:.1f} | {cpu:.1f} s | {rss:.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
