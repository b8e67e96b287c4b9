"""`sercli`: the command line. Thin: validate options, load the model once, loop, report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import click

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

ANALYZE_EXAMPLES = """
\b
Examples:
  sercli analyze interview.mp3                  CSV on stdout
  sercli analyze movie.mkv --format json -o movie.json
  sercli analyze -r media/ --output-dir out/    one file per input, mirrored tree
  find media -name '*.mp4' | sercli analyze - -o out/ --skip-existing
  sercli analyze talk.wav --segmentation fixed  consecutive 3 s windows
"""


def _say(console, kind: str, message: str) -> None:
    if console is not None:
        console.print(f"sercli: {kind}: {message}", markup=False, highlight=False)
    else:
        click.echo(f"sercli: {kind}: {message}", err=True)


def _media_in(folder: Path, recursive: bool) -> Iterator[Path]:
    from .audio import MEDIA_EXTENSIONS

    if recursive:
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            for name in sorted(names):
                if Path(name).suffix.lower() in MEDIA_EXTENSIONS:
                    yield Path(root) / name
    else:
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in MEDIA_EXTENSIONS:
                yield path


def _inputs(paths: tuple[str, ...], recursive: bool) -> Iterator[str]:
    """Every input path once (the same file given twice counts once), lazily: stdin is read
    as it arrives."""
    seen = set()
    for path in _given_inputs(paths, recursive):
        if os.path.abspath(path) not in seen:
            seen.add(os.path.abspath(path))
            yield path


def _given_inputs(paths: tuple[str, ...], recursive: bool) -> Iterator[str]:
    for given in paths:
        if given == "-":
            for line in sys.stdin:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        elif Path(given).is_dir():
            for path in _media_in(Path(given), recursive):
                yield str(path)
        else:
            yield given


def output_name(path: str, fmt: str) -> Path:
    """The --output-dir file of an input: its path, made relative, plus the format's extension.

    `talk.mp3` -> `talk.mp3.csv`, `media/s1/ep1.mkv` -> `media/s1/ep1.mkv.csv`; an absolute path,
    or one that leaves the working directory, is mirrored whole (`/data/x.mp4` ->
    `data/x.mp4.csv`). The name depends only on the input, so different inputs never collide
    and a resumed batch finds the same names in any order.
    """
    normal = os.path.normpath(path)
    if os.path.isabs(normal) or normal.split(os.sep, 1)[0] == os.pardir:
        normal = os.path.abspath(path)
        normal = normal[len(os.path.splitdrive(normal)[0]):].lstrip(os.sep)
    return Path(f"{normal}.{fmt}")


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.fields[total_files]} files"),
        TextColumn("{task.fields[hours]:.2f} h audio"), TextColumn("{task.fields[speed]:.0f}x realtime"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sercli")
def main() -> None:
    """Which emotion is expressed in the speech of any audio or video file, segment by segment."""
    from .heap import retain_freed_memory

    retain_freed_memory()  # batches reuse freed pages instead of faulting in fresh ones


@main.command(epilog=ANALYZE_EXAMPLES)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-m", "--model", "model_name", default=None, metavar="NAME|PATH",
              help="Installed model name (see `sercli models`) or checkpoint path; A+B averages the posteriors "
                   "of several (an ensemble). Default: the shipped model.")
@click.option("-f", "--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), default="csv",
              show_default=True, help="Output format.")
@click.option("-o", "--output", default="-", metavar="FILE|DIR/", show_default=True,
              help="Write all results to FILE (atomically); - is stdout. A folder (a name ending in / or an "
                   "existing folder) gets one output per input, as with --output-dir.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one output per input into DIR, named after the input.")
@click.option("-r", "--recursive", is_flag=True, help="Look for media in subfolders of folder arguments.")
@click.option("--skip-existing", is_flag=True,
              help="With --output-dir: skip inputs whose output already exists (resume a batch).")
@click.option("--segmentation", type=click.Choice(["speech", "fixed"]), default="speech", show_default=True,
              help="speech: voice-activity regions cut into near-equal parts; fixed: consecutive windows.")
@click.option("--denoise", is_flag=True,
              help="Rebuild voiced speech from its pitch before classifying, for speech under music, crowds "
                   "or applause (the paper's noise filter). Without --model: the default model and the one "
                   "trained on rebuilt speech (cnn-lstm-10hz-denoise) together, their posteriors averaged "
                   "(with --ray: cnn-lstm-10hz-denoise alone).")
@click.option("--max-segment", type=click.FloatRange(0.5, 3.0), default=3.0, show_default=True,
              metavar="SECONDS", help="Longest segment (the paper's T).")
@click.option("--context", type=click.Choice(["file", "all"]), default="file", show_default=True,
              help="What the model's context normalisation compares each segment with: the speech of its own "
                   "file (within 5 minutes), or all speech of all inputs together, for a collection of short "
                   "clips of the same voices (results then come once every input is read).")
@click.option("--audio-stream", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Which audio stream of each input to analyse, counted from 0.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Where the model runs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Segments per forward pass; lower it if the GPU runs out of memory.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="auto: bf16 where the hardware runs it fast (AMX CPUs, recent GPUs), else fp32.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS|auto|local]",
              help="Spread the work over a Ray cluster: local starts one on this machine, auto attaches to the "
                   "running one, ADDRESS to that head node. Put it after the inputs, or write --ray=local. "
                   'Needs pip install "sercli[ray]".')
@click.option("--ray-actors", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --ray: model actors [default: one per GPU, else one per 4 CPUs].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings or summary on stderr; errors only.")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
def analyze(paths, model_name, fmt, output, output_dir, recursive, skip_existing, segmentation, denoise, max_segment,
            context, audio_stream, device, batch_size, precision, ray_address, ray_actors, quiet, debug) -> None:
    """Label every stretch of speech (at most 3 s) in PATH... with an emotion.

    PATH is a media file, a folder (its media files; -r for subfolders) or - to read one
    path per line from stdin. Output goes to stdout as CSV unless -o, --output-dir or
    --format say otherwise; messages go to stderr. Exit status: 0 all inputs analysed,
    1 some input failed, 2 usage or model error.
    """
    if output != "-" and output_dir is None and (output.endswith(("/", os.sep)) or Path(output).is_dir()):
        output_dir, output = Path(output), "-"  # `find ... | sercli analyze - -o out/`: one output per input
        if output_dir.exists() and not output_dir.is_dir():  # what --output-dir's check says of it
            raise click.BadParameter(f"Directory {str(output_dir)!r} is a file.", param_hint="'-o' / '--output'")
    if skip_existing and output_dir is None:
        raise click.UsageError("--skip-existing needs --output-dir (or -o DIR/)")
    if output_dir is not None and output != "-":
        raise click.UsageError("give either -o/--output or --output-dir, not both")

    # Decoding, voice activity and the network share the cores: OpenMP threads that sleep when
    # idle instead of spinning leave them to the others (125x against 110x realtime here). It
    # only takes effect when set before torch loads, as it is for the command line.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .predict import DeviceOutOfMemory, FileFailure, Pipeline
    from .segment import SegmentationConfig
    from .weights import DEFAULT_DENOISE_MODEL, DENOISE_MODEL, ModelError, load_models
    from .writers import WRITERS, AtomicFile, write_one

    if ray_actors is not None and ray_address is None:
        raise click.UsageError("--ray-actors needs --ray")
    if context == "all" and ray_address is not None:
        raise click.UsageError("--context all needs every input in one process: leave out --ray")
    segmenting = SegmentationConfig(mode=segmentation, max_segment_s=max_segment)
    try:
        if model_name is None and denoise:  # --ray runs one model: the modified one alone
            model_name = DENOISE_MODEL if ray_address is not None else DEFAULT_DENOISE_MODEL
        models = load_models(model_name, device=device, precision=precision)
        if denoise and not any(m.features.denoise for m in models):
            raise ModelError(f"{model_name}: trained on normal spectrograms; --denoise needs a model trained with "
                             "`sercli train --denoise` (or leave out --model)")
        if ray_address is not None and len(models) > 1:
            raise ModelError(f"{model_name}: --ray runs one model, not an ensemble")
        pipeline = Pipeline(models, segmenting, batch_size, audio_stream, context)
    except (ModelError, ValueError) as exc:
        _say(None, "error", str(exc))
        sys.exit(EXIT_USAGE)
    model = models[0]
    if ray_address is not None:
        from .cluster import ClusterError, connect

        try:
            connect(ray_address)
        except ClusterError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_USAGE)

    progress = _progress(quiet)
    console = progress.console if progress is not None else None
    stats = {"files": 0, "failed": 0, "skipped": 0, "audio_s": 0.0}
    started = time.monotonic()
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task("analysing", total=None, total_files="?", hours=0.0, speed=0.0)

    inputs = _inputs(paths, recursive)
    if "-" not in paths:  # known in advance: the bar can show a total
        inputs = list(inputs)
        if progress is not None:
            progress.update(task, total=len(inputs), total_files=len(inputs))

    def on_audio(seconds: float) -> None:
        stats["audio_s"] += seconds
        if progress is not None:
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(task, hours=stats["audio_s"] / 3600, speed=stats["audio_s"] / elapsed)

    targets: dict[str, Path] = {}

    def sources() -> Iterator[str]:
        for path in inputs:
            if output_dir is not None:
                target = output_dir / output_name(path, fmt)
                if skip_existing and target.exists():
                    stats["skipped"] += 1
                    if progress is not None:
                        progress.update(task, advance=1)
                    continue
                targets[path] = target
            yield path

    combined = None
    writer = None
    if output_dir is None:
        combined = None if output == "-" else AtomicFile(output)
        stream = sys.stdout if combined is None else combined.handle
        writer = WRITERS[fmt](stream, pipeline.labels)

    exit_code = EXIT_OK
    try:
        if ray_address is None:
            results = pipeline.run(sources(), on_audio)
        else:
            from . import cluster

            results = cluster.run(sources(), model.path, model, segmenting, batch_size, audio_stream, device,
                                  precision, ray_actors, on_audio)
        for result in results:
            stats["files"] += 1
            if progress is not None:
                progress.update(task, advance=1)
            if isinstance(result, FileFailure):
                stats["failed"] += 1
                _say(console, "error", f"{result.file}: {result.error}")
                if debug and result.detail:
                    click.echo(result.detail, err=True)
                continue
            if not quiet:
                for warning in result.warnings:
                    _say(console, "warning", f"{result.file}: {warning}")
            if output_dir is not None:
                try:
                    write_one(targets.pop(result.file), result, fmt)
                except OSError as exc:
                    stats["failed"] += 1
                    _say(console, "error", f"{result.file}: cannot write output: {exc}")
            else:
                writer.write(result)
        if writer is not None:
            writer.close()
        if combined is not None:
            combined.commit()
    except DeviceOutOfMemory as exc:
        _say(console, "error", str(exc))
        exit_code = EXIT_FAILED
    except KeyboardInterrupt:
        _say(console, "error", "interrupted; outputs already completed are kept")
        exit_code = EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): stop quietly
        exit_code = EXIT_FAILED
    except OSError as exc:
        _say(console, "error", f"cannot write output: {exc}")
        exit_code = EXIT_FAILED
    finally:
        if combined is not None:
            combined.discard()
        if progress is not None:
            progress.stop()
    if exit_code != EXIT_OK:
        sys.exit(exit_code)

    elapsed = time.monotonic() - started
    if not quiet:
        speed = stats["audio_s"] / max(elapsed, 1e-6)
        line = (f"analysed {stats['files'] - stats['failed']} of {stats['files']} file(s), "
                f"{stats['audio_s'] / 60:.1f} min of audio in {elapsed:.1f} s ({speed:.0f}x realtime)")
        if stats["skipped"]:
            line += f", skipped {stats['skipped']} with existing output"
        if stats["failed"]:
            line += f"; {stats['failed']} failed"
        click.echo(f"sercli: {line}", err=True)
    sys.exit(EXIT_FAILED if stats["failed"] else EXIT_OK)


def _corpus_options(verb: str, fold_help: str):
    """The options that choose labelled speech and its folds, shared by train and evaluate."""
    options = [
        click.option("--corpus", "corpora", multiple=True, required=True, metavar="NAME=PATH",
                     help=f"A corpus to {verb}, repeatable: manifest=FILE.csv (columns path, emotion, speaker[, fold]), "
                          "ravdess=DIR (Actor_NN folders), nemo=DIR (data.tsv + samples/) or iemocap=DIR (Session1..5)."),
        click.option("--include-scripted", is_flag=True,
                     help="IEMOCAP: use scripted dialogs too (default: improvised only)."),
        click.option("--excited-as-happy", is_flag=True, help="IEMOCAP: count 'excited' as happy."),
        click.option("--folds", "folds_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="CSV speaker,fold assigning every speaker to a fold (e.g. ../shared/data/folds.csv). "
                          "IEMOCAP's folds are its sessions."),
        click.option("--fold", default=None, metavar="all|none|N", help=fold_help),
        click.option("--validation", type=click.Choice(["auto", "train", "fold"]), default="auto", show_default=True,
                     help="Validation speakers: drawn from the training folds (train), or each speaker of the "
                          "held-out fold in turn with the others testing (fold: IEMOCAP's protocol, both roles). "
                          "auto: fold for IEMOCAP alone, else train."),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def _load_corpora(corpora, include_scripted, excited_as_happy, folds_path):
    from .corpora import assign_folds, read_corpus, read_folds

    utterances = []
    for spec in corpora:
        utterances += read_corpus(spec, scripted=include_scripted, excited_as_happy=excited_as_happy)
    if folds_path is not None:
        utterances = assign_folds(utterances, read_folds(folds_path))
    return utterances


@main.command()
@_corpus_options("train on", "Test fold(s) to run [default: all]; none trains one model on every speaker, "
                 "with validation speakers held out.")
@click.option("--topology", type=click.Choice(["cnn-lstm", "cnn5", "two-step"]), default="cnn-lstm",
              show_default=True,
              help="3 conv layers + BiLSTM (paper Figure 1), the 5-conv CNN, or the paper's two-step predictor: "
                   "a CNN-LSTM, then three binary CNN5 networks (neutral against angry, happy, sad) where it "
                   "says neutral, bundled in one checkpoint.")
@click.option("--first-step", default=None, metavar="RUN/{run}/model.pt",
              help="With --topology two-step: take each run's four-class network from this earlier training "
                   "run (same folds and validation) instead of training it again.")
@click.option("--grid", type=click.Choice(["10", "20"]), default="10", show_default=True, help="Frequency grid, Hz.")
@click.option("--window", type=click.Choice(["40", "20"]), default="40", show_default=True, help="Window, ms.")
@click.option("--denoise", is_flag=True,
              help="Train on the noise filter's spectrograms (voiced frames rebuilt from their pitch): the "
                   "model `sercli analyze --denoise` needs.")
@click.option("--context-norm/--no-context-norm", default=True, show_default=True,
              help="Standardise each frequency bin over the speaker's speech (in analysis: over the file's), "
                   "which keeps new speakers' voices from shifting every prediction the same way; the "
                   "checkpoint remembers it.")
@click.option("--augment-noise", "augment_noises", multiple=True, metavar="DIR|babble",
              help="Also train on a noisy copy of the training speech, repeatable: babble (6-10 overlapping "
                   "utterances of the run's own training speakers), a folder of noise files, or a folder of such "
                   "folders (each one source). Each utterance's copy gets one source and SNR, drawn from --seed; "
                   "validation and test speech stay clean.")
@click.option("--augment-snr", default="0:20", show_default=True, metavar="LOW:HIGH",
              help="SNR range in dB of the noisy copy (uniform).")
@click.option("--augment-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Chance that a training step takes a segment's noisy copy instead of the clean one.")
@click.option("--epochs", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most epochs per run (constant learning rate after a one-epoch warm-up).")
@click.option("--average-from", type=click.IntRange(min=0), default=4, show_default=True,
              help="Average the weights at the end of every epoch from this one on (stochastic weight "
                   "averaging); the average is validated and the best one kept. 0: keep the single epoch "
                   "with the best validation accuracy.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation accuracy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Segments per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW peak learning rate.")
@click.option("--oversample", is_flag=True,
              help="Draw batches with equal class shares instead of weighting the loss by inverse class size.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for initialisation, batch order, augmentation and the validation speakers.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Any other training or network setting, repeatable: a field of sercli.train.TrainConfig "
                   "(e.g. weight_decay=1e-4, label_smoothing=0, freq_warp=0, select_from=1) or of "
                   "sercli.model.ModelConfig (e.g. summary=last, lstm_dropout=0) or of "
                   "sercli.features.FeatureConfig (e.g. e_noise_db=-50). Network and feature settings are saved "
                   "in the checkpoint.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]", help="Where to train.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: a folder per run with model.pt and metrics.json, results.md and results.json; "
                   "rerunning the same command resumes it.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for cached spectrograms (default: OUT/cache).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that decode and featurise the speech (default: the CPU count, at most 8).")
def train(corpora, include_scripted, excited_as_happy, folds_path, fold, validation, topology, first_step, grid,
          window, denoise, context_norm, augment_noises, augment_snr, augment_share,
          epochs, average_from, patience, batch_size, lr, oversample, seed, settings, device, out_dir, cache_dir,
          workers) -> None:
    """Train and cross-validate a model on labelled speech.

    Each utterance is cut into segments of at most 3 s as at analysis time; utterance scores
    average its segments' posteriors. Weighted accuracy (WA) is the share right, unweighted
    (UA) the mean recall per class, both on the test speakers of each fold.
    """
    from dataclasses import fields

    from .corpora import CorpusError, plan_splits
    from .experiment import NoiseAugmentation, run_training
    from .features import FeatureConfig
    from .model import ModelConfig
    from .noise import NoiseError, noise_categories
    from .train import TrainConfig, override
    from .weights import ModelError, resolve_device

    try:
        utterances = _load_corpora(corpora, include_scripted, excited_as_happy, folds_path)
        splits = plan_splits(utterances, fold or "all", validation, seed)
        target = resolve_device(device)
    except (CorpusError, ModelError) as exc:
        _say(None, "error", str(exc))
        sys.exit(EXIT_USAGE)
    if first_step and topology != "two-step":
        raise click.UsageError("--first-step needs --topology two-step")
    two_step = topology == "two-step"
    model_config = ModelConfig(topology="cnn-lstm" if two_step else topology, grid_hz=int(grid), window_ms=int(window))
    train_config = TrainConfig(epochs=epochs, swa_from=average_from, patience=patience, batch_size=batch_size,
                               lr=lr, oversample=oversample, seed=seed)
    pairs = dict(item.partition("=")[::2] for item in settings)
    named = {"topology", "grid_hz", "window_ms", "denoise", "context_norm", "epochs", "swa_from", "patience",
             "batch_size", "lr", "oversample", "seed"}  # set by their own options
    known = {f.name for config in (ModelConfig, TrainConfig, FeatureConfig) for f in fields(config)}
    unknown = sorted(set(pairs) - known)
    if unknown or named & set(pairs) or any("=" not in item for item in settings):
        raise click.BadParameter(f"not a NAME=VALUE of a setting without its own option: "
                                 f"{', '.join(unknown or sorted(named & set(pairs)) or settings)}",
                                 param_hint="--set")
    augmentation = None
    if augment_noises:
        low, _, high = augment_snr.partition(":")
        try:
            snr_range = (float(low), float(high or low))
        except ValueError:
            raise click.BadParameter(f"expected LOW:HIGH in dB, not {augment_snr!r}",
                                     param_hint="--augment-snr") from None
        try:
            augmentation = NoiseAugmentation(tuple(dict.fromkeys(
                source for given in augment_noises for source in
                (["babble"] if given == "babble" else [str(f) for f in noise_categories(given).values()]))),
                snr_range, augment_share, seed)
        except NoiseError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_USAGE)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--augment-snr") from None
    try:
        model_config, train_config = override(model_config, pairs), override(train_config, pairs)
        features = override(FeatureConfig(grid_hz=int(grid), window_ms=int(window), denoise=denoise,
                                          context_norm=context_norm), pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None
    command = " ".join(["sercli train", *(f"--corpus {c}" for c in corpora),
                        *(["--include-scripted"] if include_scripted else []),
                        *(["--excited-as-happy"] if excited_as_happy else []),
                        *([f"--folds {folds_path}"] if folds_path else []),
                        f"--fold {fold or 'all'} --validation {validation} --topology {topology} "
                        f"{f'--first-step {first_step} ' if first_step else ''}--grid {grid} "
                        f"--window {window}{' --denoise' if denoise else ''}"
                        f"{'' if context_norm else ' --no-context-norm'} "
                        + "".join(f"--augment-noise {n} " for n in augment_noises)
                        + (f"--augment-snr {augment_snr} --augment-share {augment_share:g} " if augment_noises else "")
                        + f"--epochs {epochs} "
                        f"--average-from {average_from} --patience {patience} --batch-size {batch_size} "
                        f"--lr {lr}{' --oversample' if oversample else ''} --seed {seed}",
                        *(f"--set {item}" for item in settings), f"--out {out_dir}"])
    try:
        run_training(utterances, splits, model_config, train_config, target, out_dir,
                     cache_dir or out_dir / "cache", command=command, denoise=denoise, two_step=two_step,
                     first_step=first_step, workers=workers or _default_workers(), features=features,
                     augmentation=augmentation)
    except (CorpusError, NoiseError) as exc:
        _say(None, "error", str(exc))
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--model", "model_specs", multiple=True, metavar="NAME|PATH",
              help="Checkpoint to score, repeatable (default: the installed default model). '{run}' in a path "
                   "stands for each run's folder name, so RUN/{run}/model.pt scores every fold model of a "
                   "training run on its own test speakers. A+B scores an ensemble: the mean of the models' "
                   "posteriors of each segment.")
@_corpus_options("score on", "Score only the test speakers of these folds (all|N), with the same runs as "
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
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
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
                   "music_* ones if it has any) [default: ../shared/data/noise].")
def evaluate(model_specs, corpora, include_scripted, excited_as_happy, folds_path, fold, validation, noises, snrs,
             noise_seed, device, precision, cache_dir, output, workers, context, context_prior_s, programmes,
             programme_minutes, programme_music) -> None:
    """Score checkpoints on labelled speech: WA, UA and confusion, per utterance and segment.

    With --noise, each noise category at each --snr is a further condition; several models and
    conditions end in one table, condition by model (the paper's Table 2 for a normal and a
    --denoise model). With --programmes, each model is also scored on film-like programmes of
    each run's test speakers, analysed exactly as `sercli analyze` analyses a file.
    """
    import json

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in analyze: featurising processes share the cores
    from .corpora import CorpusError, plan_splits
    from .experiment import CLEAN, Condition, conditions_table, evaluation_table, run_evaluation
    from .noise import NoiseError, noise_categories
    from .weights import ModelError, atomic_write_bytes

    if snrs and not noises:
        raise click.UsageError("--snr needs --noise")
    if not programmes and (programme_minutes is not None or programme_music is not None):
        raise click.UsageError("--programme-minutes and --programme-music need --programmes N")
    music = []
    if programmes:
        from .programmes import ProgrammeError, music_files

        folder = programme_music or Path("..") / "shared" / "data" / "noise"
        try:
            music = music_files(folder)
        except ProgrammeError as exc:
            hint = "" if programme_music else " (give --programme-music DIR)"
            _say(None, "error", f"--programmes needs music for its beds: {exc}{hint}")
            sys.exit(EXIT_USAGE)
    try:
        conditions = [CLEAN]
        for given in noises:
            folders = {"babble": None} if given == "babble" else noise_categories(given)
            for snr in snrs or (0.0,):
                conditions += [Condition(name, snr, str(folder) if folder else None, noise_seed)
                               for name, folder in folders.items()]
        utterances = _load_corpora(corpora, include_scripted, excited_as_happy, folds_path)
        if fold == "none":
            raise CorpusError("--fold none trains on every speaker; to score every utterance, leave out --fold")
        splits = plan_splits(utterances, fold, validation) if fold else []
        if any("{run}" in spec for spec in model_specs) and not splits:
            raise CorpusError("--model with {run} needs --fold (and --folds unless the corpus has its own)")
        clean: dict = {}  # decoded utterances, shared by the models
        scored: dict = {}  # each checkpoint's posteriors: A, B and A+B score A and B once
        results = [run_evaluation(utterances, splits, spec, device, precision, cache_dir,
                                  log=lambda line: click.echo(line, err=True), conditions=tuple(conditions),
                                  workers=workers or _default_workers(), clean=clean if len(conditions) > 1 else None,
                                  context=context, context_prior_s=context_prior_s, scored_segments=scored)
                   for spec in (model_specs or (None,))]
    except (CorpusError, ModelError, NoiseError) as exc:
        _say(None, "error", str(exc))
        sys.exit(EXIT_USAGE)
    if programmes:
        import tempfile

        from .programmes import ProgrammeConfig, score_programmes

        config = ProgrammeConfig(minutes=programme_minutes or ProgrammeConfig.minutes, seed=noise_seed)
        built: dict = {}  # every model is scored on the same programmes
        loaded: dict = {}
        try:
            with tempfile.TemporaryDirectory(prefix="sercli-programmes-") as folder:
                for spec, result in zip(model_specs or (None,), results):
                    result["programmes"] = score_programmes(
                        utterances, splits, spec, programmes, config, music, Path(folder), device, precision,
                        built, loaded, log=lambda line: click.echo(line, err=True))
        except ModelError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_USAGE)
        except ProgrammeError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_FAILED)
    if len(results) == 1 and len(conditions) == 1:
        click.echo(evaluation_table(results[0]), nl=False)
    else:
        click.echo(conditions_table(results), nl=False)
    for result in results:
        if "programmes" in result:
            from .programmes import programme_table

            click.echo("\n" + programme_table(result["programmes"]), nl=False)
    if output is not None:
        atomic_write_bytes(output, json.dumps(results[0] if len(results) == 1 else results, indent=1).encode())


@main.command()
@click.argument("path", metavar="FILE")
@click.option("--start", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Where the segment starts in FILE.")
@click.option("--duration", type=click.FloatRange(0.1, 3.0), default=3.0, show_default=True, metavar="SECONDS",
              help="Segment length (the model's inputs are at most 3 s).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write [default: FILE's name + -START s.png in the current folder].")
@click.option("--grid", type=click.Choice(["10", "20"]), default="10", show_default=True, help="Frequency grid, Hz.")
@click.option("--window", type=click.Choice(["40", "20"]), default="40", show_default=True, help="Window, ms.")
@click.option("--audio-stream", type=click.IntRange(min=0), default=0, show_default=True, metavar="N")
def plot(path, start, duration, output, grid, window, audio_stream) -> None:
    """Draw a segment's normal and denoised spectrograms side by side (PNG), to see what --denoise does.

    Both are the model's normalised inputs; the pitch track that drives the noise filter is drawn
    over the denoised one. Needs matplotlib: pip install "sercli[plot]".
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _say(None, "error", 'sercli plot needs matplotlib: pip install "sercli[plot]"')
        sys.exit(EXIT_USAGE)
    from .audio import AudioError
    from .features import FeatureConfig
    from .plot import plot_segment

    out = output or Path(f"{Path(path).name}-{start:g}s.png")
    try:
        plot_segment(path, start, duration, out, FeatureConfig(grid_hz=int(grid), window_ms=int(window)), audio_stream)
    except AudioError as exc:
        _say(None, "error", f"{path}: {exc}")
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        _say(None, "error", f"{out}: cannot write: {exc}")
        sys.exit(EXIT_FAILED)
    click.echo(str(out))


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@main.command()
def models() -> None:
    """List the installed models with their cross-validation metrics."""
    from .weights import DEFAULT_MODEL, ModelError, installed_models, model_dirs, read_checkpoint

    found = installed_models()
    if not found:
        click.echo("no models installed (searched: " + ", ".join(str(d) for d in model_dirs()) + ")")
        return
    for name, path in found.items():
        try:
            checkpoint = read_checkpoint(path)
            meta, config = checkpoint["meta"], checkpoint["config"]
        except ModelError as exc:
            click.echo(f"{name}\tunusable: {exc}")
            continue
        metrics = meta.get("metrics", {})
        scores = ", ".join(f"{k} {v:.1%}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                           if not isinstance(v, dict)) or "no metrics recorded"
        default = " (default)" if name == DEFAULT_MODEL else ""
        kind = config["topology"]
        if checkpoint.get("kind") == "two-step":
            kind = f"two-step ({config['topology']}, then {len(checkpoint['members'])} binary networks)"
        if meta.get("features", {}).get("denoise"):
            kind += ", denoising"
        click.echo(f"{name}{default}\t{kind}, {config['grid_hz']} Hz grid, "
                   f"{config['window_ms']} ms window\t{scores}\t{path}")


if __name__ == "__main__":
    main()
