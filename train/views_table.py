"""The three views of a recipe's fold models, from the JSON files `sercli evaluate -o` wrote.

    python train/views_table.py train/evals/balance-corpus [train/evals/OTHER ...]

Each folder holds, per fold N, `foldN-programmes.json` (`sercli evaluate ... --fold N --model
'RUN/{run}/model.pt' --programmes 2 --programme-minutes 15 -o ...`: the speaker-context view
and the programmes) and `foldN-clips.json` (the same with `--context utterance`: clips alone).
Prints a Markdown table per folder: UA per fold and the mean over the folds present (WA in
brackets), then UA by corpus where the files have it. Our fold runs live outside the
repository and do not outlast a session; these small files do, so figures can be gathered
fold by fold across sessions (training is seeded: a fold retrained gives the same model).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

VIEWS = (  # (row label, file, where the scores are)
    ("speaker context (oracle)", "programmes", "clips"),
    ("clips alone", "clips", "clips"),
    ("programmes", "programmes", "programmes"),
)


def _only_run(results: dict) -> dict:
    (run,) = results["runs"].values()
    return run


def fold_views(folder: Path) -> dict[int, dict[str, dict]]:
    """{fold: {view label: {"wa", "ua", "by_corpus"}}} of the folds whose files are there."""
    folds: dict[int, dict[str, dict]] = {}
    for path in sorted(folder.glob("fold*-*.json")):
        found = re.fullmatch(r"fold(\d+)-(programmes|clips)\.json", path.name)
        if not found:
            continue
        fold, kind = int(found.group(1)), found.group(2)
        results = json.loads(path.read_text())
        for label, source, part in VIEWS:
            if source != kind:
                continue
            if part == "programmes":
                run = _only_run(results["programmes"])
                scores = {"wa": run["wa"], "ua": run["ua"], "by_corpus": run.get("by_corpus", {}),
                          "window": results["programmes"].get("context_window_s"),
                          "snr": results["programmes"].get("music_snr_db")}
            else:
                run = _only_run(results)
                scores = {"wa": run["utterance"]["wa"], "ua": run["utterance"]["ua"],
                          "by_corpus": run.get("by_corpus", {})}
            folds.setdefault(fold, {})[label] = scores
    return folds


def table(folder: Path) -> str:
    folds = fold_views(folder)
    if not folds:
        raise SystemExit(f"{folder}: no foldN-programmes.json or foldN-clips.json in it")
    numbers = sorted(folds)
    lines = [f"{folder.name}: UA per fold, mean of the folds present (WA)", "",
             "| view | " + " | ".join(f"fold {n}" for n in numbers) + " | mean UA (WA) |",
             "|---|" + "---|" * (len(numbers) + 1)]
    for label, _, _ in VIEWS:
        got = [folds[n].get(label) for n in numbers]
        cells = [f"{100 * g['ua']:.1f}" if g else "" for g in got]
        present = [g for g in got if g]
        mean = (f"{100 * np.mean([g['ua'] for g in present]):.1f} ({100 * np.mean([g['wa'] for g in present]):.1f})"
                if present else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    corpora = sorted({c for views in folds.values() for v in views.values() for c in v["by_corpus"]})
    if corpora:
        lines += ["", "UA by corpus, mean of the folds present:", ""]
        for label, _, _ in VIEWS:
            cells = []
            for corpus in corpora:
                values = [folds[n][label]["by_corpus"][corpus]["ua"] for n in numbers
                          if label in folds[n] and corpus in folds[n][label]["by_corpus"]]
                if values:
                    cells.append(f"{corpus} {100 * np.mean(values):.1f}")
            lines.append(f"- {label}: " + ", ".join(cells))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    print("\n".join(table(Path(folder)) for folder in argv), end="")


if __name__ == "__main__":
    main(sys.argv[1:])
