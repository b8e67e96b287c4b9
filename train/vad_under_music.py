"""How the speech detector fares under music beds: utterances found and music taken for speech.

`evaluate --programmes` counts an utterance no segment overlaps as wrong. Under 0 dB beds about
11% are never found. This script rebuilds the same programmes (corpus, fold, seed, held-out
music, AAC-encoded and decoded as `evaluate` does), runs Silero once per programme and cuts
segments under several speech thresholds (Segmenter, the path `sercli analyze` uses), then
reports per threshold pair:

- found: share of utterances that some segment overlaps (what `evaluate` calls detected);
- covered: share of utterance time inside segments;
- music as speech: segment time outside every utterance, as a share of the programme's time
  outside utterances (music interludes, beds in pauses, gaps between scenes).

    python train/vad_under_music.py ../shared/data --fold 4 --snr 0 --music-share 1

Takes about a minute a fold on 2 CPU cores; no model is run.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sercli.audio import load_audio
from sercli.corpora import assign_folds, plan_splits, read_folds, read_manifest
from sercli.programmes import ProgrammeConfig, build_programme, encode_mp4, music_files, utterance_posteriors
from sercli.segment import VAD_FRAME, SegmentationConfig, SpeechProbabilities, segment_audio

PAIRS = [(0.5, 0.35), (0.4, 0.25), (0.3, 0.2), (0.2, 0.1), (0.1, 0.05)]


class Replayed:
    """A SpeechProbabilities stand-in that gives back probabilities computed once."""

    def __init__(self, probabilities: np.ndarray) -> None:
        self.probabilities = probabilities
        self.given = 0

    def reset(self) -> None:
        self.given = 0

    def feed(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        end = len(self.probabilities) if final else self.given + samples.size // VAD_FRAME
        out = self.probabilities[self.given : end]
        self.given = end
        return out


def measure(samples: np.ndarray, placed, probabilities: np.ndarray, config: SegmentationConfig) -> dict:
    segments = segment_audio(samples, config, vad=Replayed(probabilities))
    seconds = len(samples) / 16000
    grid = np.arange(0, seconds, 0.01)  # 10 ms cells
    speech = np.zeros(grid.size, dtype=bool)
    for s in segments:
        speech[int(s.start_s * 100) : int(s.end_s * 100)] = True
    truth = np.zeros(grid.size, dtype=bool)
    for item in placed:
        truth[int(item.start_s * 100) : int(item.end_s * 100)] = True
    # found as `evaluate` decides it: an utterance some segment overlaps gets posteriors, else None
    scored = [SimpleNamespace(start_s=s.start_s, end_s=s.end_s, probs={"speech": 1.0}) for s in segments]
    found = sum(p is not None for p in utterance_posteriors(scored, placed, ["speech"]))
    return {"utterances": len(placed), "found": found, "covered": int((speech & truth).sum()),
            "speech": int(truth.sum()), "false": int((speech & ~truth).sum()), "other": int((~truth).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("--fold", type=int, action="append", help="repeatable; default all five")
    parser.add_argument("--programmes", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--snr", type=float, default=ProgrammeConfig.music_snr_db)
    parser.add_argument("--music-share", type=float, default=ProgrammeConfig.music_share)
    args = parser.parse_args()

    utterances = [u for name in ("ravdess", "nemo") for u in read_manifest(args.data / name / "manifest.csv")]
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    config = replace(ProgrammeConfig(), minutes=args.minutes, music_snr_db=args.snr, music_share=args.music_share)
    music = music_files(args.data / "noise")
    vad = SpeechProbabilities()
    totals = {pair: {} for pair in PAIRS}
    print(f"programmes: {args.programmes} x {args.minutes:g} min per fold, beds {args.snr:g} dB under "
          f"{100 * args.music_share:g}% of scenes")
    with tempfile.TemporaryDirectory() as scratch:
        for split in plan_splits(utterances, "all"):
            if args.fold and split.fold not in args.fold:
                continue
            test = [u for u in utterances if u.speaker in split.test]
            for i in range(1, args.programmes + 1):
                key = f"{split.name}-{i}"
                samples, placed = build_programme(test, music, config, key)
                path = Path(scratch) / f"{key}.mp4"
                encode_mp4(samples, path)
                decoded = load_audio(str(path))
                vad.reset()
                probabilities = vad.feed(decoded, final=True)
                for threshold, negative in PAIRS:
                    counts = measure(decoded, placed, probabilities,
                                     SegmentationConfig(threshold=threshold, neg_threshold=negative))
                    for name, value in counts.items():
                        totals[(threshold, negative)][name] = totals[(threshold, negative)].get(name, 0) + value
                    print(f"{key} threshold {threshold:g}/{negative:g}: found {counts['found'] / counts['utterances']:.1%}, "
                          f"covered {counts['covered'] / counts['speech']:.1%}, "
                          f"music as speech {counts['false'] / counts['other']:.1%}", flush=True)
    print("\n| threshold (open / stay) | utterances found | utterance time covered | other time taken as speech |")
    print("|---|---|---|---|")
    for (threshold, negative), t in totals.items():
        print(f"| {threshold:g} / {negative:g} | {t['found'] / t['utterances']:.1%} | {t['covered'] / t['speech']:.1%} "
              f"| {t['false'] / t['other']:.1%} |")


if __name__ == "__main__":
    main()
