"""Every training and evaluation behind train/RESULTS.md in one go, as many side by side as the
machine takes: Table 1 rows 1-5 (five folds each), the --denoise model and Table 2, the
all-speaker models that ship, and recipe variants.

    python train/campaign.py ../shared/data --runs runs --device cuda --parallel 12

Each job is one `sercli train` or `sercli evaluate` process, one fold per training, so folds
run side by side; a job starts when the jobs it needs have finished. The spectrogram caches are
built first, once, with --workers processes. Rerunning resumes: `sercli train` skips finished
folds and resumes interrupted ones. --deadline stops starting jobs, and then ends the running
ones, in time to write the reports, so a machine lent for a fixed time returns what it finished.
Reports: RUNS/NAME/results.md per configuration (as `sercli train --fold all` writes it), RUNS/
table2-*.md, and RUNS/campaign.log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Training recipes, flags given to every training before the configuration's own. "context":
# the defaults of `sercli train` (context normalisation, weight averaging). "swa": the same
# without context normalisation (the recipe before it). "plain": the first session's recipe
# (final LSTM states, the single best epoch, light regularisation, masks as the only
# augmentation), without context normalisation.
PLAIN = ["--epochs", "20", "--average-from", "0", "--patience", "6", "--set", "summary=last", "--set", "lstm_dropout=0",
         "--set", "weight_decay=1e-4", "--set", "label_smoothing=0", "--set", "freq_warp=0", "--set", "time_stretch=0",
         "--set", "select_from=1", "--set", "warmup_epochs=0"]
RECIPES = {"context": [], "swa": ["--no-context-norm"], "plain": [*PLAIN, "--no-context-norm"]}
# The shipped modified predictor (context recipe) trains with babble of its training speakers;
# the older recipes' modified predictors did not.
DENOISE_AUGMENTATION = ["--augment-noise", "babble"]

# name: (sercli train flags, report title flags). Table 1 rows, the modified predictor, variants.
CONFIGS = {
    "cnn-lstm-10hz": ["--topology", "cnn-lstm", "--grid", "10"],  # row 3, Table 2's normal
    # The shipped default model's recipe: row 3 trained with babble of its training speakers.
    "cnn-lstm-10hz-babble": ["--topology", "cnn-lstm", "--grid", "10", "--augment-noise", "babble"],
    "cnn-lstm-10hz-denoise": ["--topology", "cnn-lstm", "--grid", "10", "--denoise"],  # Table 2's modified
    "cnn5-10hz": ["--topology", "cnn5", "--grid", "10"],  # row 1
    "cnn-lstm-20hz": ["--topology", "cnn-lstm", "--grid", "20"],  # row 4
    "cnn5-20hz": ["--topology", "cnn5", "--grid", "20"],  # row 2
    # Recipe variants of row 3, each judged on its mean validation accuracy.
    "variant-long": ["--topology", "cnn-lstm", "--grid", "10", "--epochs", "32", "--average-from", "8",
                     "--patience", "8"],
    "variant-oversample": ["--topology", "cnn-lstm", "--grid", "10", "--oversample"],
    "variant-plain": ["--topology", "cnn-lstm", "--grid", "10", *PLAIN],  # with the recipe's normalisation
    "variant-lr3e-4": ["--topology", "cnn-lstm", "--grid", "10", "--lr", "0.0003", "--epochs", "32",
                       "--average-from", "8", "--patience", "8"],
}
FOLDS = [1, 2, 3, 4, 5]


@dataclass
class Job:
    name: str
    argv: list[str]
    kind: str  # "train" or "evaluate"
    needs: list[str] = field(default_factory=list)
    stdout: Path | None = None


GROUPS = ["cnn-lstm-10hz", "cnn-lstm-10hz-babble", "cnn-lstm-10hz-babble-all", "cnn-lstm-10hz-denoise",
          "cnn-lstm-10hz-denoise-all", "table2", "table2-babble", "two-step", "cnn-lstm-10hz-all", "cnn5-10hz",
          "cnn-lstm-20hz", "cnn5-20hz", "two-step-all",
          *(c for c in CONFIGS if c.startswith("variant-"))]


def plan(data: Path, runs: Path, device: str, eval_workers: int, groups: list[str], epochs: int | None,
         recipe: str = "context") -> list[Job]:
    """The jobs of `groups` (see GROUPS), started in that order as their needs are met. A job
    needing one of a group left out takes that group's results from RUNS as they are."""
    sercli = [sys.executable, "-m", "sercli"]
    corpora = ["--corpus", f"manifest={data / 'ravdess' / 'manifest.csv'}",
               "--corpus", f"manifest={data / 'nemo' / 'manifest.csv'}", "--folds", str(data / "folds.csv")]
    common = ["--device", device, "--cache", str(runs / "cache")]

    def train(name: str, flags: list[str], fold: str, out: str, needs: list[str] | None = None) -> Job:
        flags = training_flags(flags, recipe)
        if epochs is not None:  # a quick trial of the whole campaign
            for option in ("--epochs", "--average-from", "--patience"):
                while option in flags:
                    i = flags.index(option)
                    del flags[i : i + 2]
            flags += ["--epochs", str(epochs), "--average-from", "1"]
        return Job(name, [*sercli, "train", *corpora, *flags, "--fold", fold, "--out", str(runs / out), "--workers",
                          "1", *common], "train", needs or [])

    def fold_model(config: str) -> str:  # each run's checkpoint of a configuration, as --model and --first-step take it
        return str(runs / config / "{run}" / "model.pt")

    normal, modified = fold_model("cnn-lstm-10hz"), fold_model("cnn-lstm-10hz-denoise")
    jobs: list[Job] = []
    for group in groups:
        if group in CONFIGS:
            jobs += [train(f"{group}/fold{k}", CONFIGS[group], str(k), group) for k in FOLDS]
        elif group == "cnn-lstm-10hz-babble-all":  # the shipped default model
            jobs.append(train(group, CONFIGS["cnn-lstm-10hz-babble"], "none", "cnn-lstm-10hz-babble"))
        elif group == "cnn-lstm-10hz-all":  # row 3's recipe on all speakers: the shipped two-step's first step
            jobs.append(train(group, CONFIGS["cnn-lstm-10hz"], "none", "cnn-lstm-10hz"))
        elif group == "cnn-lstm-10hz-denoise-all":
            jobs.append(train(group, CONFIGS["cnn-lstm-10hz-denoise"], "none", "cnn-lstm-10hz-denoise"))
        elif group in ("table2", "table2-babble"):
            # table2: normal against modified (the paper's rows); table2-babble: the shipped default model,
            # alone and with the modified predictor (what `--denoise` runs). Every noise category and babble.
            first = "cnn-lstm-10hz" if group == "table2" else "cnn-lstm-10hz-babble"
            models = [normal, modified] if group == "table2" else [fold_model(first), f"{fold_model(first)}+{modified}"]
            for snr in ("0", "5", "10", "20"):  # one job each, so each table is done as soon as it can be
                tag = f"{group}-{snr}"
                jobs.append(Job(tag, [
                    *sercli, "evaluate", *corpora, "--fold", "all", *(a for m in models for a in ("--model", m)),
                    "--noise", str(data / "noise"), "--noise", "babble", "--snr", snr,
                    "--workers", str(eval_workers), *common, "-o", str(runs / f"{tag}.json")], "evaluate",
                    [f"{c}/fold{k}" for c in (first, "cnn-lstm-10hz-denoise") for k in FOLDS], runs / f"{tag}.md"))
        elif group == "two-step":  # binary networks beside each fold's four-class model
            jobs += [train(f"two-step/fold{k}", ["--topology", "two-step", "--first-step", normal], str(k),
                           "two-step", [f"cnn-lstm-10hz/fold{k}"]) for k in FOLDS]
        elif group == "two-step-all":  # the shipped two-step: row 3's all-speaker model ({run} = all) first
            jobs.append(train(group, ["--topology", "two-step", "--first-step", normal], "none", "two-step-all",
                              ["cnn-lstm-10hz-all"]))
        else:
            raise SystemExit(f"unknown group {group!r}; groups: {', '.join(GROUPS)}")
    planned = {job.name for job in jobs}
    for job in jobs:
        job.needs = [n for n in job.needs if n in planned]
    return jobs


def training_flags(flags: list[str], recipe: str) -> list[str]:
    """A configuration's `sercli train` flags under a recipe (click keeps the last of a repeated option)."""
    flags = RECIPES[recipe] + list(flags)
    if recipe == "context" and "--denoise" in flags:  # today's modified predictor also hears babble
        flags += DENOISE_AUGMENTATION
    return flags


def build_caches(data: Path, runs: Path, workers: int, groups: list[str], log) -> None:
    """Every spectrogram cache the groups' jobs read, built once with a pool of processes."""
    from sercli.commands.common import load_corpora
    from sercli.dataset import FeaturisingPool, build_segments
    from sercli.features import FeatureConfig

    corpora = (f"manifest={data / 'ravdess' / 'manifest.csv'}", f"manifest={data / 'nemo' / 'manifest.csv'}")
    utterances = load_corpora(corpora, False, False, data / "folds.csv")
    wanted = [FeatureConfig(grid_hz=10, denoise=True)] if any("denoise" in g or g.startswith("table2")
                                                             for g in groups) else []
    wanted += [FeatureConfig(grid_hz=10)] if any("10hz" in g and "denoise" not in g
                                                 or g.startswith(("two-step", "variant", "table2")) for g in groups) else []
    wanted += [FeatureConfig(grid_hz=20)] if any("20hz" in g for g in groups) else []
    with FeaturisingPool(workers) as pool:
        for features in wanted:
            started = time.monotonic()
            build_segments(utterances, features, runs / "cache", log=lambda _: None, pool=pool)
            log(f"cache {features.grid_hz} Hz{' denoise' if features.denoise else ''}: "
                f"{time.monotonic() - started:.0f} s")


def run_jobs(jobs: list[Job], runs: Path, parallel: dict[str, int], stop_starting: float, stop: float,
             log) -> dict[str, str]:
    """Start jobs as their needs finish (at most parallel[kind] at a time); returns name -> outcome."""
    pending = list(jobs)
    running: dict[str, tuple[Job, subprocess.Popen, float, list]] = {}  # name -> (job, process, start, files)
    outcome: dict[str, str] = {}
    env = os.environ | {"OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    (runs / "logs").mkdir(parents=True, exist_ok=True)

    def finish(name: str, what: str) -> None:
        _, _, started, files = running.pop(name)
        for handle in files:
            handle.close()
        outcome[name] = what
        log(f"{name}: {what} after {time.monotonic() - started:.0f} s")

    while pending or running:
        now = time.monotonic()
        for name, (_, process, _, _) in list(running.items()):
            code = process.poll()
            if code is not None:
                finish(name, "done" if code == 0 else f"failed ({code})")
        if now >= stop:
            for name, (_, process, _, _) in list(running.items()):
                process.terminate()
                process.wait(timeout=30)
                finish(name, "stopped at the deadline")
            break
        for job in list(pending):
            if any(n in outcome and outcome[n] != "done" for n in job.needs):
                pending.remove(job)
                outcome[job.name] = "skipped: a job it needs did not finish"
                log(f"{job.name}: {outcome[job.name]}")
                continue
            if now >= stop_starting:
                pending.remove(job)
                outcome[job.name] = "not started: deadline"
                continue
            busy = sum(1 for other, *_ in running.values() if other.kind == job.kind)
            if busy < parallel[job.kind] and all(outcome.get(n) == "done" for n in job.needs):
                pending.remove(job)
                log_path = runs / "logs" / (job.name.replace("/", "-") + ".log")
                files = [open(log_path, "w")] + ([open(job.stdout, "w")] if job.stdout else [])
                process = subprocess.Popen(job.argv, stdout=files[-1], stderr=files[0] if job.stdout else
                                           subprocess.STDOUT, env=env, cwd=ROOT)
                running[job.name] = (job, process, now, files)
                log(f"{job.name}: started")
        time.sleep(1)
    return outcome


def write_reports(runs: Path, data: Path, log, recipe: str = "context") -> None:
    """results.md/json per configuration from whatever folds finished (as `sercli train` writes them)."""
    from sercli.experiment import _write_report
    from sercli.model import ModelConfig

    for out in sorted(p for p in runs.iterdir() if p.is_dir() and p.name not in ("cache", "logs")):
        results = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/metrics.json"))}
        if not results:
            continue
        flags = CONFIGS.get(out.name, ["--topology", "two-step"] if out.name.startswith("two-step") else [])
        topology = flags[flags.index("--topology") + 1] if "--topology" in flags else "cnn-lstm"
        grid = int(flags[flags.index("--grid") + 1]) if "--grid" in flags else 10
        two_step = topology == "two-step"
        config = ModelConfig(topology="cnn-lstm" if two_step else topology, grid_hz=grid)
        command = " ".join(["sercli train", f"--corpus manifest={data}/ravdess/manifest.csv",
                            f"--corpus manifest={data}/nemo/manifest.csv", f"--folds {data}/folds.csv",
                            "--fold all", *training_flags(flags, recipe), f"--out {out}"])
        _write_report(out, results, config, command, two_step)
        valid = [m["valid_wa"] for m in results.values()]
        log(f"{out.name}: {len(results)} runs, mean validation WA {100 * sum(valid) / len(valid):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="../shared/data")
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parallel", type=int, default=12, help="training processes at a time")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes building the caches")
    parser.add_argument("--eval-workers", type=int, default=8, help="featurising processes per evaluation")
    parser.add_argument("--deadline", type=float, default=None, help="seconds from now to stop")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help=f"comma-separated, in the order to start them [default: {','.join(GROUPS)}]")
    parser.add_argument("--epochs", type=int, default=None, help="override every training's epochs (trials)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="context", help="training recipe [default: context]")
    args = parser.parse_args()
    runs, data = args.runs.resolve(), args.data.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log_file = open(runs / "campaign.log", "a")

    def log(message: str) -> None:
        line = f"{time.monotonic() - started:6.0f} s  {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    stop = started + args.deadline if args.deadline else float("inf")
    jobs = plan(data, runs, args.device, args.eval_workers, args.groups.split(","), args.epochs, args.recipe)
    build_caches(data, runs, args.workers, args.groups.split(","), log)
    outcome = run_jobs(jobs, runs, {"train": args.parallel, "evaluate": 2}, stop - 60, stop - 15, log)
    write_reports(runs, data, log, args.recipe)
    (runs / "campaign.json").write_text(json.dumps(outcome, indent=1))
    log(f"finished: {sum(v == 'done' for v in outcome.values())} of {len(outcome)} jobs done")


if __name__ == "__main__":
    main()
