"""Score a training recipe as the shipped eGeMAPS models are scored: every fold trained with
several seeds, the seeds merged per fold into one checkpoint (as train/ship_model.py --merge
ships them), then the three views of train/views_table.py.

    python train/recipe_views.py chan -- --config train/egemaps-mlp.toml
    python train/recipe_views.py chanv -- --config train/egemaps-mlp.toml --set context_voices=true
    python train/recipe_views.py chanv-0db --runs-of chanv --zero-db
    python train/recipe_views.py routed --route chan chanv

Everything after `--` goes to `sercli train`. The runs go to RUNS/NAME-sS (S = 0.., one per
seed), the merged fold models to RUNS/NAME-merged/foldN.pt, the evaluation files to
RUNS/ev/NAME/ (foldN-programmes.json: `sercli evaluate --fold N --programmes 2
--programme-minutes 15`, the programmes and the speaker context; foldN-clips.json: `--context
utterance`, clips alone), which is what train/evals/ keeps. A step whose output exists is
skipped, so an interrupted sweep resumes where it stopped. --zero-db scores the programmes under
a 0 dB music bed under every scene instead (and no clips). --route CLIPS FILMS scores two earlier
sweeps' merged fold models as a routed pair, 'CLIPS|FILMS' (as `sercli analyze` runs its default
pair), and trains nothing. --dry-run prints the commands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

TRAIN = Path(__file__).resolve().parent
SHARED = Path("../shared/data")  # from the repository root, as every command in the docs names it (and the
# feature cache keys utterances by path: an absolute spelling of the same files misses the cache)
PROGRAMMES = ["--programmes", "2", "--programme-minutes", "15"]
ZERO_DB = ["--programme-snr", "0", "--programme-music-share", "1"]


def data_options(data: Path, folds_csv: Path) -> list[str]:
    """The corpora of the shared data and the speaker folds, as every accuracy figure uses them."""
    return ["--corpus", f"manifest={data / 'ravdess' / 'manifest.csv'}",
            "--corpus", f"manifest={data / 'nemo' / 'manifest.csv'}", "--folds", str(folds_csv)]


def fold_numbers(folds_csv: Path) -> list[int]:
    from sercli.corpora import read_folds

    return sorted(set(read_folds(folds_csv).values()))


def plan(name: str, train_options: list[str], data: list[str], folds: list[int], seeds: int, runs: Path,
         cache: Path, zero_db: bool, runs_of: str | None, route: list[str] | None = None
         ) -> list[tuple[Path, list[str]]]:
    """The steps, in order: (the file or folder a step leaves when done, its command)."""
    trained = runs_of or name
    steps = []
    if route:
        spec = "|".join(str(runs / f"{sweep}-merged" / "{run}.pt") for sweep in route)
        return steps + _scoring(name, spec, data, folds, runs, cache, zero_db)
    if runs_of is None:
        for seed in range(seeds):
            out = runs / f"{name}-s{seed}"
            steps.append((out / f"fold{folds[-1]}" / "model.pt",
                          ["sercli", "train", *data, "--cache", str(cache), "--fold", "all", "--seed", str(seed),
                           "--out", str(out), *train_options]))
    if seeds > 1:
        merged = runs / f"{trained}-merged"
        for n in folds:
            others = [str(runs / f"{trained}-s{seed}" / f"fold{n}" / "model.pt") for seed in range(1, seeds)]
            steps.append((merged / f"fold{n}.pt",
                          [sys.executable, str(TRAIN / "ship_model.py"),
                           str(runs / f"{trained}-s0" / f"fold{n}" / "model.pt"), f"fold{n}",
                           "--weights", str(merged), "--merge", *others]))
        spec = str(merged / "{run}.pt")
    else:
        spec = str(runs / f"{trained}-s0" / "{run}" / "model.pt")
    return steps + _scoring(name, spec, data, folds, runs, cache, zero_db)


def _scoring(name: str, spec: str, data: list[str], folds: list[int], runs: Path, cache: Path,
             zero_db: bool) -> list[tuple[Path, list[str]]]:
    """The evaluation steps of the fold models `spec` names: programmes per fold, then clips alone."""
    steps = []
    scored = runs / "ev" / name
    for n in folds:
        steps.append((scored / f"fold{n}-programmes.json",
                      ["sercli", "evaluate", *data, "--fold", str(n), "--cache", str(cache), "--model", spec,
                       *PROGRAMMES, *(ZERO_DB if zero_db else []), "-o", str(scored / f"fold{n}-programmes.json")]))
    if not zero_db:
        steps.append((scored / f"fold{folds[-1]}-clips.json",
                      ["sercli", "evaluate", *data, "--fold", "all", "--cache", str(cache), "--model", spec,
                       "--context", "utterance", "-o", str(scored / "all-clips.json")]))
    return steps


def split_clips(path: Path) -> list[Path]:
    """An `evaluate --fold all` file cut into one file per fold (foldN-clips.json beside it), as
    views_table reads them; the whole file is removed once they are written."""
    whole = json.loads(path.read_text())
    written = []
    for run, scores in whole["runs"].items():
        one = {key: value for key, value in whole.items() if key not in ("runs", "mean")}
        one["runs"] = {run: scores}
        target = path.parent / f"{run}-clips.json"
        target.write_text(json.dumps(one, indent=2) + "\n")
        written.append(target)
    path.unlink()
    return written


def main() -> None:
    argv = sys.argv[1:]
    train_options = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per fold, merged when more than one [5]")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data [../shared/data]")
    parser.add_argument("--folds", type=Path, default=None, help="the speaker folds [DATA/folds.csv]")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where runs and scores go [runs]")
    parser.add_argument("--cache", type=Path, default=None, help="the feature cache [RUNS/cache]")
    parser.add_argument("--zero-db", action="store_true", help="programmes under 0 dB music beds, no clips")
    parser.add_argument("--runs-of", metavar="NAME", help="score the fold models of an earlier sweep, train nothing")
    parser.add_argument("--route", nargs=2, metavar=("CLIPS", "FILMS"),
                        help="score two earlier sweeps as a routed pair, CLIPS|FILMS; train nothing")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if (args.runs_of or args.route) and train_options:
        parser.error("--runs-of and --route train nothing: drop the sercli train options")
    if args.runs_of and args.route:
        parser.error("choose --runs-of or --route")
    folds_csv = args.folds or args.data / "folds.csv"
    if not folds_csv.is_file():
        parser.error(f"{folds_csv}: no folds file (the shared data is not in a user's clone)")
    steps = plan(args.name, train_options, data_options(args.data, folds_csv), fold_numbers(folds_csv),
                 args.seeds, args.runs, args.cache or args.runs / "cache", args.zero_db, args.runs_of, args.route)
    for done, command in steps:
        if done.exists():
            continue
        print("$ " + shlex.join(command), flush=True)
        if args.dry_run:
            continue
        done.parent.mkdir(parents=True, exist_ok=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"recipe_views: step failed: {shlex.join(command)}")
        if command[-1].endswith("all-clips.json"):
            split_clips(Path(command[-1]))
    if not args.dry_run:
        subprocess.run([sys.executable, str(TRAIN / "views_table.py"), str(args.runs / "ev" / args.name)], check=True)


if __name__ == "__main__":
    main()
