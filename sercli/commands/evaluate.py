"""`sercli evaluate`: options in, one EvalRun out, handed to sercli.evaluation."""

from __future__ import annotations

from pathlib import Path

import click

from ..report import EXIT_FAILED, EXIT_USAGE, fail
from .common import check_output, corpus_options, default_workers, load_corpora, tune_for_batches

EVALUATE_EXAMPLES = """
\b
Examples:
  sercli evaluate --corpus manifest=my_calls.csv       the default pair on every utterance
  sercli evaluate --model 'runs/x/{run}/model.pt' --corpus manifest=data/ravdess/manifest.csv \\
      --folds data/folds.csv --fold all               each fold model on its own test speakers
  sercli evaluate --model a.pt --model b.pt --model a.pt+b.pt --corpus manifest=data/nemo/manifest.csv \\
      --noise data/noise --snr 0 --snr 10             models by noise condition, in one table
"""


@click.command(epilog=EVALUATE_EXAMPLES)
@click.option("--model", "model_specs", multiple=True, metavar="NAME|PATH",
              help="Checkpoint to score, repeatable (default: what `sercli analyze` runs, the routed pair "
                   "egemaps-mlp|egemaps-mlp-voices). '{run}' in a path "
                   "stands for each run's folder name, so RUN/{run}/model.pt scores every fold model of a "
                   "training run on its own test speakers. A+B scores an ensemble: the mean of the models' "
                   "posteriors of each segment; 'A|B' a routed pair: B where the segment's context holds "
                   "10 s of speech or more, A elsewhere.")
@corpus_options("score on", "Score only the test speakers of these folds (all|N), with the same runs as "
                 "`sercli train`; without it every utterance is scored.")
@click.option("--noise", "noises", multiple=True, metavar="DIR|babble",
              help="Also score with this noise added to the test speech, repeatable: a folder of noise files, "
                   "a folder of such folders (one condition each, e.g. ../shared/data/noise), or babble "
                   "(6-10 overlapping utterances of speakers outside the test fold).")
@click.option("--snr", "snrs", type=float, multiple=True, metavar="DB",
              help="Signal-to-noise ratio of --noise in dB (active speech over noise power), repeatable "
                   "[default: 0].")
@click.option("--noise-seed", type=int, default=0, show_default=True,
              help="Seed for noise offsets, babble talkers and programmes.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]", help="Where to run.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for cached spectrograms (default: none).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Also write the scores, with confusion matrices, to this JSON file.")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that decode and featurise the speech (default: the CPU count, at most 8).")
@click.option("--context", type=click.Choice(["speaker", "utterance"]), default="speaker", show_default=True,
              help="Context-normalised models: standardise over each speaker's test speech at once (the view "
                   "training reports; no user has it), or over each utterance alone (exactly what `sercli analyze "
                   "clip.wav` does with each clip).")
@click.option("--context-prior", "context_prior_s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="SECONDS", help="Context-normalised models: seconds of speech the training speech's "
                                      "statistics count for in each context (0: none).")
@click.option("--programmes", "programmes", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also build N film-like programmes per run from its test speakers only (two-speaker scenes, "
                   "music beds under half of them, music interludes; AAC in an mp4) and score them as "
                   "`sercli analyze` analyses a file: each utterance by the segments that overlap it.")
@click.option("--programme-minutes", type=click.FloatRange(min=0.1), default=None, metavar="M",
              help="Length of each programme in minutes [default: 15].")
@click.option("--programme-music", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Music for the programmes' beds and interludes: a folder of audio files, or of folders (its "
                   "held-out genres ambient, chiptune, jazz, metal and orchestral when it has them, else its "
                   "music_* ones) [default: ../shared/data/noise].")
@click.option("--programme-snr", "programme_snr_db", type=float, default=None, metavar="DB",
              help="Level of the programmes' music beds: the scene's speech over the bed, in dB [default: 15, a "
                   "film's background music; 0 for Table 2's condition].")
@click.option("--programme-music-share", "programme_music_share", type=click.FloatRange(0, 1), default=None,
              metavar="SHARE", help="Share of the programmes' scenes with a music bed under them [default: 0.5; 1 with "
                                    "--programme-snr 0 for Table 2's condition on programmes].")
@click.option("--context-window", "context_window_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Analyse the programmes as `sercli analyze --context-window SECONDS` does [default: each "
                   "model's own: 60 for the shipped models].")
def evaluate(model_specs, corpora, include_scripted, excited_as_happy, folds_path, fold, validation, noises, snrs,
             noise_seed, device, precision, cache_dir, output, workers, context, context_prior_s, programmes,
             programme_minutes, programme_music, programme_snr_db, programme_music_share, context_window_s) -> None:
    """Score checkpoints on labelled speech: WA, UA and confusion, per utterance and segment.

    With --noise, each noise category at each --snr is a further condition; several models and
    conditions end in one table, condition by model (the paper's Table 2 for a normal and a
    --denoise model). With --programmes, each model is also scored on film-like programmes of
    each run's test speakers, analysed exactly as `sercli analyze` analyses a file.
    """

    if snrs and not noises:
        raise click.UsageError("--snr needs --noise")
    if output is not None:
        check_output(output)
    if not programmes and any(v is not None for v in (programme_minutes, programme_music, programme_snr_db,
                                                      programme_music_share, context_window_s)):
        raise click.UsageError("--programme-minutes, --programme-music, --programme-snr, --programme-music-share "
                               "and --context-window need --programmes N")
    tune_for_batches()
    from ..corpora import CorpusError, plan_splits
    from ..evaluation import EvalRun, evaluate_models, results_tables
    from ..noise import NoiseError
    from ..programmes import ProgrammeError
    from ..weights import DEFAULT_ANALYSIS_MODEL, ModelError

    music = _music(programme_music) if programmes else []
    try:
        conditions = _conditions(noises, snrs, noise_seed)
        utterances = load_corpora(corpora, include_scripted, excited_as_happy, folds_path)
        if fold == "none":
            raise CorpusError("--fold none trains on every speaker; to score every utterance, leave out --fold")
        splits = plan_splits(utterances, fold, validation) if fold else []
        if any("{run}" in spec for spec in model_specs) and not splits:
            raise CorpusError("--model with {run} needs --fold (and --folds unless the corpus has its own)")
        run = EvalRun(utterances, splits, model_specs or (DEFAULT_ANALYSIS_MODEL,), conditions, device, precision,
                      cache_dir, workers or default_workers(), context, context_prior_s, programmes, programme_minutes,
                      noise_seed, music, context_window_s, programme_snr_db, programme_music_share)
        results = evaluate_models(run, log=lambda line: click.echo(line, err=True))
    except (CorpusError, ModelError, NoiseError) as exc:
        fail(str(exc), EXIT_USAGE)
    except ProgrammeError as exc:
        fail(str(exc), EXIT_FAILED)
    click.echo(results_tables(results, len(conditions)), nl=False)
    if output is not None:
        _write_json(output, results[0] if len(results) == 1 else results)


def _music(programme_music: Path | None) -> list[Path]:
    """The music for --programmes' beds; a usage error if there is none."""
    from ..programmes import ProgrammeError, music_files

    folder = programme_music or Path("..") / "shared" / "data" / "noise"
    try:
        return music_files(folder)
    except ProgrammeError as exc:
        hint = "" if programme_music else " (give --programme-music DIR)"
        fail(f"--programmes needs music for its beds: {exc}{hint}", EXIT_USAGE)


def _conditions(noises, snrs, seed: int) -> tuple:
    """Clean, then each --noise category at each --snr (0 dB without one)."""
    from ..evaluation import CLEAN, Condition
    from ..noise import noise_categories

    conditions = [CLEAN]
    for given in noises:
        folders = {"babble": None} if given == "babble" else noise_categories(given)
        for snr in snrs or (0.0,):
            conditions += [Condition(name, snr, str(folder) if folder else None, seed)
                           for name, folder in folders.items()]
    return tuple(conditions)


def _write_json(output: Path, document) -> None:
    import json

    from ..weights import atomic_write_bytes

    try:
        atomic_write_bytes(output, json.dumps(document, indent=1).encode())
    except OSError as exc:
        fail(f"cannot write output {output}: {exc.strerror or exc}", EXIT_FAILED)
