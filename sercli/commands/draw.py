"""`sercli plot` and `sercli timeline`: pictures of what the model hears and what it found."""

from __future__ import annotations

from pathlib import Path

import click

from ..report import EXIT_FAILED, EXIT_USAGE, fail
from .common import check_output, tune_for_batches


@click.command()
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
    _need_matplotlib("plot")
    from ..audio import AudioError
    from ..features import FeatureConfig
    from ..plot import plot_segment

    out = output or Path(f"{Path(path).name}-{start:g}s.png")
    check_output(out)
    try:
        plot_segment(path, start, duration, out, FeatureConfig(grid_hz=int(grid), window_ms=int(window)), audio_stream)
    except AudioError as exc:
        fail(f"{path}: {exc}", EXIT_FAILED)
    except OSError as exc:
        fail(f"{out}: cannot write: {exc}", EXIT_FAILED)
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


@click.command(epilog=TIMELINE_EXAMPLES)
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

    _need_matplotlib("timeline")
    from ..timeline import draw_timeline

    out = output or Path(f"{Path(path).name}.png")
    check_output(out)
    if Path(path).suffix.lower() == ".json":
        context_of = click.get_current_context()
        given = [name for name in MEDIA_ONLY if context_of.get_parameter_source(name).name == "COMMANDLINE"]
        if given:
            options = ", ".join("--" + ("model" if n == "model_name" else n.replace("_", "-")) for n in given)
            raise click.UsageError(f"{options}: for a media input; {path} is already analysed")
        document = _read_analysis(path)
    else:
        document = _analyse(path, dict(segmentation=segmentation, max_segment_s=max_segment, denoise=denoise,
                                       context=context, audio_stream=audio_stream, device=device,
                                       precision=precision), model_name)
    try:
        draw_timeline(document, out, merge_gap)
    except OSError as exc:
        fail(f"{out}: cannot write: {exc}", EXIT_FAILED)
    click.echo(str(out))


def _need_matplotlib(command: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(f'sercli {command} needs matplotlib: pip install "sercli[plot]"', EXIT_USAGE)


def _read_analysis(path: str) -> dict:
    """The one file's result in a `sercli analyze --format json` output; exit 1 if unreadable."""
    import json

    from ..timeline import TimelineError, one_result

    try:
        with open(path, encoding="utf-8") as handle:
            return one_result(json.load(handle), path)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}", EXIT_FAILED)
    except json.JSONDecodeError as exc:
        fail(f"{path}: not JSON ({exc})", EXIT_FAILED)
    except TimelineError as exc:
        fail(str(exc), EXIT_FAILED)


def _analyse(path: str, options: dict, model_name: str | None) -> dict:
    """The JSON document of a media file analysed as `sercli analyze` would."""
    tune_for_batches()
    from ..analysis import AnalysisError, analyze
    from ..weights import ModelError
    from ..writers import result_to_dict

    try:
        return result_to_dict(analyze(path, model_name, **options))
    except (ModelError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    except AnalysisError as exc:
        fail(str(exc), EXIT_FAILED)
