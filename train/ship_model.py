"""Copy a trained checkpoint into weights/ as an installed model (float16, renamed, re-hashed).

    python train/ship_model.py runs/fold1/fold1/model.pt cnn-lstm-10hz
    python train/ship_model.py weights/cnn-lstm-10hz.pt cnn-lstm-10hz --context-window 60
    python train/ship_model.py runs/a/all/model.pt egemaps-mlp --merge runs/b/all/model.pt runs/c/all/model.pt

A two-step bundle keeps its binary networks; an eGeMAPS model stays float32. --context-window sets the file context a
context-normalised model analyses with (FeatureConfig.context_window_s); re-shipping an
installed model keeps its weights and the name it was trained as. --merge: eGeMAPS MLPs trained
apart (other seeds, same recipe) join the first as members of one checkpoint, their posteriors
averaged (sercli.weights.merged_functionals); its validation WA is then the members' mean.

The model card, weights/<name>.md, is written by hand from the run's metrics.json.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path


from sercli.features import FeatureConfig
from sercli.model import ModelConfig
from sercli.weights import ModelError, merged_functionals, read_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name")
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="where installed models live [weights/]")
    parser.add_argument("--context-window", type=float, default=None, metavar="SECONDS",
                        help="the file context's window for analysis [default: the checkpoint's]")
    parser.add_argument("--merge", type=Path, nargs="+", default=[], metavar="CHECKPOINT",
                        help="more eGeMAPS MLPs of the same recipe to average with the first")
    args = parser.parse_args()
    try:
        checkpoint = read_checkpoint(args.checkpoint)
        if args.merge:
            merged = [checkpoint] + [read_checkpoint(path) for path in args.merge]
            config, state = merged_functionals(merged)
            checkpoint = dict(checkpoint, config=asdict(config), state_dict=state)
            valid = [c["meta"].get("metrics", {}).get("valid_wa") for c in merged]
            checkpoint["meta"] = dict(checkpoint["meta"], merged_from=[str(p) for p in [args.checkpoint, *args.merge]],
                                      metrics={"valid_wa": sum(valid) / len(valid) if None not in valid else None})
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
