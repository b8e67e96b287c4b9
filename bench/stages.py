"""Where `sercli analyze`'s time goes on one long file: the stages of its pipeline run alone, one
after another, in this process, then the command itself end to end in a fresh one.

    python bench/stages.py bench/media/programme-60.mp4              # prints a markdown table
    python bench/stages.py bench/media/programme-60.mp4 --denoise    # options go to the end-to-end run

- decode: sercli's own ffmpeg stream of 16 kHz mono chunks, read and thrown away;
- + voice activity: the same with silero-vad and the segmenter (the pipeline's producer thread);
- + pitch: the same with Praat's pitch tracks as well (the producer's work under `--denoise`);
- end to end: `sercli analyze FILE -o /dev/null -q` (decode, segmentation, spectrograms and
  network overlapping in two threads).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def _producer(path: str, vad: bool, pitch: bool) -> tuple[float, float]:
    """(wall seconds, audio seconds) of the producer side alone, with one speech detection thread
    (as the pipeline runs it beside a model on the CPU)."""
    from sercli.audio import SAMPLE_RATE, stream_audio
    from sercli.features import FeatureConfig, pitch_tracker
    from sercli.segment import SegmentationConfig, SpeechProbabilities, segment_stream

    samples = 0

    def chunks():
        nonlocal samples
        for chunk in stream_audio(path):
            samples += chunk.size
            yield chunk

    started = time.perf_counter()
    if vad:
        tracker = pitch_tracker(FeatureConfig(denoise=True)) if pitch else None
        for _ in segment_stream(chunks(), SegmentationConfig(), SpeechProbabilities(), tracker):
            pass
    else:
        for _ in chunks():
            pass
    return time.perf_counter() - started, samples / SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    args, options = parser.parse_known_args()  # the rest are `sercli analyze` options, e.g. --device cpu
    rows = ["| stage | wall time | x realtime |", "|---|---|---|"]
    audio = 0.0
    for name, vad, pitch in (("decode", False, False), ("+ voice activity, segmentation", True, False),
                             ("+ pitch tracks (`--denoise`)", True, True)):
        wall, audio = _producer(args.path, vad, pitch)
        rows.append(f"| {name} | {wall:.1f} s | {audio / wall:.0f}x |")
        print(rows[-1], file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(["sercli", "analyze", args.path, "-o", os.devnull, "-q", *options], check=True)
    wall = time.perf_counter() - started
    rows.append(f"| end to end{' ' + ' '.join(options) if options else ''} | {wall:.1f} s | {audio / wall:.0f}x |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
