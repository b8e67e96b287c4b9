"""Can speech detection, the serial floor of `sercli analyze` on a GPU machine, be spread over
cores? Two ways, measured on the programme's first 15 minutes:

    python bench/vad.py bench/media/programme-60.mp4      # prints two markdown tables

- more onnxruntime threads for Silero VAD (sercli gives it one, two beside a GPU): time and whether the
  probabilities stay the same;
- cutting the file into pieces run side by side: each piece starts Silero from a fresh state a
  little before its first frame; how far its probabilities then are from one pass through the
  whole file (sercli's way), by warm-up length.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    args = parser.parse_args()
    from sercli import segment
    from sercli.audio import SAMPLE_RATE, load_audio

    audio = load_audio(args.path)[: SAMPLE_RATE * 900]
    chunk = SAMPLE_RATE * 30

    def whole(threads: int) -> tuple[float, np.ndarray]:
        vad = segment.SpeechProbabilities(threads)
        started = time.perf_counter()
        parts = [vad.feed(audio[i : i + chunk]) for i in range(0, audio.size, chunk)]
        return time.perf_counter() - started, np.concatenate(parts)

    print(f"| onnxruntime threads | Silero VAD on {audio.size / SAMPLE_RATE / 60:.0f} min | same probabilities |")
    print("|---|---|---|")
    _, reference = whole(1)  # warm-up
    for threads in (1, 2, 4):
        wall, probabilities = whole(threads)
        print(f"| {threads} | {wall:.2f} s | {np.array_equal(probabilities, reference)} |")

    frame = segment.VAD_FRAME
    print("\n| warm-up before the piece | largest change in the piece's first 20 s (4 pieces) |")
    print("|---|---|")
    starts = [int(s * SAMPLE_RATE) // frame * frame for s in (61.3, 150.0, 333.7, 420.2)]
    for warm_s in (0.5, 2, 8, 30):
        warm = int(warm_s * SAMPLE_RATE) // frame * frame
        worst = 0.0
        for start in starts:
            vad = segment.SpeechProbabilities()
            vad._context = audio[start - warm - segment.VAD_CONTEXT : start - warm].copy()
            piece = vad.feed(audio[start - warm : start + SAMPLE_RATE * 20])[warm // frame :]
            worst = max(worst, float(np.abs(piece - reference[start // frame : start // frame + piece.size]).max()))
        print(f"| {warm_s:g} s | {worst:.3f} |")


if __name__ == "__main__":
    main()
