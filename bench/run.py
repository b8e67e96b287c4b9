"""sercli's benchmark suite: speed and memory of `sercli analyze` against the decoding floor.

    python bench/run.py ../shared/data                 # everything, writes bench/RESULTS.md
    python bench/run.py ../shared/data --only analyze  # one part: analyze, clips, long, peers

A full run writes bench/RESULTS.md; a run of some parts (--only) prints its rows and leaves
that file's other rows alone, unless --out names a file to write them to.

What it measures, each in a fresh process on the machine it runs on:
- analyze: `sercli analyze` on the 60-minute programme (bench/programme.py: AAC in an mp4 with
  video), the default, --denoise, the networks alone and --segmentation fixed: wall time, x realtime, peak RSS (best of
  two runs); and the time ffmpeg alone takes to decode and resample the same file (sercli's exact
  decode command, output discarded, best of two), with the ratio of the two.
- clips: 500 short real clips (shared corpus files) in one call: files per second.
- long: the programme three times over (180 min): peak RSS must not grow with length.
- peers: forward time on the same 3 s segments of our network against a wav2vec2-base-sized
  network (the backbone of the SpeechBrain and emotion2vec emotion models; random weights, from
  the `transformers` package), on the CPU and, where there is one, on a CUDA GPU; there also
  our features and network on 1,024 segments in batches of 256 (the GPU's throughput).

Media is built under bench/media/ (ignored by git) and reused while it exists.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDIA = HERE / "media"


def _run(command: list[str], **kwargs) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a command, which must succeed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}")
    return wall, usage.ru_maxrss / 1024


def _duration(path: Path) -> float:
    from sercli.audio import SAMPLE_RATE, stream_audio

    return sum(chunk.size for chunk in stream_audio(str(path))) / SAMPLE_RATE


def _programme(data: Path, minutes: int) -> Path:
    target = MEDIA / f"programme-{minutes}.mp4"
    if not target.is_file():
        print(f"building {target} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "programme.py"), str(data), str(target), "--minutes", str(minutes)],
                       check=True)
    return target


def _three_times(programme: Path) -> Path:
    from sercli.audio import ffmpeg_binary

    target = MEDIA / "programme-180.mp4"
    if not target.is_file():
        listing = MEDIA / "concat.txt"
        listing.write_text("".join(f"file '{programme.name}'\n" for _ in range(3)))
        partial = MEDIA / "programme-180.part.mp4"
        subprocess.run([ffmpeg_binary(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c", "copy", str(partial)], check=True)
        partial.replace(target)
    return target


def decode_only(path: Path) -> float:
    """Seconds for ffmpeg to decode and resample `path` exactly as sercli asks it to."""
    from sercli.audio import _decode_command

    wall, _ = _run(_decode_command(str(path), 0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wall


def analyze(inputs: list[str], *options: str, stdin: str | None = None) -> tuple[float, float]:
    command = ["sercli", "analyze", *inputs, "-o", os.devnull, "-q", *options]
    if stdin is None:
        return _run(command)
    with open(stdin) as handle:
        return _run(command, stdin=handle)


def bench_analyze(data: Path, rows: list[str]) -> None:
    programme = _programme(data, 60)
    seconds = _duration(programme)
    floor = min(decode_only(programme) for _ in range(2))
    rows.append(f"| ffmpeg decode + resample only | 60 min programme | {floor:.1f} s | {seconds / floor:.0f}x | | 1.0 |")
    runs = {"`sercli analyze` (default: egemaps-mlp|egemaps-mlp-voices, routed)": [],
            "`-m egemaps-mlp` (the clips model alone, the default until 2026-12-03)": ["-m", "egemaps-mlp"],
            "`--denoise` (the two networks)": ["--denoise"],
            "`-m cnn-lstm-10hz-denoise` (the noise-filtered network, the default until 2026-12-02)":
                ["-m", "cnn-lstm-10hz-denoise"],
            "`-m cnn-lstm-10hz` (the plain network: no pitch tracks)": ["-m", "cnn-lstm-10hz"],
            "`--segmentation fixed`": ["--segmentation", "fixed"],
            "`-m cnn-lstm-10hz-denoise+egemaps-mlp` (network and default averaged)":
                ["-m", "cnn-lstm-10hz-denoise+egemaps-mlp"]}
    for name, options in runs.items():
        # Best of two, as for the decode time: this machine's speed varies by about 10% run to run.
        wall, rss = min(analyze([str(programme)], *options) for _ in range(2))
        rows.append(f"| {name} | 60 min programme | {wall:.1f} s | {seconds / wall:.0f}x | {rss:.0f} MB | "
                    f"{wall / floor:.1f} |")


def bench_clips(data: Path, rows: list[str]) -> None:
    with open(data / "nemo" / "manifest.csv", newline="") as handle:
        paths = [str(data / "nemo" / row["path"]) for row in csv.DictReader(handle)][:500]
    listing = MEDIA / "clips.txt"
    listing.write_text("\n".join(paths) + "\n")
    seconds = sum(_duration(Path(p)) for p in paths)
    for name, options in {"500 short clips, one call (default: egemaps-mlp|egemaps-mlp-voices)": [],
                          "the same with `-m egemaps-mlp`": ["-m", "egemaps-mlp"],
                          "the same with `-m cnn-lstm-10hz-denoise`": ["-m", "cnn-lstm-10hz-denoise"],
                          "the same with `-m cnn-lstm-10hz-denoise+egemaps-mlp`":
                              ["-m", "cnn-lstm-10hz-denoise+egemaps-mlp"]}.items():
        wall, rss = analyze(["-"], *options, stdin=str(listing))
        rows.append(f"| {name} | {seconds / 60:.0f} min in {len(paths)} files | {wall:.1f} s | "
                    f"{seconds / wall:.0f}x, {len(paths) / wall:.0f} files/s | {rss:.0f} MB | |")


def bench_long(data: Path, rows: list[str]) -> None:
    hour = _programme(data, 60)
    three = _three_times(hour)
    for path, label in ((hour, "60 min"), (three, "180 min")):
        wall, rss = analyze([str(path)])
        rows.append(f"| peak memory by length | {label} | {wall:.1f} s | {_duration(path) / wall:.0f}x | "
                    f"{rss:.0f} MB | |")


def bench_peers(data: Path, rows: list[str]) -> None:
    """Our features and network against a wav2vec2-base-sized network (when `transformers` is
    installed) on the same 32 segments, on the CPU and on CUDA where there is one; on CUDA also
    our throughput on 1,024 segments in batches of 256, as a GPU is fed when it analyses a film."""
    import numpy as np
    import torch

    from sercli.audio import load_audio
    from sercli.features import log_spectrograms
    from sercli.weights import load_model

    try:
        from transformers import Wav2Vec2Config, Wav2Vec2Model
    except ImportError:
        Wav2Vec2Model = None
        rows.append("| peers | skipped: `pip install transformers` to compare with wav2vec2-base | | | | |")
    audio = load_audio(str(_programme(data, 60)))
    many = [audio[i : i + 48000] for i in range(0, 1024 * 48000, 48000)]  # 1,024 segments of 3 s
    segments = many[:32]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        ours = load_model(device=device)

        def timed(function, repeats: int = 3) -> float:
            function()  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(repeats):
                function()
            if device == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - started) / repeats

        def run_ours(batch: list, size: int = 32):
            for first in range(0, len(batch), size):
                part = batch[first : first + size]
                ours.posteriors(log_spectrograms(part, ours.features, device),
                                torch.full((len(part),), ours.features.n_frames))

        where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {ours.precision}"
        each = timed(lambda: run_ours(segments))
        rows.append(f"| sercli CNN-LSTM (features + network) | 32 segments of 3 s, {where} | "
                    f"{1000 * each / len(segments):.1f} ms/segment | {3 * len(segments) / each:.0f}x | | |")
        if device == "cuda":
            each = timed(lambda: run_ours(many, 256))
            rows.append(f"| sercli CNN-LSTM (features + network) | {len(many)} segments of 3 s in batches of 256, "
                        f"{where} | {1000 * each / len(many):.2f} ms/segment | {3 * len(many) / each:.0f}x | | |")
        if Wav2Vec2Model is None:
            continue
        peer = Wav2Vec2Model(Wav2Vec2Config()).eval().to(device)  # wav2vec2-base: 12 layers, 768 wide, 95 M
        waveforms = torch.from_numpy(np.stack(segments)).to(device)

        @torch.inference_mode()
        def run_peer():
            with torch.autocast(device, dtype=torch.bfloat16, enabled=ours.precision == "bf16"):
                return peer(waveforms).last_hidden_state

        each = timed(run_peer)
        rows.append(f"| wav2vec2-base (network only) | 32 segments of 3 s, {where} | "
                    f"{1000 * each / len(segments):.1f} ms/segment | {3 * len(segments) / each:.0f}x | | |")


PARTS = {"analyze": bench_analyze, "clips": bench_clips, "long": bench_long, "peers": bench_peers}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB{gpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("--only", choices=sorted(PARTS), action="append")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the table here [default: bench/RESULTS.md for a full run, nowhere with --only]")
    args = parser.parse_args()
    import torch

    import sercli

    MEDIA.mkdir(exist_ok=True)
    rows = ["| what | input | wall time | speed | peak RSS | x decode time |", "|---|---|---|---|---|---|"]
    for name in args.only or PARTS:
        print(f"{name} ...", file=sys.stderr)
        PARTS[name](args.data, rows)
        print(rows[-1], file=sys.stderr)
    text = "\n".join([f"Machine: {machine()}. Date: {date.today().isoformat()}. sercli {sercli.__version__}, "
                      f"torch {torch.__version__}, Python {platform.python_version()}.", "",
                      f"`python bench/run.py ../shared/data{''.join(f' --only {o}' for o in args.only or [])}`", "",
                      *rows]) + "\n"
    print(text)
    out = args.out or (None if args.only else HERE / "RESULTS.md")
    if out:
        out.write_text(text)


if __name__ == "__main__":
    main()
