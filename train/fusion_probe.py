"""Would an eGeMAPS + SVM branch help the clip-alone view? A measurement, not a feature.

    python train/fusion_probe.py ../shared/data 'runs/balance-corpus/{run}/model.pt' --folds 1 2 3

For each fold: eGeMAPS v02 functionals of every clip (openSMILE, cached in runs/egemaps.npz), an
RBF SVM with Platt posteriors trained on the other folds' speakers (features standardised with
the training speakers' statistics only), the fold's CNN model run on each test clip alone as
`sercli analyze clip.wav` runs it (an utterance's posteriors: the mean of its segments'), and
the two posteriors averaged with a fixed weight of 0.5 chosen before looking at any result.
Each clip is scaled to one loudness before openSMILE (--level raw: as recorded, which lets
the corpora's 14 dB level difference in). Prints UA and WA per fold and by corpus for the SVM,
the CNN and their mean. Needs
`pip install opensmile scikit-learn`, which sercli itself does not use.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

LABELS = ["angry", "happy", "neutral", "sad"]


def clips(data: Path) -> list[dict]:
    rows = []
    for corpus in ("ravdess", "nemo"):
        with open(data / corpus / "manifest.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["emotion"] in LABELS:
                    rows.append({**row, "file": str(data / corpus / row["path"])})
    return rows


def level_normalised(samples: np.ndarray, rate: int = 16000, target_db: float = -20.0) -> np.ndarray:
    """The clip scaled so that its loud frames (95th percentile of 25 ms frame RMS) sit at
    target_db: no absolute level reaches the features, as no user's recording gain means anything
    (RAVDESS's active speech is about 14 dB quieter than nEMO's)."""
    hop = rate // 40
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames ** 2, axis=1) + 1e-12)
    loud = np.percentile(rms, 95) if len(rms) else 1.0
    return (samples * (10 ** (target_db / 20) / max(loud, 1e-6))).astype(np.float32)


def egemaps(rows: list[dict], cache: Path, level: str) -> np.ndarray:
    cache = cache.with_name(f"{cache.stem}-{level}{cache.suffix}")
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if list(stored["files"]) == [r["file"] for r in rows]:
            return stored["x"]
    import opensmile

    from sercli.audio import load_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    x = []
    for r in rows:
        if level == "raw":
            x.append(smile.process_file(r["file"]).to_numpy()[0])
        else:
            x.append(smile.process_signal(level_normalised(load_audio(r["file"])), 16000).to_numpy()[0])
    x = np.stack(x).astype(np.float64)
    np.savez(cache, x=x, files=np.array([r["file"] for r in rows]))
    return x


def scores(truth: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    guess = probs.argmax(1)
    wa = float((guess == truth).mean())
    ua = float(np.mean([(guess[truth == k] == k).mean() for k in range(len(LABELS)) if (truth == k).any()]))
    return wa, ua


def segment_egemaps(smile, samples: np.ndarray) -> np.ndarray:
    return smile.process_signal(level_normalised(samples), 16000).to_numpy()[0]


def programme_posteriors(data: Path, fold: int, count: int, minutes: float, scaler, svm, model, scratch: Path):
    """The fold's programmes as `sercli evaluate --programmes` builds them (same seeds, held-out
    music): per placed utterance its truth, corpus, and the SVM's and the CNN's posteriors (the
    overlap-weighted mean of the segments over it; None where none is)."""
    import opensmile

    from sercli.audio import load_audio
    from sercli.corpora import assign_folds, plan_splits, read_folds, read_manifest
    from sercli.predict import Pipeline
    from sercli.programmes import ProgrammeConfig, build_programme, encode_mp4, music_files, utterance_posteriors
    from sercli.results import SegmentResult
    from sercli.segment import segment_audio

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    utterances = assign_folds(read_manifest(data / "ravdess" / "manifest.csv")
                              + read_manifest(data / "nemo" / "manifest.csv"), read_folds(data / "folds.csv"))
    split = plan_splits(utterances, str(fold))[0]
    test = [u for u in utterances if u.speaker in split.test]
    music = music_files(data / "noise")
    out = []
    for i in range(1, count + 1):
        built, placed = build_programme(test, music, ProgrammeConfig(minutes=minutes), f"{split.name}-{i}")
        path = scratch / f"{split.name}-{i}.mp4"
        encode_mp4(built, path)
        samples = load_audio(str(path))
        segments = segment_audio(samples)
        p = svm.predict_proba(scaler.transform(np.stack([segment_egemaps(smile, s.samples) for s in segments])))
        scored = [SegmentResult.scored(s.start_s, s.end_s, q, LABELS) for s, q in zip(segments, p)]
        cnn = next(iter(Pipeline([model]).run([str(path)])))
        for item, a, b in zip(placed, utterance_posteriors(scored, placed, LABELS),
                              utterance_posteriors(cnn.segments, placed, LABELS)):
            out.append((LABELS.index(item.utterance.label), item.utterance.corpus, a, b))
    return out


def programme_scores(items, which) -> tuple[float, float, float, float]:
    from sercli.programmes import programme_accuracies

    def guess(a, b):
        p = {"svm": a, "cnn": b, "mean": None if a is None or b is None else (a + b) / 2}[which]
        p = p if p is not None else (a if a is not None else b)
        return None if p is None else int(np.argmax(p))

    r = programme_accuracies([t for t, _, _, _ in items], [guess(a, b) for _, _, a, b in items], len(LABELS))
    by = [programme_accuracies([t for t, c, _, _ in items if c == name],
                               [guess(a, b) for _, c, a, b in items if c == name], len(LABELS))["ua"]
          for name in ("nemo", "ravdess")]
    return r["ua"], r["wa"], by[0], by[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("model_pattern", help="fold models, '{run}' standing for foldN")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--cache", type=Path, default=Path("runs/egemaps.npz"))
    parser.add_argument("--level", choices=["normalised", "raw"], default="normalised",
                        help="normalised: each clip scaled to one loudness first (default); raw: as recorded")
    parser.add_argument("--programmes", type=int, default=2, help="programmes per fold (0: clips only)")
    parser.add_argument("--minutes", type=float, default=15.0)
    args = parser.parse_args()

    import tempfile

    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    import sercli

    rows = clips(args.data)
    with open(args.data / "folds.csv", newline="") as f:
        fold_of = {r["speaker"]: int(r["fold"]) for r in csv.DictReader(f)}
    x = egemaps(rows, args.cache, args.level)
    y = np.array([LABELS.index(r["emotion"]) for r in rows])
    fold = np.array([fold_of[r["speaker"]] for r in rows])
    corpus = np.array([r["corpus"] for r in rows])
    print("| fold | view | branch | UA | WA | nEMO UA | RAVDESS UA |")
    print("|---|---|---|---|---|---|---|")
    for k in args.folds:
        train, test = fold != k, fold == k
        scaler = StandardScaler().fit(x[train])
        # (scikit-learn 1.9 deprecates probability=True; CalibratedClassifierCV is its replacement)
        svm = SVC(kernel="rbf", C=1.0, gamma="scale", class_weight="balanced", probability=True, random_state=0)
        svm.fit(scaler.transform(x[train]), y[train])
        p_svm = svm.predict_proba(scaler.transform(x[test]))
        model = sercli.load_model(args.model_pattern.replace("{run}", f"fold{k}"), device="cpu")
        p_cnn = []
        for i in np.flatnonzero(test):
            result = sercli.analyze(rows[i]["file"], model=model)
            if result.segments:
                p_cnn.append(np.mean([[s.probs[c] for c in LABELS] for s in result.segments], axis=0))
            else:
                p_cnn.append(np.full(len(LABELS), 1 / len(LABELS)))
        p_cnn = np.array(p_cnn)
        for name, p in (("eGeMAPS SVM", p_svm), ("CNN", p_cnn), ("mean of both", (p_svm + p_cnn) / 2)):
            wa, ua = scores(y[test], p)
            by = [scores(y[test][corpus[test] == c], p[corpus[test] == c])[1] for c in ("nemo", "ravdess")]
            print(f"| {k} | clips alone | {name} | {100 * ua:.1f} | {100 * wa:.1f} | {100 * by[0]:.1f} | "
                  f"{100 * by[1]:.1f} |", flush=True)
        if args.programmes:
            with tempfile.TemporaryDirectory() as scratch:
                items = programme_posteriors(args.data, k, args.programmes, args.minutes, scaler, svm, model,
                                             Path(scratch))
            for name, which in (("eGeMAPS SVM", "svm"), ("CNN", "cnn"), ("mean of both", "mean")):
                ua, wa, nemo, ravdess = programme_scores(items, which)
                print(f"| {k} | programmes | {name} | {100 * ua:.1f} | {100 * wa:.1f} | {100 * nemo:.1f} | "
                      f"{100 * ravdess:.1f} |", flush=True)


if __name__ == "__main__":
    main()
