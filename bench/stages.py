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


def _producer(path: str, vad: bool, pitch: bool) -> tuple[float, float, int]:
    """(wall seconds, audio seconds, segments) of the producer side alone."""
    from sercli.audio import SAMPLE_RATE, stream_audio
    from sercli.segment import SegmentationConfig, Segmenter, SpeechProbabilities

    tracker = None
    if pitch:
        from sercli.denoise import pitch_track

        tracker = pitch_track
    started = time.perf_counter()
    samples = segments = 0
    segmenter = Segmenter(SegmentationConfig(), SpeechProbabilities(), tracker) if vad else None
    for chunk in stream_audio(path):
        samples += chunk.size
        if segmenter is not None:
            segments += len(segmenter.feed(chunk))
    if segmenter is not None:
        segments += len(segmenter.finish())
    return time.perf_counter() - started, samples / SAMPLE_RATE, segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    args, options = parser.parse_known_args()  # the rest are `sercli analyze` options, e.g. --device cpu
    rows = ["| stage | wall time | x realtime |", "|---|---|---|"]
    audio = 0.0
    for name, vad, pitch in (("decode", False, False), ("+ voice activity, segmentation", True, False),
                             ("+ pitch tracks (`--denoise`)", True, True)):
        wall, audio, segments = _producer(args.path, vad, pitch)
        rows.append(f"| {name} | {wall:.1f} s | {audio / wall:.0f}x |")
        print(rows[-1], file=sys.stderr)
    started = time.perf_counter()
    subprocess.run(["sercli", "analyze", args.path, "-o", os.devnull, "-q", *options], check=True)
    wall = time.perf_counter() - started
    rows.append(f"| end to end{' ' + ' '.join(options) if options else ''} | {wall:.1f} s | {audio / wall:.0f}x |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
