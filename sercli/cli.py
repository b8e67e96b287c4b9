"""`sercli`: the command line. Thin: validate options, load the model once, loop, report."""

from __future__ import annotations

import itertools
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import click

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
FORMATS = ("csv", "json", "jsonl", "srt", "vtt", "textgrid", "audacity")  # sercli.writers.WRITERS
ONE_FILE_FORMATS = ("srt", "vtt", "textgrid", "audacity")  # one input's results per output

ANALYZE_EXAMPLES = """
\b
Examples:
  sercli analyze interview.mp3                  CSV on stdout
  sercli analyze movie.mkv -o movie.json        the format from the extension
  sercli analyze movie.mkv -o movie.srt         emotion subtitles for a player
  sercli analyze movie.mkv -f all -o out/       every format, one file each
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
            for line in sys.stdin.buffer:
                line = os.fsdecode(line.rstrip(b"\r\n"))  # any bytes a file name may hold
                if line.strip():
                    yield line
        elif Path(given).is_dir():
            for path in _media_in(Path(given), recursive):
                yield str(path)
        else:
            yield given


# How media files begin: WAV, FLAC, Ogg, ID3-tagged MP3, Matroska/WebM, AIFF, AMR, ASF/WMA, and
# bare MPEG audio frames (MP3, ADTS AAC); MP4/MOV say "ftyp" at byte 4.
MEDIA_SIGNATURES = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\x1a\x45\xdf\xa3", b"FORM", b"#!AMR", b"0&\xb2u",
                    b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b"\xff\xf1", b"\xff\xf9")


def _stdin_is_not_paths() -> bool:
    """Whether what waits on stdin is not a list of paths (audio piped in, say): NUL bytes, a
    first block that is not UTF-8, or a known media signature. Looks without consuming."""
    buffer = sys.stdin.buffer
    if hasattr(buffer, "peek"):
        head = buffer.peek(4096)[:4096]
    elif buffer.seekable():
        where = buffer.tell()
        head = buffer.read(4096)
        buffer.seek(where)
    else:
        return False
    if b"\0" in head or head.startswith(MEDIA_SIGNATURES) or head[4:8] == b"ftyp":
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return False  # just a character cut at the block's end
        # Names in other encodings (Latin-1 on old disks) are paths still, if they exist.
        lines = [line.rstrip(b"\r") for line in head.split(b"\n")[:-1]]
        return not lines or not all(os.path.lexists(line) for line in lines if not _is_utf8(line))
    return False


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _formats(fmt: str | None, output: str, output_dir: Path | None) -> tuple[str, ...]:
    """The formats to write: --format's, else the one -o's extension names, else csv."""
    from .writers import format_of

    if fmt == "all":
        if output_dir is None:
            raise click.UsageError("--format all writes one file per format and input: give --output-dir DIR")
        return FORMATS
    named = format_of(output) if output != "-" and output_dir is None else None
    if fmt is not None and named is not None and fmt != named:
        raise click.UsageError(f"--format {fmt} contradicts -o {output}, a {named} file by its extension")
    return (fmt or named or "csv",)


def output_name(path: str, fmt: str) -> Path:
    """The --output-dir file of an input: its path, made relative, plus the format's extension.

    `talk.mp3` -> `talk.mp3.csv`, `media/s1/ep1.mkv` -> `media/s1/ep1.mkv.csv` (`.TextGrid` for
    textgrid, `.txt` for audacity); an absolute path,
    or one that leaves the working directory, is mirrored whole (`/data/x.mp4` ->
    `data/x.mp4.csv`). The name depends only on the input, so different inputs never collide
    and a resumed batch finds the same names in any order.
    """
    normal = os.path.normpath(path)
    if os.path.isabs(normal) or normal.split(os.sep, 1)[0] == os.pardir:
        normal = os.path.abspath(path)
        normal = normal[len(os.path.splitdrive(normal)[0]):].lstrip(os.sep)
    from .writers import EXTENSIONS

    return Path(normal + EXTENSIONS[fmt])


def _check_analyze_io(paths: tuple[str, ...], output: str, output_dir: Path | None) -> None:
    """Usage errors (one line, exit 2) found before any input is decoded: an output that cannot
    be written, stdin asked for twice, or audio piped to `-`, which reads paths."""
    from .audio import STDIN_PATHS

    if output_dir is not None:
        _check_output(output_dir, folder=True)
    elif output != "-":
        _check_output(Path(output))
    reads_stdin = [p for p in paths if p == "-" or p in STDIN_PATHS]
    if len(reads_stdin) > 1:
        _say(None, "error", f"{' and '.join(reads_stdin)} both read stdin: give only one")
        sys.exit(EXIT_USAGE)
    if "-" in paths and _stdin_is_not_paths():
        _say(None, "error", "- reads paths from stdin, one per line, but what arrives is not text (audio?); "
                            "to analyse audio from a pipe, name it /dev/stdin: ffmpeg -i x.mkv -f wav - | "
                            "sercli analyze /dev/stdin")
        sys.exit(EXIT_USAGE)


def _check_output(path: Path, folder: bool = False) -> None:
    """A usage error (one line, exit 2) unless `path` (a file, or a folder to fill) can be written now."""
    from .outputs import OutputError, check_folder, check_writable

    try:
        if folder:
            check_folder(path)
        else:
            check_writable(path)
    except OutputError as exc:
        _say(None, "error", f"cannot write output {exc}")
        sys.exit(EXIT_USAGE)


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
@click.option("-f", "--format", "fmt", type=click.Choice([*FORMATS, "all"]), default=None,
              help="Output format [default: from -o's extension, else csv]. srt, vtt (subtitles), textgrid "
                   "(Praat) and audacity (labels) hold one input's emotion spans; all: every format, with "
                   "--output-dir.")
@click.option("-o", "--output", default="-", metavar="FILE|DIR/", show_default=True,
              help="Write all results to FILE (atomically); - is stdout. A folder (a name ending in / or an "
                   "existing folder) gets one output per input, as with --output-dir.")
@click.option("--merge-gap", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="SECONDS",
              help="Consecutive segments with the same label at most this far apart join one emotion span "
                   "(subtitles, labels, the JSON summary's spans).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
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
def analyze(paths, model_name, fmt, output, merge_gap, output_dir, recursive, skip_existing, segmentation, denoise,
            max_segment, context, audio_stream, device, batch_size, precision, ray_address, ray_actors, quiet,
            debug) -> None:
    """Label every stretch of speech (at most 3 s) in PATH... with an emotion.

    PATH is a media file, a folder (its media files; -r for subfolders), - to read one
    path per line from stdin, or /dev/stdin for audio piped in. Output goes to stdout as
    CSV unless -o, --output-dir or --format say otherwise; messages go to stderr. Exit
    status: 0 all inputs analysed, 1 some input failed, 2 usage or model error, 128 + N
    stopped by signal N (130 Ctrl-C, 143 SIGTERM).
    """
    if output != "-" and output_dir is None and (output.endswith(("/", os.sep)) or Path(output).is_dir()):
        output_dir, output = Path(output), "-"  # `find ... | sercli analyze - -o out/`: one output per input
    if skip_existing and output_dir is None:
        raise click.UsageError("--skip-existing needs --output-dir (or -o DIR/)")
    if output_dir is not None and output != "-":
        raise click.UsageError("give either -o/--output or --output-dir, not both")
    formats = _formats(fmt, output, output_dir)
    if output_dir is None and formats[0] in ONE_FILE_FORMATS and (
            "-" in paths or len(list(itertools.islice(_inputs(paths, recursive), 2))) > 1):
        raise click.UsageError(f"--format {formats[0]} holds one input's results: with several inputs, "
                               "give --output-dir (one file per input)")
    _check_analyze_io(paths, output, output_dir)

    # Decoding, voice activity and the network share the cores: OpenMP threads that sleep when
    # idle instead of spinning leave them to the others (125x against 110x realtime here). It
    # only takes effect when set before torch loads, as it is for the command line.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .predict import DeviceOutOfMemory, FileFailure, Pipeline
    from .segment import SegmentationConfig
    from .outputs import OutputFile
    from .weights import DEFAULT_DENOISE_MODEL, DENOISE_MODEL, ModelError, load_models, require_denoising
    from .writers import WRITERS, write_one

    if ray_actors is not None and ray_address is None:
        raise click.UsageError("--ray-actors needs --ray")
    if context == "all" and ray_address is not None:
        raise click.UsageError("--context all needs every input in one process: leave out --ray")
    segmenting = SegmentationConfig(mode=segmentation, max_segment_s=max_segment)
    try:
        if model_name is None and denoise:  # --ray runs one model: the modified one alone
            model_name = DENOISE_MODEL if ray_address is not None else DEFAULT_DENOISE_MODEL
        models = load_models(model_name, device=device, precision=precision)
        if denoise:
            require_denoising(models, model_name)
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

    from .progress import AnalysisProgress

    progress = AnalysisProgress(enabled=not quiet and sys.stderr.isatty())
    console = progress.console
    stats = {"files": 0, "failed": 0, "skipped": 0}
    inputs = _inputs(paths, recursive)
    if "-" not in paths:  # known in advance: the bar can show a total
        inputs = list(inputs)
    progress.start(inputs if isinstance(inputs, list) else None)

    targets: dict[str, list[tuple[Path, str]]] = {}

    def sources() -> Iterator[str]:
        for path in inputs:
            if output_dir is not None:
                target = [(output_dir / output_name(path, f), f) for f in formats]
                if skip_existing and all(t.exists() for t, _ in target):
                    stats["skipped"] += 1
                    progress.skipped(path)
                    continue
                targets[path] = target
            yield path

    combined = None
    writer = None
    results = iter(())
    exit_code, message = EXIT_OK, None  # the message is said once the bar is gone
    try:
        if output_dir is None:
            if output == "-" and hasattr(sys.stdout, "reconfigure"):
                sys.stdout.reconfigure(errors="surrogateescape")  # names' own bytes, as in a file
            combined = None if output == "-" else OutputFile(output)
            stream = sys.stdout if combined is None else combined.handle
            writer = WRITERS[formats[0]](stream, pipeline.labels)
        if ray_address is None:
            results = pipeline.run(sources(), on_progress=progress.position)
        else:
            from . import cluster

            results = cluster.run(sources(), model.path, model, segmenting, batch_size, audio_stream, device,
                                  precision, ray_actors)
        for result in results:
            stats["files"] += 1
            progress.file_done(result.file, 0.0 if isinstance(result, FileFailure) else result.duration_s)
            if isinstance(result, FileFailure):
                stats["failed"] += 1
                _say(console, "error", f"{result.file}: {result.error}")
                if debug and result.detail:
                    click.echo(result.detail, err=True)
                continue
            if not quiet:
                for warning in result.warnings:
                    _say(console, "warning", f"{result.file}: {warning}")
            result.merge_gap_s = merge_gap
            if output_dir is not None:
                try:
                    for target, f in targets.pop(result.file):
                        write_one(target, result, f)
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
        exit_code, message = EXIT_FAILED, str(exc)
    except KeyboardInterrupt:  # in-process callers; the command itself gets stopping.Interrupted
        exit_code, message = EXIT_INTERRUPTED, "interrupted; outputs already completed are kept"
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head): stop quietly
        exit_code = EXIT_FAILED
    except OSError as exc:
        exit_code, message = EXIT_FAILED, f"cannot write output: {exc}"
    finally:
        # In this order on every way out, a stop signal's included: the decoding thread and its
        # ffmpeg stop, the unfinished combined output goes, and the bar stops before any message.
        close = getattr(results, "close", None)
        if close is not None:
            close()
        if combined is not None:
            combined.discard()
        progress.stop()
    if message is not None:
        _say(None, "error", message)
    if exit_code != EXIT_OK:
        sys.exit(exit_code)

    elapsed = time.monotonic() - progress.started
    if not quiet:
        line = (f"analysed {stats['files'] - stats['failed']} of {stats['files']} file(s), "
                f"{progress.classified_s / 60:.1f} min of audio in {elapsed:.1f} s ({progress.speed:.0f}x realtime)")
        if stats["skipped"]:
            line += f", skipped {stats['skipped']} with existing output"
        if stats["failed"]:
            line += f"; {stats['failed']} failed"
        click.echo(f"sercli: {line}", err=True)
    sys.exit(EXIT_FAILED if stats["failed"] else EXIT_OK)


def _corpus_options(verb: str, fold_help: str, required: bool = True):
    """The options that choose labelled speech and its folds, shared by train and evaluate."""
    options = [
        click.option("--corpus", "corpora", multiple=True, required=required, metavar="NAME=PATH",
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


TRAIN_CONFIG = "sercli.toml"  # in the working directory: the [train] table holds train's options
TRAIN_CONFIG_EXAMPLE = """
  [train]
  corpus = ["manifest=data/ravdess/manifest.csv", "manifest=data/nemo/manifest.csv"]
  folds = "data/folds.csv"
  out = "runs/x"
  epochs = 20
"""
TRAIN_EXAMPLES = f"""
\b
Examples:
  sercli train --corpus manifest=data/ravdess/manifest.csv --folds data/folds.csv --out runs/x
  sercli train --fold all                  with corpus, folds and out in ./{TRAIN_CONFIG}
  sercli train --fold 1 --epochs 1         one quick fold, the rest from ./{TRAIN_CONFIG}
  sercli train --config denoise.toml --denoise --out runs/dn
\b
./{TRAIN_CONFIG} (paths relative to the working directory):
{TRAIN_CONFIG_EXAMPLE.strip(chr(10))}
"""
EVALUATE_EXAMPLES = """
\b
Examples:
  sercli evaluate --corpus manifest=my_calls.csv       the default model on every utterance
  sercli evaluate --model 'runs/x/{run}/model.pt' --corpus manifest=data/ravdess/manifest.csv \\
      --folds data/folds.csv --fold all               each fold model on its own test speakers
  sercli evaluate --model a.pt --model b.pt --model a.pt+b.pt --corpus manifest=data/nemo/manifest.csv \\
      --noise data/noise --snr 0 --snr 10             models by noise condition, in one table
"""


def _train_config(ctx: click.Context, path: Path | None) -> None:
    """Read the [train] table of `path` (or of ./sercli.toml when there is one) into the command's
    defaults, keyed by long option names with _ for -; options on the command line still win."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    if ctx.resilient_parsing:
        return
    source = path or Path(TRAIN_CONFIG)
    if path is None and not source.is_file():
        return
    try:
        with open(source, "rb") as handle:
            table = tomllib.load(handle).get("train")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}", ctx, param_hint="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{source}: not valid TOML: {exc}") from None
    if table is None:
        if path is not None:
            raise click.UsageError(f"{source}: no [train] table (an example:{TRAIN_CONFIG_EXAMPLE.rstrip()})")
        return
    if not isinstance(table, dict):
        raise click.UsageError(f"{source}: train is not a table; write [train] with key = value lines under it")
    options = {}
    for param in ctx.command.params:
        longest = max((o for o in param.opts if o.startswith("--")), key=len, default=None)
        if isinstance(param, click.Option) and longest and param.expose_value:
            options[longest[2:].replace("-", "_")] = param
    defaults = {}
    for key, value in table.items():
        param = options.get(key)
        if param is None:
            raise click.UsageError(f"{source}: [train] has no option {key!r}; the options are "
                                   + ", ".join(sorted(options)))
        if param.multiple and not isinstance(value, list):
            value = [value]
        if isinstance(param.type, (click.Choice, click.types.StringParamType)):
            value = [str(v) for v in value] if param.multiple else str(value)
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{source}: [train] {key} = {value!r}: {exc.format_message()}") from None
        defaults[param.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _load_corpora(corpora, include_scripted, excited_as_happy, folds_path):
    from .corpora import assign_folds, read_corpus, read_folds

    utterances = []
    for spec in corpora:
        utterances += read_corpus(spec, scripted=include_scripted, excited_as_happy=excited_as_happy)
    if folds_path is not None:
        utterances = assign_folds(utterances, read_folds(folds_path))
    return utterances


@main.command(epilog=TRAIN_EXAMPLES)
@_corpus_options("train on", "Test fold(s) to run [default: all]; none trains one model on every speaker, "
                 "with validation speakers held out.", required=False)
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
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder: a folder per run with model.pt and metrics.json, results.md and results.json; "
                   "rerunning the same command resumes it.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for cached spectrograms (default: OUT/cache).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that decode and featurise the speech (default: the CPU count, at most 8).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              is_eager=True, expose_value=False, callback=lambda ctx, param, value: _train_config(ctx, value),
              help=f"Read options from this TOML file's [train] table [default: ./{TRAIN_CONFIG} if there is one]; "
                   "options given here win.")
def train(corpora, include_scripted, excited_as_happy, folds_path, fold, validation, topology, first_step, grid,
          window, denoise, context_norm, augment_noises, augment_snr, augment_share,
          epochs, average_from, patience, batch_size, lr, oversample, seed, settings, device, out_dir, cache_dir,
          workers) -> None:
    """Train and cross-validate a model on labelled speech.

    Each utterance is cut into segments of at most 3 s as at analysis time; utterance scores
    average its segments' posteriors. Weighted accuracy (WA) is the share right, unweighted
    (UA) the mean recall per class, both on the test speakers of each fold.

    Any option can be declared once in a [train] table of ./sercli.toml (or of --config FILE),
    under its long name with _ for -: corpus = ["manifest=data/ravdess/manifest.csv"], folds = "folds.csv",
    out = "runs/x", epochs = 20, denoise = true.
    """
    missing = [name for name, value in (("--corpus", corpora), ("--out", out_dir)) if not value]
    if missing:
        raise click.UsageError(f"{' and '.join(missing)} missing: give {'them' if len(missing) > 1 else 'it'} here, "
                               f"or declare the run once in ./{TRAIN_CONFIG} (or a file given with --config), "
                               f"e.g.\n{TRAIN_CONFIG_EXAMPLE}")
    from dataclasses import fields

    from .corpora import CorpusError, plan_splits
    from .experiment import NoiseAugmentation, run_training
    from .features import FeatureConfig
    from .model import ModelConfig
    from .noise import NoiseError, noise_categories
    from .train import TrainConfig, override
    from .weights import ModelError, resolve_device

    _check_output(out_dir, folder=True)
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
    except OSError as exc:  # the run folder filled up or went away; completed epochs are kept
        if exc.filename is None:
            raise
        _say(None, "error", f"cannot write {exc.filename}: {exc.strerror}; rerun the same command to resume")
        sys.exit(EXIT_FAILED)


@main.command(epilog=EVALUATE_EXAMPLES)
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
    if output is not None:
        _check_output(output)
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
        try:
            atomic_write_bytes(output, json.dumps(results[0] if len(results) == 1 else results, indent=1).encode())
        except OSError as exc:
            _say(None, "error", f"cannot write output {output}: {exc.strerror or exc}")
            sys.exit(EXIT_FAILED)


@main.command()
@click.argument("path", metavar="FILE")
@click.option("--start", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Where the segment starts in FILE.")
@click.option("--duration", type=click.FloatRange(0.1, 3.0), default=3.0, show_default=True, metavar="SECONDS",
              help="Segment length (the model's inputs are at most 3 s).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
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
    _check_output(out)
    try:
        plot_segment(path, start, duration, out, FeatureConfig(grid_hz=int(grid), window_ms=int(window)), audio_stream)
    except AudioError as exc:
        _say(None, "error", f"{path}: {exc}")
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        _say(None, "error", f"{out}: cannot write: {exc}")
        sys.exit(EXIT_FAILED)
    click.echo(str(out))


TIMELINE_EXAMPLES = """
\b
Examples:
  sercli timeline film.mkv -o film.png          analyse, then draw
  sercli analyze film.mkv -o film.json && sercli timeline film.json -o film.png
  sercli timeline noisy.mp4 --denoise -o noisy.png
"""
MEDIA_ONLY = ("model_name", "denoise", "segmentation", "max_segment", "context", "audio_stream", "device",
              "precision")  # timeline options that mean nothing for a JSON input


@main.command(epilog=TIMELINE_EXAMPLES)
@click.argument("path", metavar="INPUT")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write [default: INPUT's name + .png in the current folder].")
@click.option("--merge-gap", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Same-label segments at most this far apart join one span [default: 1.0, or a JSON "
                   "input's own spans].")
@click.option("-m", "--model", "model_name", default=None, metavar="NAME|PATH",
              help="Media input: the model, as for analyze.")
@click.option("--denoise", is_flag=True, help="Media input: analyse as analyze --denoise does.")
@click.option("--segmentation", type=click.Choice(["speech", "fixed"]), default="speech", show_default=True,
              help="Media input: as for analyze.")
@click.option("--max-segment", type=click.FloatRange(0.5, 3.0), default=3.0, show_default=True, metavar="SECONDS",
              help="Media input: longest segment.")
@click.option("--context", type=click.Choice(["file", "all"]), default="file", show_default=True,
              help="Media input: as for analyze.")
@click.option("--audio-stream", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Media input: which audio stream.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="Media input: where the model runs.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="Media input: as for analyze.")
def timeline(path, output, merge_gap, model_name, denoise, segmentation, max_segment, context, audio_stream, device,
             precision) -> None:
    """Draw a file's emotions over time (PNG): the posteriors stacked over its speech, bin by bin,
    and the emotion spans shaded by confidence.

    INPUT is a media file, analysed first as `sercli analyze` would, or a `--format json` output of
    one file. Long files are drawn in bins (15 s for a 2-hour film), short ones in 0.1 s bins.
    Needs matplotlib: pip install "sercli[plot]".
    """
    import json

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _say(None, "error", 'sercli timeline needs matplotlib: pip install "sercli[plot]"')
        sys.exit(EXIT_USAGE)
    from .timeline import TimelineError, draw_timeline, one_result

    out = output or Path(f"{Path(path).name}.png")
    _check_output(out)
    from_json = Path(path).suffix.lower() == ".json"
    if from_json:
        context_of = click.get_current_context()
        given = [name for name in MEDIA_ONLY if context_of.get_parameter_source(name).name == "COMMANDLINE"]
        if given:
            options = ", ".join("--" + ("model" if n == "model_name" else n.replace("_", "-")) for n in given)
            raise click.UsageError(f"{options}: for a media input; {path} is already analysed")
        try:
            with open(path, encoding="utf-8") as handle:
                document = one_result(json.load(handle), path)
        except (OSError, UnicodeDecodeError) as exc:
            _say(None, "error", f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}")
            sys.exit(EXIT_FAILED)
        except json.JSONDecodeError as exc:
            _say(None, "error", f"{path}: not JSON ({exc})")
            sys.exit(EXIT_FAILED)
        except TimelineError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_FAILED)
    else:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from .predict import AnalysisError, analyze
        from .weights import ModelError
        from .writers import result_to_dict

        try:
            result = analyze(path, model_name, segmentation=segmentation, max_segment_s=max_segment, denoise=denoise,
                             context=context, audio_stream=audio_stream, device=device, precision=precision)
        except (ModelError, ValueError) as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_USAGE)
        except AnalysisError as exc:
            _say(None, "error", str(exc))
            sys.exit(EXIT_FAILED)
        document = result_to_dict(result)
    try:
        draw_timeline(document, out, merge_gap)
    except OSError as exc:
        _say(None, "error", f"{out}: cannot write: {exc}")
        sys.exit(EXIT_FAILED)
    click.echo(str(out))


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@main.command()
def models() -> None:
    """List the installed models and the accuracy a user can expect of each.

    UA is unweighted accuracy (the mean recall of the four emotions; chance 25%), WA weighted
    accuracy, both over five folds of speakers the model's recipe never saw. PROGRAMMES: films
    of several voices with music, as `sercli analyze` meets them; CLIPS: each clip analysed
    alone; SPEAKER: each test speaker normalised over all of their speech (an upper bound, not
    what a user gets). VALIDATION is the checkpoint's own selection set, not unseen speakers.
    """
    from .weights import DEFAULT_MODEL, ModelError, installed_models, model_dirs, read_checkpoint, recorded_scores

    found = installed_models()
    if not found:
        click.echo("no models installed (searched: " + ", ".join(str(d) for d in model_dirs()) + ")")
        return
    rows = [("MODEL", "KIND", "PROGRAMMES UA", "CLIPS UA", "SPEAKER UA/WA", "VALIDATION WA", "FILE")]
    for name, path in found.items():
        label = name + (" (default)" if name == DEFAULT_MODEL else "")
        try:
            checkpoint = read_checkpoint(path)
        except ModelError as exc:
            rows.append((label, f"unusable: {exc}", "", "", "", "", str(path)))
            continue
        rows.append((label, _model_kind(checkpoint), *_model_scores(checkpoint["meta"], recorded_scores(path)),
                     str(path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    click.echo("\nUA/WA: % of utterances over five folds of unseen speakers (sercli evaluate; README, "
               "'Training and evaluation'); - not measured.")


def _model_kind(checkpoint: dict) -> str:
    config = checkpoint["config"]
    kind = config["topology"]
    if checkpoint.get("kind") == "two-step":
        kind = f"two-step ({config['topology']} + {len(checkpoint['members'])} binary)"
    if checkpoint["meta"].get("features", {}).get("denoise"):
        kind += ", denoising"
    return f"{kind}, {config['grid_hz']} Hz, {config['window_ms']} ms"


def _model_scores(meta: dict, recorded: dict | None) -> tuple[str, str, str, str]:
    """PROGRAMMES UA, CLIPS UA, SPEAKER UA/WA and VALIDATION WA cells: recorded five-fold figures,
    else a fold model's own test figures (labelled with its fold), else dashes."""
    recorded = recorded or {}

    def view(name: str, both: bool = False) -> str:
        figures = recorded.get(name)
        if not isinstance(figures, dict):
            return "-"
        return f"{figures['ua']:.1f}" + (f" / {figures['wa']:.1f}" if both else "")

    speaker = view("speaker", both=True)
    metrics = meta.get("metrics", {})
    if speaker == "-" and "test_ua" in metrics:
        fold = meta.get("training", {}).get("test_fold")
        speaker = f"{100 * metrics['test_ua']:.1f} / {100 * metrics['test_wa']:.1f} (fold {fold} only)"
    valid = f"{100 * metrics['valid_wa']:.1f}" if isinstance(metrics.get("valid_wa"), float) else "-"
    return view("programmes"), view("clips"), speaker, valid


if __name__ == "__main__":
    main()
