"""`sercli analyze` as a library call: an AnalyzeRun (the command's options, validated) analysed
input after input into an OutputSink, with a progress bar. Returns the exit status."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from .report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, say


@dataclass
class AnalyzeRun:
    """What `sercli analyze` was asked to do; the fields mean what the options of the same names do."""

    paths: tuple[str, ...]
    formats: tuple[str, ...] = ("csv",)
    output: str = "-"  # a file, or - for stdout; used when output_dir is None
    output_dir: Path | None = None
    model_name: str | None = None
    merge_gap_s: float = 1.0
    recursive: bool = False
    skip_existing: bool = False
    segmentation: str = "speech"
    max_segment_s: float = 3.0
    denoise: bool = False
    context: str = "file"
    audio_stream: int = 0
    device: str = "auto"
    batch_size: int = 32
    precision: str = "auto"
    ray_address: str | None = None
    ray_actors: int | None = None
    quiet: bool = False
    debug: bool = False


def _pipeline(run: AnalyzeRun):
    """The loaded models and their Pipeline; a one-line error and exit 2 if they cannot be had."""
    from .predict import Pipeline
    from .segment import SegmentationConfig
    from .weights import DEFAULT_DENOISE_MODEL, DENOISE_MODEL, ModelError, load_models, require_denoising

    model_name = run.model_name
    try:
        if model_name is None and run.denoise:  # --ray runs one model: the modified one alone
            model_name = DENOISE_MODEL if run.ray_address is not None else DEFAULT_DENOISE_MODEL
        models = load_models(model_name, device=run.device, precision=run.precision)
        if run.denoise:
            require_denoising(models, model_name)
        if run.ray_address is not None and len(models) > 1:
            raise ModelError(f"{model_name}: --ray runs one model, not an ensemble")
        segmenting = SegmentationConfig(mode=run.segmentation, max_segment_s=run.max_segment_s)
        pipeline = Pipeline(models, segmenting, run.batch_size, run.audio_stream, run.context)
    except (ModelError, ValueError) as exc:
        say(None, "error", str(exc))
        sys.exit(EXIT_USAGE)
    if run.ray_address is not None:
        from .cluster import ClusterError, connect

        try:
            connect(run.ray_address)
        except ClusterError as exc:
            say(None, "error", str(exc))
            sys.exit(EXIT_USAGE)
    return pipeline


def analyze_batch(run: AnalyzeRun) -> int:
    """Analyse every input of `run` into its outputs; returns the exit status (0 all analysed,
    1 some input or output failed, 130 interrupted). Exits with 2 if the model cannot be loaded."""
    from .inputs import inputs
    from .predict import DeviceOutOfMemory
    from .progress import AnalysisProgress
    from .sink import OutputSink

    pipeline = _pipeline(run)
    progress = AnalysisProgress(enabled=not run.quiet and sys.stderr.isatty())
    sink = OutputSink(run.formats, run.output, run.output_dir, run.skip_existing, run.merge_gap_s, run.quiet,
                      run.debug, progress)
    paths = inputs(run.paths, run.recursive)
    if "-" not in run.paths:  # known in advance: the bar can show a total
        paths = list(paths)
    progress.start(paths if isinstance(paths, list) else None)
    results = iter(())
    exit_code, message = EXIT_OK, None  # the message is said once the bar is gone
    try:
        sink.open(pipeline.labels)
        if run.ray_address is None:
            results = pipeline.run(sink.wanted(paths), on_progress=progress.position)
        else:
            from . import cluster

            model = pipeline.model
            results = cluster.run(sink.wanted(paths), model.path, model, pipeline.segmentation, run.batch_size,
                                  run.audio_stream, run.device, run.precision, run.ray_actors)
        for result in results:
            sink.take(result)
        sink.commit()
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
        sink.discard()
        progress.stop()
    if message is not None:
        say(None, "error", message)
    if exit_code != EXIT_OK:
        return exit_code
    if not run.quiet:
        elapsed = time.monotonic() - progress.started
        click.echo("sercli: " + sink.summary(progress.classified_s, elapsed, progress.speed), err=True)
    return EXIT_FAILED if sink.failed else EXIT_OK
