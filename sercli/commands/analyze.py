"""`sercli analyze`: options in, one AnalyzeRun out, handed to sercli.analysis."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import click

from ..report import EXIT_USAGE, fail
from .common import check_output, tune_for_batches

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


@click.command(epilog=ANALYZE_EXAMPLES)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-m", "--model", "model_name", default=None, metavar="NAME|PATH",
              help="Installed model name (see `sercli models`) or checkpoint path; A+B averages the posteriors "
                   "of several (an ensemble); 'A|B' routes each segment, to B where its context holds 10 s of "
                   "speech or more, else to A. Default: 'egemaps-mlp|egemaps-mlp-voices', the first for clips "
                   "alone, the second for films (with --ray: egemaps-mlp-voices).")
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
              help="For speech under music as loud as the voice: instead of the default pair, the network "
                   "cnn-lstm-10hz-denoise, which hears voiced speech rebuilt from its pitch (the paper's noise "
                   "filter), together with the plain network on normal spectrograms (cnn-lstm-10hz), their "
                   "posteriors averaged; about a third slower. With --model: "
                   "needs a model trained on rebuilt speech (with --ray: cnn-lstm-10hz-denoise alone).")
@click.option("--max-segment", type=click.FloatRange(0.5, 3.0), default=3.0, show_default=True,
              metavar="SECONDS", help="Longest segment (the paper's T).")
@click.option("--context", type=click.Choice(["file", "all"]), default="file", show_default=True,
              help="What the model's context normalisation compares each segment with: the speech of its own "
                   "file (around it: --context-window), or all speech of all inputs together, for a collection "
                   "of short clips of the same voices (results then come once every input is read).")
@click.option("--context-window", "context_window_s", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --context file: how many seconds of the file around each segment it is compared with "
                   "[default: the model's own, 60 for the shipped models; 0: each segment by itself].")
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
            max_segment, context, context_window_s, audio_stream, device, batch_size, precision, ray_address,
            ray_actors, quiet, debug) -> None:
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
    _check_io(paths, output, output_dir)
    tune_for_batches()
    if ray_actors is not None and ray_address is None:
        raise click.UsageError("--ray-actors needs --ray")
    if context == "all" and context_window_s is not None:
        raise click.UsageError("--context-window is a window of each file: leave out --context all")
    if context == "all" and ray_address is not None:
        raise click.UsageError("--context all needs every input in one process: leave out --ray")
    from ..analysis import AnalyzeRun, analyze_batch

    sys.exit(analyze_batch(AnalyzeRun(
        paths, formats, output, output_dir, model_name=model_name, merge_gap_s=merge_gap, recursive=recursive,
        skip_existing=skip_existing, segmentation=segmentation, max_segment_s=max_segment, denoise=denoise,
        context=context, context_window_s=context_window_s, audio_stream=audio_stream, device=device,
        batch_size=batch_size, precision=precision, ray_address=ray_address, ray_actors=ray_actors, quiet=quiet,
        debug=debug)))


def _inputs(paths, recursive):
    from ..inputs import inputs

    return inputs(paths, recursive)


def _formats(fmt: str | None, output: str, output_dir: Path | None) -> tuple[str, ...]:
    """The formats to write: --format's, else the one -o's extension names, else csv."""
    from ..writers import format_of

    if fmt == "all":
        if output_dir is None:
            raise click.UsageError("--format all writes one file per format and input: give --output-dir DIR")
        return FORMATS
    named = format_of(output) if output != "-" and output_dir is None else None
    if fmt is not None and named is not None and fmt != named:
        raise click.UsageError(f"--format {fmt} contradicts -o {output}, a {named} file by its extension")
    return (fmt or named or "csv",)


def _check_io(paths: tuple[str, ...], output: str, output_dir: Path | None) -> None:
    """Usage errors (one line, exit 2) found before any input is decoded: an output that cannot
    be written, stdin asked for twice, or audio piped to `-`, which reads paths."""
    from ..audio import STDIN_PATHS
    from ..inputs import stdin_is_not_paths

    if output_dir is not None:
        check_output(output_dir, folder=True)
    elif output != "-":
        check_output(Path(output))
    reads_stdin = [p for p in paths if p == "-" or p in STDIN_PATHS]
    if len(reads_stdin) > 1:
        fail(f"{' and '.join(reads_stdin)} both read stdin: give only one", EXIT_USAGE)
    if "-" in paths and stdin_is_not_paths():
        fail("- reads paths from stdin, one per line, but what arrives is not text (audio?); "
             "to analyse audio from a pipe, name it /dev/stdin: ffmpeg -i x.mkv -f wav - | "
             "sercli analyze /dev/stdin", EXIT_USAGE)
