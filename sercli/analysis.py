"""Analysis as a library call: `analyze` (the Python API: one file or signal, a FileResult) and
`analyze_batch` (`sercli analyze`: an AnalyzeRun, the command's options validated, analysed input
after input into an OutputSink with a progress bar; returns the exit status). Torch loads only
when they run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import click
import numpy as np

from .audio import SAMPLE_RATE
from .report import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, say
from .results import AnalysisError, FileFailure, FileResult
from .spans import MERGE_GAP_S

if TYPE_CHECKING:
    from .weights import Model


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
    context_window_s: float | None = None  # None: each model's own
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
    from .weights import (DEFAULT_ANALYSIS_MODEL, DEFAULT_DENOISE_MODEL, DENOISE_MODEL, VOICES_MODEL, ModelError,
                          is_routed, load_models, require_denoising)

    model_name = run.model_name
    try:
        if model_name is None and run.denoise:  # --ray runs one model: the modified one alone
            model_name = DENOISE_MODEL if run.ray_address is not None else DEFAULT_DENOISE_MODEL
        elif model_name is None:  # --ray: the films model of the default pair, for a cluster's long files
            model_name = VOICES_MODEL if run.ray_address is not None else DEFAULT_ANALYSIS_MODEL
        models = load_models(model_name, device=run.device, precision=run.precision)
        if run.denoise:
            require_denoising(models, model_name)
        if run.ray_address is not None and len(models) > 1:
            raise ModelError(f"{model_name}: --ray runs one model, not an ensemble or a routed pair")
        segmenting = SegmentationConfig(mode=run.segmentation, max_segment_s=run.max_segment_s)
        pipeline = Pipeline(models, segmenting, run.batch_size, run.audio_stream, run.context, run.context_window_s,
                            route=is_routed(model_name))
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


def analyze(path_or_array: str | np.ndarray, model: Model | Sequence[Model] | str | None = None, *,
            sample_rate: int = SAMPLE_RATE, segmentation: str = "speech", max_segment_s: float = 3.0,
            denoise: bool = False, context: str = "file", context_window_s: float | None = None,
            merge_gap_s: float = MERGE_GAP_S,
            audio_stream: int = 0, batch_size: int = 32, device: str = "auto", precision: str = "auto",
            name: str = "<array>", route: bool = False) -> FileResult:
    """Per-segment emotions of one file or one mono signal, as `sercli analyze` finds them.

    path_or_array: a media file path, or a 1-D float array at `sample_rate` Hz (resampled to
    16 kHz with ffmpeg). model: a loaded Model, several (an ensemble: their posteriors are
    averaged), an installed model's name or a checkpoint path, or such names joined by '+' (an
    ensemble) or two joined by '|' (a routed pair: the first for segments whose context holds
    under 10 s of speech, the second for the rest; loaded Models are routed with route=True).
    None: the default, the routed pair egemaps-mlp|egemaps-mlp-voices. The keywords mean what
    the options of the same names do:
    denoise=True without a model runs the default (denoising) model and the plain network
    (cnn-lstm-10hz) together, and
    with one needs a model trained on rebuilt speech among them; context="all" normalises a
    context-normalised model over all the file's speech instead of the speech around each
    segment, and context_window_s how many seconds of the file around each segment it is
    compared with (None: the model's own, 60 for the default model; 0: the segment alone);
    max_segment_s is the longest segment (s); merge_gap_s the largest gap (s) across
    which same-label segments join one span of `result.spans`. Raises AnalysisError when the
    input cannot be analysed, ModelError when the model cannot be loaded or used so.

    The command line also tunes the process for batches (OMP_WAIT_POLICY=PASSIVE before torch
    loads, glibc keeping freed memory: commands.common.tune_for_batches); this function leaves a
    caller's process as it is. Results are the same either way; for the command line's speed,
    call sercli.heap.retain_freed_memory() once.
    """
    from .audio import resample
    from .predict import Pipeline
    from .segment import SegmentationConfig
    from .weights import DEFAULT_ANALYSIS_MODEL, DEFAULT_DENOISE_MODEL, Model, is_routed, load_models, require_denoising

    spec = model
    if model is None:
        model = DEFAULT_DENOISE_MODEL if denoise else DEFAULT_ANALYSIS_MODEL
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        route = route or is_routed(model)
        model = load_models(model, device=device, precision=precision)
    if denoise:
        models = [model] if isinstance(model, Model) else list(model)
        named = isinstance(spec, str) or hasattr(spec, "__fspath__")
        require_denoising(models, spec if named else "+".join(m.name for m in models))
    if merge_gap_s < 0:
        raise ValueError(f"merge_gap_s must be 0 or more, not {merge_gap_s:g}")
    config = SegmentationConfig(mode=segmentation, max_segment_s=max_segment_s)
    if isinstance(path_or_array, (str, bytes)) or hasattr(path_or_array, "__fspath__"):
        source = str(path_or_array)
    else:
        signal = np.asarray(path_or_array, dtype=np.float32)
        if signal.ndim != 1:
            raise AnalysisError(f"{name}: expected a mono 1-D signal, got shape {signal.shape}")
        source = (name, resample(signal, sample_rate))
    (result,) = Pipeline(model, config, batch_size, audio_stream, context, context_window_s, route).run([source])
    if isinstance(result, FileFailure):
        raise AnalysisError(f"{result.file}: {result.error}")
    result.merge_gap_s = merge_gap_s
    return result
