"""Build the benchmark's deterministic "programme": speech, pauses and music beds, as a film would.

    python bench/programme.py ../shared/data bench/media/programme-60.mp4 --minutes 60

Scenes follow each other: dialogue (utterances of the shared corpora with 0.2-1.5 s pauses, over a
music bed 12-20 dB below the voices in a third of the scenes), music-only interludes and
silences. About 60% of the time is speech, like a talk-heavy film. The mix is encoded as AAC
(48 kHz stereo, 128 kbit/s) in an mp4 with a small video track (sercli.programmes.encode_mp4, as
`sercli evaluate --programmes` encodes its labelled programmes), so decoding costs what it costs
on a real film. The same data and seed always give the same samples. Nothing of it is ever
committed: the corpora are not ours to redistribute.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from sercli.audio import SAMPLE_RATE, load_audio
from sercli.programmes import encode_mp4

MUSIC = ("music_ambient", "music_pop", "music_rock")


def _speech_pool(data: Path, rng: np.random.Generator, size: int) -> list[np.ndarray]:
    rows = []
    for corpus in ("ravdess", "nemo"):
        with open(data / corpus / "manifest.csv", newline="") as handle:
            rows += [data / corpus / row["path"] for row in csv.DictReader(handle)]
    chosen = rng.choice(len(rows), size=min(size, len(rows)), replace=False)
    return [load_audio(str(rows[i])) for i in sorted(chosen)]


def _music_pool(data: Path) -> list[np.ndarray]:
    pool = []
    for category in MUSIC:
        for path in sorted((data / "noise" / category).glob("*.flac")):
            pool.append(load_audio(str(path)))
    return pool


def _level(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def build(data: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """The programme's 16 kHz mono samples."""
    rng = np.random.default_rng(seed)
    speech, music = _speech_pool(data, rng, 400), _music_pool(data)
    total = int(seconds * SAMPLE_RATE)
    out = np.zeros(total, dtype=np.float32)
    at = 0
    while at < total:
        kind = rng.choice(["dialogue", "music", "silence"], p=[0.75, 0.15, 0.10])
        if kind == "silence":
            at += int(rng.uniform(1.0, 4.0) * SAMPLE_RATE)
            continue
        if kind == "music":
            length = int(rng.uniform(10, 40) * SAMPLE_RATE)
            track = music[rng.integers(len(music))]
            start = int(rng.integers(max(1, len(track) - length)))
            part = np.resize(track[start:], length) * (0.1 / _level(track))  # -20 dBFS RMS
            end = min(total, at + length)
            out[at:end] += part[: end - at]
            at = end
            continue
        scene_start = at
        for _ in range(int(rng.integers(4, 16))):
            voice = speech[rng.integers(len(speech))]
            voice = voice * (0.05 / _level(voice)) * rng.uniform(0.5, 2.0)  # -26 dBFS RMS +-6 dB
            end = min(total, at + len(voice))
            out[at:end] += voice[: end - at]
            at = end + int(rng.uniform(0.2, 1.5) * SAMPLE_RATE)
            if at >= total:
                break
        if rng.random() < 1 / 3:  # a music bed under the whole scene
            track = music[rng.integers(len(music))]
            length = min(total, at) - scene_start
            bed = np.resize(track, length) * (0.05 / _level(track)) * 10 ** (-rng.uniform(12, 20) / 20)
            out[scene_start : scene_start + length] += bed
    return np.clip(out, -1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.data / "ravdess" / "manifest.csv").is_file():
        sys.exit(f"{args.data}: not the shared data folder (no ravdess/manifest.csv)")
    samples = build(args.data, args.minutes * 60, args.seed)
    encode_mp4(samples, args.out)
    print(f"{args.out}: {args.minutes:g} min")


if __name__ == "__main__":
    main()
