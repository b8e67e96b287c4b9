"""Copy a trained checkpoint into weights/ as an installed model (float16, renamed, re-hashed).

    python train/ship_model.py runs/fold1/fold1/model.pt cnn-lstm-10hz
    python train/ship_model.py weights/cnn-lstm-10hz.pt cnn-lstm-10hz --context-window 60

A two-step bundle keeps its binary networks; an eGeMAPS model stays float32. --context-window sets the file context a
context-normalised model analyses with (FeatureConfig.context_window_s); re-shipping an
installed model keeps its weights and the name it was trained as.

The model card, weights/<name>.md, is written by hand from the run's metrics.json.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


from sercli.features import FeatureConfig
from sercli.model import ModelConfig
from sercli.weights import ModelError, read_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="where installed models live [weights/]")
    parser.add_argument("--context-window", type=float, default=None, metavar="SECONDS",
                        help="the file context's window for analysis [default: the checkpoint's]")
    args = parser.parse_args()
    try:
        checkpoint = read_checkpoint(args.checkpoint)
    except ModelError as exc:
        raise SystemExit(str(exc)) from exc
    meta = dict(checkpoint["meta"])
    features = FeatureConfig(**meta.pop("features"))
    if args.context_window is not None:
        features = replace(features, context_window_s=args.context_window)
    meta.pop("labels", None)
    meta["trained_as"] = meta.get("trained_as", meta.get("name"))
    meta["name"] = args.name
    meta["model_card"] = f"{args.name}.md"
    members = {name: (ModelConfig.from_dict(m["config"]), m["state_dict"]) for name, m in checkpoint.get("members", {}).items()}
    digest = save_checkpoint(args.weights / f"{args.name}.pt", ModelConfig.from_dict(checkpoint["config"]),
                             checkpoint["state_dict"], features, meta,
                             # an eGeMAPS MLP is 6,000 numbers, and its input statistics (variances
                             # of formant frequencies in Hz^2) overflow float16
                             half=features.kind != "egemaps", members=members or None)
    print(f"{args.weights / args.name}.pt  sha256 {digest}")


if __name__ == "__main__":
    main()
