"""Where a fold model loses accuracy on programmes: the programme view taken apart.

`sercli evaluate --programmes` gives one figure. This script rebuilds the same programmes (same
corpus, fold, seed and held-out music) and varies one thing at a time, each scored as
`evaluate --programmes` scores (an utterance by the overlap-weighted posteriors of the segments
over it; undetected counts wrong):

- contexts: the file's speech within 600, 60 or 20 s, each segment alone (with the checkpoint's
  prior, as for all of them), and the true speaker of each segment within the programme (an
  oracle no analysis has: the ceiling of any speaker clustering);
- the programme itself: without its music, then also with one level for every voice, then
  without the AAC encoding, and with pauses of 1-1.5 s between turns (no merged turns);
- the clips: the programme's own utterances each analysed alone (`evaluate --context
  utterance` on exactly those utterances), against all of the fold's test clips.

    python train/programme_diagnosis.py ../shared/data 'runs/x/{run}/model.pt' --fold 1

Speech detection, segmentation and featurisation are sercli's own (segment_audio, featurise);
only the standardisation is redone here, from each segment's per-bin sums, so that every
context is scored on the same spectrograms. Takes about 10 minutes a fold on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sercli.audio import load_audio
from sercli.context import context_prior, moments_with_prior, standardise_frames
from sercli.corpora import assign_folds, plan_splits, read_folds, read_manifest
from sercli.dataset import speech_regions, utterance_segments
from sercli.features import featurise
from sercli.programmes import (ProgrammeConfig, build_programme, encode_mp4, music_files, programme_accuracies,
                               utterance_posteriors)
from sercli.results import SegmentResult
from sercli.segment import SegmentationConfig, SpeechProbabilities, segment_audio
from sercli.weights import load_model


class Featurised:
    """A list of segments featurised once: their times, and per-bin frame sums for any context."""

    def __init__(self, segments, model) -> None:
        self.times = [(s.start_s, s.end_s) for s in segments]
        parts = [featurise(segments[k : k + 32], model.features) for k in range(0, len(segments), 32)]
        self.x = torch.cat([x for x, _ in parts])
        self.n = torch.cat([n for _, n in parts])
        valid = (torch.arange(self.x.shape[2])[None] < self.n[:, None]).double()[:, None, :]
        x = self.x.double()
        self.sums, self.squares = (x * valid).sum(2).numpy(), (x.square() * valid).sum(2).numpy()

    def posteriors(self, model, contexts: list[np.ndarray]) -> np.ndarray:
        """Each segment standardised over the segments contexts[i] (and the prior), classified."""
        prior = context_prior(model.meta)
        frames = self.n.double().numpy()
        moments = [moments_with_prior(frames[members].sum(), self.sums[members].sum(0), self.squares[members].sum(0),
                                      prior) for members in contexts]
        mean = torch.tensor(np.stack([m for m, _ in moments])).float()
        std = torch.tensor(np.stack([s for _, s in moments])).float()
        out = []
        for k in range(0, len(self.x), 32):
            z = standardise_frames(self.x[k : k + 32], self.n[k : k + 32], mean[k : k + 32], std[k : k + 32])
            out.append(model.posteriors(z, self.n[k : k + 32]).numpy())
        return np.concatenate(out)

    def window(self, half_s: float) -> list[np.ndarray]:
        starts = np.array([s for s, _ in self.times])
        return [np.nonzero(np.abs(starts - s) <= half_s)[0] for s in starts]

    def by_speaker(self, placed) -> list[np.ndarray]:
        """The oracle: each segment with the segments of the speaker it overlaps most."""
        who = []
        for start, end in self.times:
            overlaps = [(min(end, p.end_s) - max(start, p.start_s), p.utterance.speaker) for p in placed]
            best = max(overlaps)
            who.append(best[1] if best[0] > 0 else None)
        who = np.array(who, dtype=object)
        return [np.nonzero(who == w)[0] for w in who]


def programme_scores(model, programmes, contexts) -> dict:
    """programme_accuracies of (Featurised, placed) programmes under a context rule."""
    truth, predicted = [], []
    for featurised, placed in programmes:
        probs = featurised.posteriors(model, contexts(featurised, placed))
        segments = [SegmentResult.scored(s, e, p, model.labels) for (s, e), p in zip(featurised.times, probs)]
        for item, p in zip(placed, utterance_posteriors(segments, placed, model.labels)):
            truth.append(model.labels.index(item.utterance.label))
            predicted.append(None if p is None else int(np.argmax(p)))
    return programme_accuracies(truth, predicted, len(model.labels))


def clip_scores(model, utterances, vad) -> dict:
    """Each utterance analysed alone, cut as training cuts it, standardised by itself and the prior."""
    truth, predicted, memo = [], [], {}
    for u in utterances:
        if u.path not in memo:
            samples = load_audio(u.path)
            segments = utterance_segments(samples, speech_regions(samples, vad))
            if segments:
                featurised = Featurised(segments, model)
                probs = featurised.posteriors(model, [np.arange(len(segments))] * len(segments))
                weights = featurised.n.numpy().astype(float)
                memo[u.path] = int(np.argmax((probs * weights[:, None]).sum(0)))
            else:
                memo[u.path] = None
        truth.append(model.labels.index(u.label))
        predicted.append(memo[u.path])
    return programme_accuracies(truth, predicted, len(model.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("model", help="checkpoint path, '{run}' standing for the fold's run folder")
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--programmes", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--contexts-only", action="store_true",
                        help="only the contexts on the programmes as evaluate builds them (a third of the time)")
    args = parser.parse_args()

    utterances = assign_folds(read_manifest(args.data / "ravdess" / "manifest.csv")
                              + read_manifest(args.data / "nemo" / "manifest.csv"), read_folds(args.data / "folds.csv"))
    split = plan_splits(utterances, str(args.fold))[0]
    test = [u for u in utterances if u.speaker in split.test]
    model = load_model(args.model.replace("{run}", split.name), device="cpu")
    music = music_files(args.data / "noise")
    base = ProgrammeConfig(minutes=args.minutes)
    quiet = replace(base, music_share=0.0, interlude_share=0.0)
    variants = [("as evaluate builds them", base, True, SegmentationConfig()),
                ("no music", quiet, True, SegmentationConfig()),
                ("no music, one level", replace(quiet, level_spread_db=0.0), True, SegmentationConfig()),
                ("no music, one level, no AAC", replace(quiet, level_spread_db=0.0), False, SegmentationConfig()),
                ("no music, one level, pauses 1-1.5 s", replace(quiet, level_spread_db=0.0, pause_s=(1.0, 1.5)),
                 True, SegmentationConfig())][: 1 if args.contexts_only else None]
    contexts = {"file, 600 s": lambda f, p: f.window(300.0), "file, 60 s": lambda f, p: f.window(30.0),
                "file, 20 s": lambda f, p: f.window(10.0), "segment alone": lambda f, p: f.window(0.0),
                "true speaker (oracle)": lambda f, p: f.by_speaker(p)}
    print(f"{split.name}, {model.path}, {args.programmes} x {args.minutes:g} min programmes\n")
    print("| programme | context | segments over two utterances | WA | UA | detected |\n|---|---|---|---|---|---|")
    placed_first = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, config, encoded, segmentation in variants:
            programmes, straddling, total = [], 0, 0
            for i in range(1, args.programmes + 1):
                samples, placed = build_programme(test, music, config, f"{split.name}-{i}")
                if encoded:
                    path = Path(scratch) / f"{i}.mp4"
                    encode_mp4(samples, path)
                    samples = load_audio(str(path))
                segments = segment_audio(samples, segmentation)
                straddling += sum(sum(min(s.end_s, p.end_s) - max(s.start_s, p.start_s) > 0.1 for p in placed) > 1
                                  for s in segments)
                total += len(segments)
                programmes.append((Featurised(segments, model), placed))
            placed_first = placed_first or [p for _, placed in programmes for p in placed]
            rules = contexts.items() if name == variants[0][0] else [("segment alone", contexts["segment alone"])]
            for label, rule in rules:
                r = programme_scores(model, programmes, rule)
                print(f"| {name} | {label} | {100 * straddling / max(total, 1):.1f}% | {100 * r['wa']:.1f} | "
                      f"{100 * r['ua']:.1f} | {100 * r['detected']:.1f}% |", flush=True)
    if args.contexts_only:
        return
    vad = SpeechProbabilities()
    mine = clip_scores(model, [p.utterance for p in placed_first], vad)
    every = clip_scores(model, test, vad)
    print(f"\nclips alone, the programmes' {len(placed_first)} utterances: WA {100 * mine['wa']:.1f} "
          f"UA {100 * mine['ua']:.1f}; all {len(test)} test clips: WA {100 * every['wa']:.1f} UA {100 * every['ua']:.1f}")
    print("utterances by speaker, programmes:", dict(Counter(p.utterance.speaker for p in placed_first)))
    print("utterances by speaker, test clips:", dict(Counter(u.speaker for u in test)))


if __name__ == "__main__":
    main()
