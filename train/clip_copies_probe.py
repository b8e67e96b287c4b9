"""Would clips alone gain from hearing each clip several ways? A measurement, not a feature:
test-time copies, each test utterance also heard at other speeds or through other channels (the
copies `sercli train --augment-speed / --augment-channel` trains on), its posteriors averaged
over the copies.

    python train/clip_copies_probe.py 'runs/chan-merged/{run}.pt' 1 0.9 1.1
    python train/clip_copies_probe.py 'runs/chan-merged/{run}.pt' 1 mp3:32 aac:48 opus:24 -o copies.json

Each copy is scored by `sercli evaluate --fold all --context utterance` (run_evaluation: each
fold's own model, each clip standardised over itself with the model's prior); a copy's segment
posteriors are averaged per utterance, then the copies' per utterance, and the utterance UA of
each fold is reported for the first copy alone and for all of them. A copy is a speed factor
(0.9) or a channel (mp3:32, room:0.2-0.8). With --cache, the features of copies that training
already computed are read from it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from recipe_views import SHARED


def utterance_posteriors(scored: dict, run: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(utterances, classes) mean segment posteriors of one run's scored segments, and each
    utterance's label (-1 where the run did not test it)."""
    (posteriors, utterance, labels, _), = [value for key, value in scored.items() if key[2] == run]
    sums = torch.zeros(count, posteriors.shape[1]).index_add_(0, utterance, posteriors.float())
    segments = torch.zeros(count).index_add_(0, utterance, torch.ones(len(utterance)))
    truth = torch.full((count,), -1, dtype=torch.long)
    truth[utterance] = labels
    return sums / segments.clamp(min=1)[:, None], truth


def unweighted_accuracy(posteriors: torch.Tensor, truth: torch.Tensor) -> float:
    """sercli.metrics' UA over the utterances the run tested (truth >= 0)."""
    from sercli.metrics import accuracies

    tested = truth >= 0
    return accuracies(truth[tested].numpy(), posteriors[tested].argmax(1).numpy())["ua"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="fold models, '{run}' standing for foldN")
    parser.add_argument("copies", nargs="+", help="speed factors and channels; the first is scored alone too")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from sercli.commands.common import load_corpora
    from sercli.corpora import plan_splits
    from sercli.dataset import FeaturisingPool
    from sercli.evaluation import run_evaluation

    utterances = load_corpora([f"manifest={args.data / c / 'manifest.csv'}" for c in ("ravdess", "nemo")],
                              False, False, args.data / "folds.csv")
    splits = plan_splits(utterances, "all", "auto")
    scored = {}
    with FeaturisingPool(2) as pool:  # one pair of processes for every copy
        for copy in args.copies:
            heard = [replace(u, channel=copy) if ":" in copy else replace(u, speed=float(copy)) for u in utterances]
            scored[copy] = {}
            run_evaluation(heard, splits, args.model, "cpu", "auto", args.cache, log=lambda line: None,
                           context="utterance", scored_segments=scored[copy], workers=2, pool=pool)
    results = {"model": args.model, "copies": args.copies, "first": {}, "all": {}}
    for split in splits:
        alone = {c: utterance_posteriors(scored[c], split.name, len(utterances)) for c in args.copies}
        truth = alone[args.copies[0]][1]
        results["first"][split.name] = unweighted_accuracy(alone[args.copies[0]][0], truth)
        results["all"][split.name] = unweighted_accuracy(sum(p for p, _ in alone.values()), truth)
    for view in ("first", "all"):
        folds = list(results[view].values())
        results[view]["mean"] = float(np.mean(folds))
        print(f"{view:5} ({', '.join(args.copies[:1] if view == 'first' else args.copies)}): "
              f"{', '.join(f'{100 * ua:.1f}' for ua in folds)}; mean {100 * results[view]['mean']:.1f}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
