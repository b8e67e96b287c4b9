"""The paper's Table 2 from `sercli evaluate --noise ... -o FILE.json` outputs: per noise
condition and SNR, utterance WA / UA of every model scored, and the means over the noise
categories by SNR.

    python train/table2.py runs/table2-0.json runs/table2-5.json ...
    python train/table2.py old-0.json new-0.json --name 'runs/swa/{run}/model.pt=normal' ...

A model is a column, named by its --model argument (or by --name); the files may score
different models and different conditions, and a model's cell for a condition comes from
whichever file scored it (the last one, if several did).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def overall(scored: dict) -> tuple[float, float]:
    mean = scored.get("mean") or next(iter(scored["runs"].values()))["utterance"]
    return 100 * mean["wa"], 100 * mean["ua"]


def gather(paths: list[Path]) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]]]:
    """(models in order of appearance, {condition: {model: (WA, UA)}})."""
    models: list[str] = []
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for scored in data if isinstance(data, list) else [data]:  # evaluate -o writes one model as a dict
            if scored["model"] not in models:
                models.append(scored["model"])
            for label, condition in scored["conditions"].items():
                rows.setdefault(label, {})[scored["model"]] = overall(condition)
    return models, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--name", action="append", default=[], metavar="MODEL=LABEL",
                        help="Column label for a model (its --model argument); repeatable.")
    args = parser.parse_args()
    names = dict(item.rsplit("=", 1) for item in args.name)
    models, rows = gather(args.files)
    labels = [names.get(model, model) for model in models]

    def cells(values: dict[str, tuple[float, float]]) -> str:
        return " | ".join(f"{values[m][0]:.1f} | {values[m][1]:.1f}" if m in values else "|" for m in models)

    print("| condition | " + " | ".join(f"{label} WA | {label} UA" for label in labels) + " |")
    print("|---|" + "---|---|" * len(models))
    for label, values in rows.items():
        print(f"| {label} | {cells(values)} |")
    snrs = sorted({label.rsplit(" ", 2)[1] for label in rows if label.endswith(" dB")}, key=float)
    clean = rows.get("clean", {})
    print("\nUA, mean over the noise conditions (every category and babble), utterance level; the gain of each "
          "model over the first, and each model's loss from its clean UA:\n")
    print("| SNR | " + " | ".join([*labels, *(f"{label} - {labels[0]}" for label in labels[1:]),
                                   *(f"{label} clean - noisy" for label in labels)]) + " |")
    print("|---|" + "---|" * (3 * len(models) - 1))
    if clean:
        print("| clean | " + " | ".join(f"{clean[m][1]:.1f}" if m in clean else "" for m in models)
              + " |" * (2 * len(models) - 1) + " |")
    for snr in snrs:
        picked = [values for label, values in rows.items() if label.endswith(f" {snr} dB")]
        means = [sum(v[m][1] for v in picked) / len(picked) if all(m in v for v in picked) else None
                 for m in models]
        gains = ["" if None in (x, means[0]) else f"{x - means[0]:+.1f}" for x in means[1:]]
        drops = ["" if x is None or m not in clean else f"{clean[m][1] - x:.1f}" for m, x in zip(models, means)]
        print(f"| {snr} dB ({len(picked)} conditions) | "
              + " | ".join(["" if x is None else f"{x:.1f}" for x in means] + gains + drops) + " |")

if __name__ == "__main__":
    main()
