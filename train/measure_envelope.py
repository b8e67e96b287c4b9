"""Which spectral envelope E(f) should the noise filter use? Measure how far noise moves it.

The filter keeps E(f) at the harmonics of the voice, so E must follow the voice and not the noise.
For a sample of shared utterances, each noise category is mixed in at the given SNR; in every frame
that Praat finds voiced in the clean utterance (its F0 is used for both, to isolate the envelope
estimator from pitch errors), the envelope of the noisy frame is compared with that of the clean
frame. Reported per method and category: the mean absolute difference in dB over 0-4 kHz, and its
mean signed difference (how far the noise lifts the envelope). Also per category: the share of
the clean voiced frames that Praat still finds voiced in the noisy utterance, and the share
whose noisy pitch is within 2% of the clean one.

    python train/measure_envelope.py ../shared/data --per-corpus 40 --snr 0
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import numpy as np
import torch

from sercli.audio import load_audio
from sercli.denoise import LOG_EPS, cepstral_envelope, peak_envelope, pitch_track
from sercli.features import FeatureConfig, power_spectrogram
from sercli.noise import load_noise, mix, noise_categories, utterance_seed

METHODS = {"harmonic peaks": peak_envelope, "cepstral smoothing": cepstral_envelope}


def frames_db(samples: np.ndarray, config: FeatureConfig) -> torch.Tensor:
    """(T, F) log-power of a whole utterance."""
    n_frames = -(-len(samples) // config.hop_length)
    whole = FeatureConfig(grid_hz=config.grid_hz, window_ms=config.window_ms, n_frames=n_frames)
    power = power_spectrogram(torch.from_numpy(samples)[None], whole)[0]  # (F, T)
    return 10 * torch.log10(power.T + LOG_EPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--per-corpus", type=int, default=40)
    parser.add_argument("--snr", type=float, default=0.0)
    parser.add_argument("--grid", type=int, default=10)
    args = parser.parse_args()
    config = FeatureConfig(grid_hz=args.grid)
    rng = random.Random(0)
    paths = []
    for corpus in ("ravdess", "nemo"):
        rows = list(csv.DictReader(open(args.data / corpus / "manifest.csv")))
        paths += [args.data / corpus / r["path"] for r in rng.sample(rows, args.per_corpus)]
    clean = [load_audio(str(p)) for p in paths]
    tracks = [pitch_track(x) for x in clean]
    print(f"{len(paths)} utterances, {sum((t > 0).sum() for t in tracks)} voiced frames, SNR {args.snr:g} dB\n")
    print("| noise | " + " | ".join(f"{m}: mean abs / mean signed (dB)" for m in METHODS)
          + " | still voiced | pitch within 2% |")
    print("|---|" + "---|" * (len(METHODS) + 2))
    totals = {m: [] for m in METHODS}
    for name, folder in noise_categories(args.data / "noise").items():
        noise = load_noise(folder)
        errors = {m: [] for m in METHODS}
        kept = close = 0
        for path, x, f0 in zip(paths, clean, tracks):
            noisy = mix(x, noise, args.snr, utterance_seed(0, f"{name}:{path}"))
            voiced = torch.from_numpy(f0 > 0)
            if not bool(voiced.any()):
                continue
            heard = pitch_track(noisy)[f0 > 0]
            kept += int(np.count_nonzero(heard))
            close += int(np.count_nonzero(np.abs(heard / f0[f0 > 0] - 1) < 0.02))
            pitch = torch.from_numpy(f0)[voiced]
            a, b = frames_db(x, config)[voiced], frames_db(noisy, config)[voiced]
            for method, envelope in METHODS.items():
                errors[method].append((envelope(b, pitch, args.grid) - envelope(a, pitch, args.grid)).flatten())
        cells = []
        for method in METHODS:
            diff = torch.cat(errors[method])
            totals[method].append(diff)
            cells.append(f"{diff.abs().mean():.1f} / {diff.mean():+.1f}")
        n_voiced = sum(int((t > 0).sum()) for t in tracks)
        print(f"| {name} | " + " | ".join(cells) + f" | {kept / n_voiced:.2f} | {close / n_voiced:.2f} |")
    cells = []
    for method in METHODS:
        diff = torch.cat(totals[method])
        cells.append(f"{diff.abs().mean():.1f} / {diff.mean():+.1f}")
    print("| **all** | " + " | ".join(cells) + " | | |")


if __name__ == "__main__":
    main()
