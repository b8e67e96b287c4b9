"""Score models alone and as an ensemble (the mean of their segment posteriors), fold by fold.

Each model is scored as `sercli evaluate` scores it (same folds, same noise, same context
normalisation); the ensemble averages the members' posteriors of the same segments, then
averages each utterance's segments as usual. Members may differ in features (a normal and a
--denoise model), since both cut an utterance into the same segments.

    python train/ensemble.py ../shared/data --model 'runs/cnn-lstm-10hz/{run}/model.pt' \\
        --model 'runs/cnn-lstm-10hz-denoise/{run}/model.pt' [--noise DIR --snr 0] [-o out.json]

Prints UA/WA per fold and condition for each model and the ensemble; -o writes every member's
scores and the ensemble's (model name "ensemble") in `sercli evaluate -o`'s format, for
train/table2.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sercli.corpora import assign_folds, plan_splits, read_corpus, read_folds
from sercli.experiment import CLEAN, Condition, _row, run_evaluation
from sercli.noise import noise_categories
from sercli.train import SegmentSet, evaluate


def conditions_for(noises: list[str], snrs: list[float], seed: int) -> tuple[Condition, ...]:
    conditions = [CLEAN]
    for given in noises:
        folders = {"babble": None} if given == "babble" else noise_categories(given)
        for snr in snrs or [0.0]:
            conditions += [Condition(name, snr, str(folder) if folder else None, seed)
                           for name, folder in folders.items()]
    return tuple(conditions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="The shared data folder (ravdess/, nemo/, folds.csv, noise/).")
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="A member, with {run} for each fold's model; repeatable (two or more).")
    parser.add_argument("--weight", action="append", type=float, default=None,
                        help="Each member's weight in the mean, in --model order (default: equal).")
    parser.add_argument("--fold", default="all")
    parser.add_argument("--noise", action="append", default=[], metavar="DIR|babble")
    parser.add_argument("--snr", action="append", type=float, default=[])
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache", type=Path, default=None, help="Folder for cached clean spectrograms.")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    weights = args.weight or [1.0] * len(args.model)
    if len(args.model) < 2 or len(weights) != len(args.model):
        parser.error("give two or more --model, and one --weight per model if any")

    utterances = []
    for corpus in ("ravdess", "nemo"):
        utterances += read_corpus(f"manifest={args.data / corpus / 'manifest.csv'}")
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    splits = plan_splits(utterances, args.fold, "auto")
    conditions = conditions_for(args.noise, args.snr, args.noise_seed)
    log = lambda line: print(line, file=sys.stderr)
    clean: dict = {}
    members, scored_alone = [], []
    for spec in args.model:
        kept: dict = {}
        # Clean spectrograms come from the cache; noisy ones are computed each time (a condition's
        # cache file would be as large as the clean corpus's, some 0.8 GB).
        scored = run_evaluation(utterances, splits, spec, args.device, "auto", args.cache, log=log,
                                workers=args.workers, clean=clean, posteriors=kept)
        if len(conditions) > 1:
            noisy = run_evaluation(utterances, splits, spec, args.device, "auto", None, log=log,
                                   conditions=conditions[1:], workers=args.workers, clean=clean, posteriors=kept)
            scored["conditions"].update(noisy["conditions"])
        scored_alone.append(scored)
        members.append(kept)

    total = sum(weights)
    result: dict = {"model": "ensemble", "members": args.model, "weights": weights, "conditions": {}}
    for condition in conditions:
        scored: dict = {"runs": {}}
        for split in splits:
            parts = [m[condition.label, split.name] for m in members]
            _, utterance, labels = parts[0]
            for _, other_utterance, other_labels in parts[1:]:
                if not (torch.equal(utterance, other_utterance) and torch.equal(labels, other_labels)):
                    sys.exit(f"{condition.label}, {split.name}: the members cut the speech into different segments")
            mean = sum(w * p for w, (p, _, _) in zip(weights, parts)) / total
            shape = SegmentSet(torch.empty(0), torch.empty(0), utterance, labels)
            scores = evaluate(mean, shape)
            alone = [evaluate(p, shape)["utterance"]["ua"] for p, _, _ in parts]
            scored["runs"][split.name] = {"model": "ensemble"} | scores
            print(f"{condition.label}, {split.name}: members UA " + " ".join(f"{100 * a:.1f}" for a in alone)
                  + f", ensemble UA {100 * scores['utterance']['ua']:.1f} WA {100 * scores['utterance']['wa']:.1f}")
        if len(scored["runs"]) > 1:
            _, scored["mean"] = _row("mean", [{"test": r} for r in scored["runs"].values()])
        result["conditions"][condition.label] = scored
    if args.output:
        args.output.write_text(json.dumps([*scored_alone, result], indent=1))


if __name__ == "__main__":
    main()
