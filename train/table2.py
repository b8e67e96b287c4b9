"""The paper's Table 2 from `sercli evaluate --noise ... -o FILE.json` outputs: per noise
condition and SNR, utterance WA / UA of every model scored, and the means over the noise
categories by SNR.

    python train/table2.py runs/table2-0.json runs/table2-5.json ...
    python train/table2.py old-0.json new-0.json --name 'runs/swa/{run}/model.pt=normal' ...

A model is a column, named by its --model argument (or by --name); the files may score
different models, conditions and folds (`sercli evaluate --fold N`, one fold per file, as a
slow machine spreads the work): a cell is the mean over every run (fold) any file scored for
that model and condition, a run scored twice counting as the last file has it. Cells whose
model and condition lack some of the runs the others have are listed on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def gather(paths: list[Path], only: set[str] | None = None
           ) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]]]:
    """(models in order of appearance, {condition: {model: (WA, UA)}}), each the mean over the
    runs scored (those named in `only`, if given), in percent."""
    models: list[str] = []
    runs: dict[str, dict[str, dict[str, dict]]] = {}  # condition -> model -> run -> utterance scores
    for path in paths:
        data = json.loads(path.read_text())
        for scored in data if isinstance(data, list) else [data]:  # evaluate -o writes one model as a dict
            if scored["model"] not in models:
                models.append(scored["model"])
            for label, condition in scored["conditions"].items():
                seen = runs.setdefault(label, {}).setdefault(scored["model"], {})
                seen.update({name: run["utterance"] for name, run in condition["runs"].items()
                             if only is None or name in only})
    everywhere = set().union(*(set(r) for by_model in runs.values() for r in by_model.values()))
    for label, by_model in runs.items():
        for model, scored in by_model.items():
            if set(scored) != everywhere:
                print(f"note: {label}, {model}: " + (f"mean of {', '.join(sorted(scored))} only" if scored
                                                       else "no run scored"), file=sys.stderr)
    rows = {label: {model: (100 * sum(r["wa"] for r in scored.values()) / len(scored),
                            100 * sum(r["ua"] for r in scored.values()) / len(scored))
                    for model, scored in by_model.items() if scored}
            for label, by_model in runs.items()}
    return models, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--name", action="append", default=[], metavar="MODEL=LABEL",
                        help="Column label for a model (its --model argument); repeatable.")
    parser.add_argument("--run", action="append", default=None, metavar="NAME",
                        help="Use only this run (fold1 ... fold5), repeatable: compares models on the same folds "
                             "while some are still being scored.")
    args = parser.parse_args()
    names = dict(item.rsplit("=", 1) for item in args.name)
    models, rows = gather(args.files, set(args.run) if args.run else None)
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
