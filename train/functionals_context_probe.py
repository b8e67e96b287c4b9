"""Would standardising the eGeMAPS functionals over a context help, as it helped the spectrograms?
A measurement, not a feature.

    python train/functionals_context_probe.py ../shared/data --cache runs/cache [--compress-tails]

The segments' functionals come from sercli's own featurisation (`FeatureConfig(kind="egemaps")`,
the cache `sercli train --topology egemaps --cache DIR` writes, so nothing is recomputed). For
each shared fold, an RBF SVM (C = 1, balanced classes) is trained on the other folds' speakers
and scored on the fold's test speakers, per utterance (the mean of its segments' decision
values), with the functionals standardised:
- global: by the training speakers' moments (what the shipped MLP does);
- speaker: each speaker's segments by that speaker's own moments, in training and test alike
  (the oracle view: no user has a speaker's whole speech);
- scene: trained as speaker; each test speaker's segments standardised over a mix of their own
  segments and an equal number of another test speaker's (a two-voice scene of a film);
- scene+prior: as scene, the context's moments pooled with the training moments counted as
  PRIOR segments (as analysis leans a short context on the training speech).
Needs scikit-learn, which sercli itself does not use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def moments(x: np.ndarray, prior: tuple[np.ndarray, np.ndarray] | None = None, weight: float = 0.0):
    n = len(x)
    mean, second = x.mean(0), (x ** 2).mean(0)
    if prior is not None and weight:
        prior_mean, prior_var = prior
        mean_all = (n * mean + weight * prior_mean) / (n + weight)
        second = (n * second + weight * (prior_var + prior_mean ** 2)) / (n + weight)
        mean = mean_all
    return mean, np.sqrt(np.maximum(second - mean ** 2, 1e-8))


SIGNATURES = {  # eGeMAPS columns a speaker signature is clustered on
    "all": list(range(88)),
    "timbre": [22, 24, 26, 28, 40, 46, 52, 58, 60, 62, 64, 68, 70, 72, 74],  # MFCC 1-4, formants, spectral balance
    "timbre+f0": [0, 3, 22, 24, 26, 28, 40, 46, 52, 58, 60, 62, 64, 68, 70, 72, 74],
}


def clusters(x: np.ndarray, columns: list[int], k: int) -> np.ndarray:
    """Ward clusters of the rows of x on `columns` (each standardised over the rows)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if k == 1:
        return np.zeros(len(x), dtype=int)
    z = x[:, columns]
    z = (z - z.mean(0)) / np.maximum(z.std(0), 1e-8)
    return fcluster(linkage(z, "ward"), k, "maxclust")


def ua(truth: np.ndarray, guess: np.ndarray) -> float:
    return float(np.mean([np.mean(guess[truth == c] == c) for c in np.unique(truth)]))


def utterance_ua(decision: np.ndarray, segment_utterance: np.ndarray, labels: list[str]) -> float:
    """UA per utterance of segments' SVM decision values (N, classes), each utterance's summed
    over its segments (`segment_utterance`: index into `labels`, each utterance's label)."""
    from sercli.model import LABELS

    keys, inverse = np.unique(segment_utterance, return_inverse=True)
    summed = np.zeros((len(keys), decision.shape[1]))
    np.add.at(summed, inverse, decision)
    truth = np.array([LABELS.index(labels[k]) for k in keys])
    return ua(truth, summed.argmax(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--prior", type=float, default=20.0, help="segments the training moments count as")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compress-tails", action="store_true", help="the features `sercli train` now uses")
    parser.add_argument("--clusters", type=int, nargs="+", default=[2, 4, 6, 10])
    args = parser.parse_args()

    from sklearn.svm import SVC

    from sercli.corpora import assign_folds, read_corpus, read_folds
    from sercli.dataset import build_segments
    from sercli.features import FeatureConfig

    utterances = []
    for corpus in ("ravdess", "nemo"):
        utterances += read_corpus(f"manifest={args.data / corpus / 'manifest.csv'}")
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    labels = [u.label for u in utterances]
    data = build_segments(utterances, FeatureConfig(kind="egemaps", compress_tails=args.compress_tails), args.cache)
    x = data.spectrograms[:, :, 0].double().numpy()
    y, utt = data.labels.numpy(), data.utterance.numpy()
    speaker = np.array([utterances[i].speaker for i in utt])
    fold = np.array([utterances[i].fold for i in utt])
    rng = np.random.default_rng(args.seed)
    views = ["global", "speaker", "scene", "scene+prior", "file", "clip|spk-trained", "clip|mix-trained",
             "file|mix-trained"] + [f"{sig}-k{k}" for sig in SIGNATURES
                                                                    for k in args.clusters]
    scores = {v: [] for v in views}
    for test_fold in sorted(set(fold)):
        train, test = fold != test_fold, fold == test_fold
        prior = moments(x[train])
        by_speaker = x.copy()
        for s in np.unique(speaker):
            rows = speaker == s
            mean, std = moments(x[rows])
            by_speaker[rows] = (x[rows] - mean) / std
        test_speakers = np.unique(speaker[test])
        scene, scene_prior = x.copy(), x.copy()
        for s in test_speakers:
            rows = speaker == s
            partner = rng.choice([t for t in test_speakers if t != s])
            others = np.flatnonzero(speaker == partner)
            mix = np.concatenate([x[rows], x[rng.choice(others, rows.sum(), replace=len(others) < rows.sum())]])
            mean, std = moments(mix)
            scene[rows] = (x[rows] - mean) / std
            mean, std = moments(mix, prior, args.prior)
            scene_prior[rows] = (x[rows] - mean) / std
        inputs = {"global": ((x - prior[0]) / prior[1],) * 2, "speaker": (by_speaker, by_speaker),
                  "scene": (by_speaker, scene), "scene+prior": (by_speaker, scene_prior)}
        whole = x.copy()
        mean, std = moments(x[test], prior, args.prior)
        whole[test] = (x[test] - mean) / std
        inputs["file"] = (by_speaker, whole)
        glob = (x - prior[0]) / prior[1]
        inputs["clip|spk-trained"] = (by_speaker, glob)
        both = np.concatenate([by_speaker, glob])
        inputs["clip|mix-trained"] = (both, glob)
        inputs["file|mix-trained"] = (both, whole)
        for sig, columns in SIGNATURES.items():
            for k in args.clusters:
                groups = clusters(x[test], columns, k)
                purity = np.mean([np.max(np.unique(speaker[test][groups == g], return_counts=True)[1]) /
                                  np.sum(groups == g) for g in np.unique(groups)])
                clustered = x.copy()
                rows = np.flatnonzero(test)
                for g in np.unique(groups):
                    members = rows[groups == g]
                    mean, std = moments(x[members], prior, args.prior)
                    clustered[members] = (x[members] - mean) / std
                inputs[f"{sig}-k{k}"] = (by_speaker, clustered)
                print(f"  fold {test_fold} {sig} k={k}: cluster purity {100 * purity:.0f}%", flush=True)
        line = []
        for view in views:
            train_x, test_x = inputs[view]
            fit_rows = np.concatenate([train, train]) if len(train_x) > len(x) else train
            svm = SVC(C=1.0, gamma="scale", class_weight="balanced").fit(train_x[fit_rows], np.tile(y, len(train_x) // len(x))[fit_rows])
            scores[view].append(utterance_ua(svm.decision_function(test_x[test]), utt[test], labels))
            line.append(f"{view} {100 * scores[view][-1]:.1f}")
        print(f"fold {test_fold}: " + ", ".join(line), flush=True)
    for view in views:
        print(f"{view:12s} mean UA {100 * np.mean(scores[view]):.1f}  folds " +
              " ".join(f"{100 * s:.1f}" for s in scores[view]))


if __name__ == "__main__":
    main()
