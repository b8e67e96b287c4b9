"""Would a context per voice type (male, female) help the eGeMAPS functionals? A measurement, not a
feature: the probe behind `--set context_voices=true` (sercli.context.Voices).

    python -W ignore train/voice_context_probe.py ../shared/data --cache runs/cache

Like train/functionals_context_probe.py: sercli's own cached functionals (compressed tails), an
RBF SVM per shared fold trained on the other folds' speakers, both on each speaker's segments
standardised over that speaker's and on each utterance's over itself with the training moments
as a prior of 3.3 segments (the clip view, as `--set context_utterance` trains), scored per
utterance on the fold's test speakers. The test segments are standardised over:
- clip: the utterance's own segments with the prior (a clip analysed alone);
- scene: the speaker's and an equal number of another test speaker's segments (a two-voice
  scene of a film), with the prior;
- file: all of the fold's test speech with the prior (one file of many voices);
- speaker: the speaker's own segments (the oracle);
each as it is, and typed: the context's segments of the segment's own voice type only, with
that type's prior (the training moments of its type). "true": the corpus gender labels;
"pred": a logistic regression on the training speakers' segments, an utterance typed by the
mean of its segments' probabilities (the SVM is then trained on clip contexts typed the same way).
Needs scikit-learn, which sercli itself does not use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from functionals_context_probe import moments, utterance_ua

PRIOR = 10 / 3  # segments: sercli's 10 s prior at a third of a segment a second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    from sercli.corpora import assign_folds, read_corpus, read_folds
    from sercli.dataset import build_segments
    from sercli.features import FeatureConfig

    utterances = []
    for corpus in ("ravdess", "nemo"):
        utterances += read_corpus(f"manifest={args.data / corpus / 'manifest.csv'}")
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    labels = [u.label for u in utterances]
    data = build_segments(utterances, FeatureConfig(kind="egemaps", compress_tails=True), args.cache)
    x = data.spectrograms[:, :, 0].double().numpy()
    y, utt = data.labels.numpy(), data.utterance.numpy()
    speaker = np.array([utterances[i].speaker for i in utt])
    female = np.array([utterances[i].voice == "female" for i in utt]).astype(int)
    fold = np.array([utterances[i].fold for i in utt])
    rng = np.random.default_rng(args.seed)
    views = ["clip", "clip typed (true)", "clip typed (pred)", "scene", "scene typed (pred)", "file",
             "file typed (pred)", "speaker"]
    scores: dict[str, list[float]] = {v: [] for v in views}
    for test_fold in sorted(set(fold)):
        train, test = fold != test_fold, fold == test_fold
        prior = moments(x[train])
        typed_prior = {g: moments(x[train & (female == g)]) for g in (0, 1)}
        z = (x - prior[0]) / prior[1]
        probability = LogisticRegression(C=0.1, max_iter=2000).fit(z[train], female[train]).predict_proba(z)[:, 1]
        per_utterance = np.bincount(utt, probability) / np.maximum(np.bincount(utt), 1)
        predicted = (per_utterance[utt] > 0.5).astype(int)
        typing = np.mean(predicted[test] == female[test])

        def standardised(rows: np.ndarray, over: np.ndarray, types: np.ndarray | None, out: np.ndarray) -> None:
            """out[rows] standardised over the segments `over`, typed by `types` where given."""
            if types is None:
                mean, std = moments(x[over], prior, PRIOR)
                out[rows] = (x[rows] - mean) / std
                return
            for g in (0, 1):
                mine, same = rows[types[rows] == g], over[types[over] == g]
                if len(mine):
                    mean, std = moments(x[same], typed_prior[g], PRIOR)
                    out[mine] = (x[mine] - mean) / std

        by_speaker = x.copy()
        for s in np.unique(speaker):
            rows = speaker == s
            mean, std = moments(x[rows])
            by_speaker[rows] = (x[rows] - mean) / std
        clips = {name: x.copy() for name in ("none", "true", "pred")}
        for u in np.unique(utt):
            rows = np.flatnonzero(utt == u)
            for name, types in (("none", None), ("true", female), ("pred", predicted)):
                standardised(rows, rows, types, clips[name])
        scene, scene_typed = x.copy(), x.copy()
        test_speakers = np.unique(speaker[test])
        for s in test_speakers:
            rows = np.flatnonzero(speaker == s)
            others = np.flatnonzero(speaker == rng.choice([t for t in test_speakers if t != s]))
            mix = np.concatenate([rows, rng.choice(others, len(rows), replace=len(others) < len(rows))])
            standardised(rows, mix, None, scene)
            standardised(rows, mix, predicted, scene_typed)
        whole, whole_typed = x.copy(), x.copy()
        rows = np.flatnonzero(test)
        standardised(rows, rows, None, whole)
        standardised(rows, rows, predicted, whole_typed)
        svms: dict[str, SVC] = {}
        plan = {"clip": ("none", clips["none"]), "clip typed (true)": ("true", clips["true"]),
                "clip typed (pred)": ("pred", clips["pred"]), "scene": ("none", scene),
                "scene typed (pred)": ("pred", scene_typed), "file": ("none", whole),
                "file typed (pred)": ("pred", whole_typed), "speaker": ("none", by_speaker)}
        line = []
        for view, (training_view, test_x) in plan.items():
            if training_view not in svms:
                both = np.concatenate([by_speaker, clips[training_view]])
                fit = np.concatenate([train, train])
                svms[training_view] = SVC(C=1.0, gamma="scale", class_weight="balanced").fit(both[fit],
                                                                                           np.tile(y, 2)[fit])
            scores[view].append(utterance_ua(svms[training_view].decision_function(test_x[test]), utt[test], labels))
            line.append(f"{view} {100 * scores[view][-1]:.1f}")
        print(f"fold {test_fold} (utterances typed right: {100 * typing:.1f}%): " + ", ".join(line), flush=True)
    for view in views:
        print(f"{view:20s} mean UA {100 * np.mean(scores[view]):.1f}  folds " +
              " ".join(f"{100 * s:.1f}" for s in scores[view]))


if __name__ == "__main__":
    main()
