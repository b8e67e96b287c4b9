"""Compare training recipes on a few folds of the shared data, choosing by validation only.

    python train/sweep.py --grid 20 --folds 1,2 --out runs/sweep NAME [key=value ...]

key=value overrides a field of TrainConfig or ModelConfig (e.g. lr=5e-4 summary=mean). Each
fold trains with early stopping on its validation speakers exactly as `sercli train` does, and
the sweep's score is the validation UA averaged over the last three epochs and the folds, a
steadier figure than the best epoch of three speakers. Test speakers are scored once, with the
selected model, for the record; recipes are compared by the validation figure.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from sercli.corpora import assign_folds, plan_splits, read_folds, read_manifest
from sercli.dataset import split_sets
from sercli.features import FeatureConfig
from sercli.model import ModelConfig
from sercli.dataset import build_segments
from sercli.metrics import evaluate
from sercli.train import TrainConfig, override, predict_segments, train_model

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--folds", default="1,2")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    args = parser.parse_args()
    pairs = dict(item.split("=", 1) for item in args.overrides)
    model_config = override(ModelConfig(grid_hz=args.grid), pairs)
    train_config = override(TrainConfig(), pairs)
    unknown = set(pairs) - {f.name for f in fields(ModelConfig)} - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise SystemExit(f"unknown settings: {', '.join(sorted(unknown))}")
    utterances = read_manifest(args.data / "ravdess" / "manifest.csv") + read_manifest(
        args.data / "nemo" / "manifest.csv")
    utterances = assign_folds(utterances, read_folds(args.data / "folds.csv"))
    data = build_segments(utterances, FeatureConfig(grid_hz=model_config.grid_hz),
                          args.cache)
    speakers = np.array([u.speaker for u in utterances])
    device = torch.device("cpu")
    report = {"name": args.name, "overrides": pairs, "model": asdict(model_config), "train": asdict(train_config),
              "folds": {}}
    chosen = {int(k) for k in args.folds.split(",")}
    for split in [s for s in plan_splits(utterances, "all", seed=train_config.seed) if s.fold in chosen]:
        train_set, valid_set, test_set = split_sets(data, speakers, split)
        started = time.monotonic()
        net, info = train_model(model_config, train_set, valid_set, train_config, device,
                                log=lambda line: print(f"{args.name} {split.name} {line}", flush=True))
        test = evaluate(predict_segments(net, test_set, device, info["bf16"]), test_set)["utterance"]
        tail = [h["valid_ua"] for h in info["history"][-3:]]
        report["folds"][split.name] = {"valid_ua_tail": float(np.mean(tail)), "best_epoch": info["best_epoch"],
                                       "history": info["history"], "test_wa": test["wa"], "test_ua": test["ua"],
                                       "minutes": (time.monotonic() - started) / 60}
        print(f"{args.name} {split.name}: validation UA (last 3 epochs) {np.mean(tail):.3f}; "
              f"test WA {test['wa']:.3f} UA {test['ua']:.3f}", flush=True)
    folds = report["folds"].values()
    report["valid_ua_tail"] = float(np.mean([f["valid_ua_tail"] for f in folds]))
    report["test_ua"] = float(np.mean([f["test_ua"] for f in folds]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    print(f"{args.name}: validation UA {report['valid_ua_tail']:.3f}, test UA {report['test_ua']:.3f}")


if __name__ == "__main__":
    main()
