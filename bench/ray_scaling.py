"""`sercli analyze --ray` throughput with 1 and 2 model actors, and per-file costs for sizing a cluster.

    python bench/ray_scaling.py ../shared/data    # after bench/run.py has built the programme

The 60-minute programme (bench/programme.py) is cut into twelve 5-minute files (stream copy).
Measured: the local mode and `--ray=local` with 1 and 2 model actors on them (wall time, x
realtime), then, in this process on one core, the cost of one file's task (decode, speech
detection, spectrograms) and of the network per hour of programme audio. From those core-seconds
it estimates the throughput of larger CPU nodes: an estimate, not a measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = HERE / "media"


def _split(programme: Path) -> Path:
    from sercli.audio import ffmpeg_binary

    folder = MEDIA / "parts"
    if not folder.is_dir():
        partial = MEDIA / "parts.partial"
        partial.mkdir(exist_ok=True)
        subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-i", str(programme), "-map", "0", "-c", "copy",
                        "-f", "segment", "-segment_time", "300", "-reset_timestamps", "1",
                        str(partial / "part%02d.mp4")], check=True)
        partial.rename(folder)
    return folder


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def per_hour_costs(folder: Path) -> tuple[float, float, float]:
    """(audio seconds of one part, task core-seconds per audio hour, network core-seconds per
    audio hour), all on one thread."""
    import torch

    from sercli.cluster import _featurise
    from sercli.segment import SegmentationConfig
    from sercli.weights import load_model

    torch.set_num_threads(1)
    model = load_model()
    part = str(sorted(folder.glob("*.mp4"))[0])
    started = time.perf_counter()
    meta, spectrograms = _featurise(part, asdict(SegmentationConfig()), asdict(model.features), 0)
    task = time.perf_counter() - started
    torch.set_num_threads(1)
    x, n = torch.from_numpy(spectrograms).float(), torch.tensor(meta["n_frames"])
    started = time.perf_counter()
    for first in range(0, len(x), 32):
        model.posteriors(x[first : first + 32], n[first : first + 32])
    network = time.perf_counter() - started
    hours = meta["duration_s"] / 3600
    return meta["duration_s"], task / hours, network / hours


def main() -> None:
    programme = MEDIA / "programme-60.mp4"
    if not programme.is_file():
        sys.exit(f"{programme}: run bench/run.py ../shared/data --only analyze first")
    folder = _split(programme)
    audio_s = 3600.0
    rows = ["| mode | wall time | speed |", "|---|---|---|"]
    for label, extra in (("local (no Ray)", []), ("`--ray=local --ray-actors 1`", ["--ray=local", "--ray-actors", "1"]),
                         ("`--ray=local --ray-actors 2`", ["--ray=local", "--ray-actors", "2"])):
        wall = _wall(["sercli", "analyze", str(folder), "-o", os.devnull, "-q", *extra])
        rows.append(f"| {label} | {wall:.1f} s | {audio_s / wall:.0f}x |")
        print(rows[-1], file=sys.stderr)
    _, task, network = per_hour_costs(folder)
    rows += ["", f"One core per hour of programme audio: file tasks {task:.1f} s, network (bf16 where the CPU has it) "
             f"{network:.1f} s.", "",
             "| node (estimate) | file tasks + CPU actors | x realtime (= audio hours per hour) |", "|---|---|---|"]
    for cores in (16, 32, 64):
        speed = cores * 3600 / (task + network)
        rows.append(f"| {cores} vCPU, no GPU | all cores | {speed:.0f}x |")
    for cores in (8, 16, 32):
        speed = cores * 3600 / task
        rows.append(f"| {cores} vCPU + 1 GPU (network on the GPU, assumed not the bottleneck) | all cores on tasks "
                    f"| {speed:.0f}x |")
    text = "\n".join([f"Date: {date.today().isoformat()}. `python bench/ray_scaling.py`, 12 files of 5 min.", "",
                      *rows]) + "\n"
    print(text)
    (HERE / "RAY.md").write_text(text)


if __name__ == "__main__":
    main()
