"""Store the context prior (per-bin mean and variance of the training speech's spectrograms) in
context-normalised checkpoints trained before `sercli train` stored it itself.

    python train/context_prior.py ../shared/data --cache runs/cache runs/cnn-lstm-10hz/*/model.pt

Each checkpoint's training speakers come from its own metadata; the checkpoint and its .sha256
are rewritten in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sercli.corpora import assign_folds, read_folds, read_manifest
from sercli.features import FeatureConfig
from sercli.model import ModelConfig
from sercli.dataset import build_segments, population_moments
from sercli.weights import read_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    utterances = [u for corpus in ("ravdess", "nemo") for u in read_manifest(args.data / corpus / "manifest.csv")]
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    speakers = np.array([u.speaker for u in utterances])
    datasets = {}
    for path in args.checkpoints:
        checkpoint = read_checkpoint(path)
        meta = dict(checkpoint["meta"])
        features = FeatureConfig(**meta.pop("features"))
        meta.pop("labels", None)
        if not features.context_norm:
            raise SystemExit(f"{path}: not a context-normalised model")
        key = (features.grid_hz, features.window_ms, features.denoise)
        if key not in datasets:
            datasets[key] = build_segments(utterances, features, args.cache)
        data = datasets[key]
        train = set(meta["training"]["speakers_train"])
        members = torch.from_numpy(np.isin(speakers, sorted(train)))[data.utterance]
        mean, variance, frames = population_moments(data, members)
        meta["context_prior"] = {"mean": mean.tolist(), "variance": variance.tolist()}
        half = next(v for v in checkpoint["state_dict"].values() if v.is_floating_point()).dtype.itemsize == 2
        save_checkpoint(path, ModelConfig.from_dict(checkpoint["config"]), checkpoint["state_dict"], features, meta,
                        half=half, members={n: (ModelConfig.from_dict(m["config"]), m["state_dict"])
                                            for n, m in checkpoint.get("members", {}).items()} or None)
        print(f"{path}: prior from {len(train)} training speakers, {frames:.0f} frames")


if __name__ == "__main__":
    main()
