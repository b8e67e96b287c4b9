"""Measure where the recording noise floor lies relative to the speech level, per corpus.

This is the measurement behind FeatureConfig.e_noise_db. For a random sample of utterances
of each shared corpus it computes the power spectrogram (10 Hz grid, 40 ms window, 0-4 kHz),
takes the dB of every bin relative to the utterance's speech level (the 95th percentile of its
frame powers, exactly as sercli.features does), and splits the frames into speech and
non-speech with Silero VAD. It prints percentiles of both distributions and, for candidate
floors, the share of speech bins and of non-speech bins that stay above the floor.

    python train/measure_noise_floor.py ../shared/data --per-corpus 200
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np
import torch

from sercli.audio import load_audio
from sercli.features import FeatureConfig, LOG_EPS, power_spectrogram
from sercli.segment import VAD_FRAME, SpeechProbabilities


def utterance_db(samples: np.ndarray, config: FeatureConfig, vad: SpeechProbabilities):
    n_frames = -(-len(samples) // config.hop_length)
    cfg = FeatureConfig(n_frames=n_frames, grid_hz=config.grid_hz, window_ms=config.window_ms)
    power = power_spectrogram(torch.from_numpy(samples)[None], cfg)[0].numpy()  # (F, T)
    frame_db = 10 * np.log10(power.sum(axis=0) + LOG_EPS)
    level = np.percentile(frame_db, 95, method="lower")
    rel = 10 * np.log10(power + LOG_EPS) - level
    vad.reset()
    probs = vad.feed(samples, final=True)
    frame_centres = np.arange(n_frames) * config.hop_length
    speech = probs[np.minimum(frame_centres // VAD_FRAME, len(probs) - 1)] >= 0.5
    return rel, speech, level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--per-corpus", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = FeatureConfig()
    vad = SpeechProbabilities()
    candidates = [-50, -55, -60, -65, -70, -75, -80]
    print("| corpus | files | speech level dB (median) | non-speech bins p50 / p90 dB | speech bins p10 / p50 dB | "
          + " | ".join(f"speech/non-speech above {c}" for c in candidates) + " |")
    print("|" + "---|" * (5 + len(candidates)))
    for corpus in ("ravdess", "nemo"):
        rows = list(csv.DictReader(open(args.data / corpus / "manifest.csv")))
        random.Random(args.seed).shuffle(rows)
        speech_bins, noise_bins, levels = [], [], []
        for row in rows[: args.per_corpus]:
            samples = load_audio(str(args.data / corpus / row["path"]))
            rel, speech, level = utterance_db(samples, config, vad)
            levels.append(level)
            # Subsample bins so every file weighs the same.
            speech_bins.append(rel[:, speech].ravel()[::7])
            noise_bins.append(rel[:, ~speech].ravel()[::7])
        s, n = np.concatenate(speech_bins), np.concatenate(noise_bins)
        fractions = " | ".join(f"{(s > c).mean():.2f} / {(n > c).mean():.2f}" for c in candidates)
        print(f"| {corpus} | {len(levels)} | {np.median(levels):.1f} | {np.percentile(n, 50):.1f} / "
              f"{np.percentile(n, 90):.1f} | {np.percentile(s, 10):.1f} / {np.percentile(s, 50):.1f} | {fractions} |")


if __name__ == "__main__":
    main()
