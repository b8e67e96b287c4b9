"""The inference pipeline: decode -> speech segments -> spectrograms -> posteriors, file after file.

A producer thread decodes and segments the next file while the main thread classifies; segments
from consecutive files share batches, so many short clips keep the device as busy as one film.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, DecodeReport, stream_audio
from .context import ContextWindow, context_prior, routes_to_films, standardise_frames, voice_context
from .features import FeatureConfig, featurise, pitch_settings, pitch_tracker
from .segment import PitchTracker, Segment, SegmentationConfig, SpeechProbabilities, Segmenter
from .results import (AnalysisError, DeviceOutOfMemory, FileFailure, FileResult, SegmentResult,  # noqa: F401
                      Summary)
from .weights import Model, spec_of


Source = Union[str, tuple[str, np.ndarray]]  # a path, or (name, 16 kHz samples)


@dataclass
class _Pending:
    name: str
    results: list[SegmentResult | None] = field(default_factory=list)
    unscored: int = 0
    report: DecodeReport | None = None  # set when the file is fully segmented
    failure: FileFailure | None = None
    # Per model of the pipeline, for context-normalised ones: the file's context window, holding
    # the segments featurised but not yet classified until their context is, keyed by (result
    # index, start s, end s), with their valid frames (F, n). Not the Segment: its samples were
    # allocated by the decoding thread, and holding them for minutes fragmented that thread's
    # heap, so memory grew with the input's length.
    windows: list[ContextWindow | None] = field(default_factory=list)
    unfeaturised: int = 0
    progress_s: float = -np.inf  # start of the latest featurised segment
    # An ensemble's segments scored by some of its models: result index -> (sum of their
    # weighted posteriors, how many have scored it).
    partial: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.failure is not None or (self.report is not None and self.unscored == 0)


_DONE = object()
SORT_WINDOW = 4  # batches' worth of segments gathered and sorted by length before scoring
DECODE_AHEAD = 2  # files whose decoding starts while the current one is segmented


class _Decoding:
    """A file whose ffmpeg starts now, in a thread, and reads its first chunk (up to 30 s, so a
    short clip whole) while earlier files are still being segmented: a clip's decoding is mostly
    ffmpeg starting up, and one after another that set the pace for collections of short files.
    The rest of a long file streams when its turn comes, so memory stays at one chunk a file."""

    def __init__(self, name: str, audio_stream: int) -> None:
        self.report = DecodeReport()
        self._chunks = stream_audio(name, audio_stream, report=self.report)
        self._first: np.ndarray | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, name="sercli-decode-ahead", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._first = next(self._chunks, None)
        except BaseException as exc:  # noqa: BLE001 - re-raised where the file's turn comes
            self._error = exc

    def chunks(self) -> Iterator[np.ndarray]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._first is not None:
            first, self._first = self._first, None
            yield first
            yield from self._chunks

    def kill(self) -> None:
        """Kill its ffmpeg now, from any thread: a read blocked on a stalled input (a FIFO, a hung
        network share) then ends, so a stopping pipeline never waits on it."""
        decoder = self.report.decoder
        if decoder is not None and decoder.poll() is None:
            decoder.kill()

    def close(self) -> None:
        """Stop its ffmpeg, if it still runs (the pipeline stopped before this file's turn)."""
        self._thread.join()
        self._chunks.close()


def _vad_threads(models: Sequence[Model]) -> int:
    """onnxruntime threads for speech detection: 2 when every model runs on a GPU and the host has
    cores to spare, since there the one thread of speech detection sets the pace; 1 when the
    network shares the CPU and needs the cores (bench/GPU.md, bench/VAD.md)."""
    on_gpu = all(model.device.type != "cpu" for model in models)
    return 2 if on_gpu and (os.cpu_count() or 1) >= 4 else 1


def _produce(sources: Iterable[Source], config: SegmentationConfig, audio_stream: int, pitch: PitchTracker | None,
             out: queue.Queue, stop: threading.Event, on_audio: Callable[[float], None] | None,
             vad_threads: int, upcoming: deque) -> None:
    """Runs in a thread: puts ("file", name), ("segment", Segment), ("end", report) or ("error", failure).
    upcoming: the caller's empty deque, where it keeps (source, its _Decoding or None) for this
    file and the next DECODE_AHEAD, so that the caller can kill their ffmpeg when it stops."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    vad = SpeechProbabilities(vad_threads)
    pending = iter(sources)
    try:
        while True:
            for source in itertools.islice(pending, DECODE_AHEAD + 1 - len(upcoming)):
                upcoming.append((source, _Decoding(source, audio_stream) if isinstance(source, str) else None))
            if not upcoming:
                break
            source, decoding = upcoming[0]
            name, samples = (source, None) if isinstance(source, str) else source
            if not put(("file", name)):
                return
            try:
                if decoding is not None:
                    report, chunks = decoding.report, decoding.chunks()
                else:
                    report, chunks = DecodeReport(samples=len(samples)), iter([samples])
                segmenter = Segmenter(config, vad, pitch)
                for chunk in chunks:
                    if on_audio is not None:
                        on_audio(chunk.size / SAMPLE_RATE)
                    for segment in segmenter.feed(chunk):
                        if not put(("segment", segment)):
                            return
                for segment in segmenter.finish():
                    if not put(("segment", segment)):
                        return
                item = ("end", report)
            except AudioError as exc:
                item = ("error", FileFailure(name, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                item = ("error", FileFailure(name, f"unexpected error: {type(exc).__name__}: {exc}",
                                             traceback.format_exc()))
            if not put(item):
                return
            upcoming.popleft()
    finally:
        for _, decoding in upcoming:  # the current file's too, when stopped part-way
            if decoding is not None:
                decoding.close()
        put(_DONE)


def _raw_features(features: FeatureConfig) -> FeatureConfig:
    """What featurise's output depends on: models whose configs differ only in how their
    contexts standardise (context normalisation, window, voice types) share their features."""
    return replace(features, context_norm=False, context_window_s=FeatureConfig.context_window_s,
                   context_voices=False)


class Pipeline:
    """Classifies files (or arrays) with one model, or with several whose posteriors of each
    segment are averaged (an ensemble) or, for a routed pair, chosen by how much speech the
    segment's context holds; yields results in input order."""

    def __init__(self, model: Model | Sequence[Model], segmentation: SegmentationConfig = SegmentationConfig(),
                 batch_size: int = 32, audio_stream: int = 0, context: str = "file",
                 context_window_s: float | None = None, route: bool = False) -> None:
        """model: a Model, or a sequence of them, each fed its own features of the same segments
        (a normal and a denoising model can be combined). context: for a context-normalised
        model, what each segment is normalised over: the speech of its own file around it
        ("file"), or all speech of all inputs of the run ("all": for collections of short clips
        of the same voices; nothing is classified until every input is featurised, and every
        input's spectrograms are held until then). context_window_s: with "file", the seconds of
        the file around each segment (half on each side; 0: the segment alone) instead of each
        model's own (its FeatureConfig.context_window_s). route: `model` is a routed pair of
        context-normalised models, CLIPS and FILMS (sercli.weights.ROUTE_SEPARATOR): a segment
        whose context holds ROUTE_SPEECH_S of speech or more (sercli.context.routes_to_films) is
        scored by FILMS, any other by CLIPS. Models with the same features (bar their contexts)
        featurise each segment once between them."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if context not in ("file", "all"):
            raise ValueError(f"context must be file or all, not {context!r}")
        if context_window_s is not None and (context != "file" or not context_window_s >= 0):
            raise ValueError("a context window takes the file context and 0 seconds or more")
        self.models = [model] if isinstance(model, Model) else list(model)
        if context_window_s is not None:  # copies: the caller's models keep their own
            self.models = [replace(m, features=replace(m.features, context_window_s=float(context_window_s)))
                           for m in self.models]
        if not self.models:
            raise ValueError("no model given")
        self.labels = self.models[0].labels
        if any(m.labels != self.labels for m in self.models):
            raise ValueError("the models of an ensemble must have the same classes in the same order: "
                             + ", ".join(f"{m.name} ({' '.join(m.labels)})" for m in self.models))
        trackers = {tuple(pitch_settings(m.features).values()) for m in self.models if m.features.denoise}
        if len(trackers) > 1:
            raise ValueError("the denoising models of an ensemble must use the same pitch settings")
        self.pitch_features = next((m.features for m in self.models if m.features.denoise), None)
        if route and (len(self.models) != 2 or not all(m.features.context_norm for m in self.models)
                      or self.models[0].features.context_window_s != self.models[1].features.context_window_s):
            raise ValueError("a routed pair is two context-normalised models with the same context window: "
                             + ", ".join(m.name for m in self.models))
        self.route = route
        self._feature_keys = [(_raw_features(m.features), m.device) for m in self.models]
        self.name = spec_of((m.name for m in self.models), route)
        self.context = context
        max_samples = min(m.features.max_samples for m in self.models)
        if segmentation.max_segment_s * SAMPLE_RATE > max_samples:
            raise ValueError(f"max segment length is {max_samples / SAMPLE_RATE:g} s "
                             f"for this model, not {segmentation.max_segment_s:g} s")
        self.priors = [context_prior(m.meta) if m.features.context_norm else None for m in self.models]
        self.voices = [voice_context(m.meta) if m.features.context_norm else None for m in self.models]
        # Context-normalised models: held spectrograms live in reused blocks of one size, and a
        # batch is assembled in one reused buffer (each per model). Allocating them afresh,
        # between the large short-lived arrays of the spectrograms, fragmented the heap: memory
        # grew with length.
        self._blocks: list[list[torch.Tensor]] = [[] for _ in self.models]
        self._buffers: list[torch.Tensor | None] = [None for _ in self.models]
        self.segmentation = segmentation
        self._on_progress: Callable[[str, float], None] | None = None
        self.batch_size = batch_size
        self.audio_stream = audio_stream

    @property
    def model(self) -> Model:
        """The first (or only) model."""
        return self.models[0]

    def _windows(self) -> list[ContextWindow | None]:
        """One context window per context-normalised model: the file's (half its window either
        side of a segment), or with context "all" the whole run's."""
        return [ContextWindow(m.features.n_bins, prior,
                              m.features.context_window_s / 2 if self.context == "file" else np.inf, voices)
                if m.features.context_norm else None for m, prior, voices in zip(self.models, self.priors, self.voices)]

    def run(self, sources: Iterable[Source], on_audio: Callable[[float], None] | None = None,
            on_progress: Callable[[str, float], None] | None = None) -> Iterator[FileResult | FileFailure]:
        """Results of `sources` in their order. on_audio(seconds): each chunk as it is decoded;
        on_progress(name, seconds): how far into a file classification has come (the end of its
        latest classified segment), which lags decoding by the context window."""
        self._on_progress = on_progress
        events: queue.Queue = queue.Queue(maxsize=4 * self.batch_size)
        stop = threading.Event()
        decodings: deque = deque()
        producer = threading.Thread(
            target=_produce, args=(sources, self.segmentation, self.audio_stream,
                                   pitch_tracker(self.pitch_features) if self.pitch_features else None,
                                   events, stop, on_audio, _vad_threads(self.models), decodings),
            name="sercli-decode", daemon=True)
        producer.start()
        files: deque[_Pending] = deque()
        batch: list[tuple[_Pending, int, Segment]] = []
        in_context = any(m.features.context_norm for m in self.models)
        shared = self._windows() if self.context == "all" else None
        done = False
        try:
            while not done:
                try:
                    event = events.get(timeout=0.05) if batch else events.get()
                except queue.Empty:
                    event = None  # nothing ready: score what is waiting rather than idle
                if event is _DONE:
                    done = True
                elif event is not None:
                    kind, value = event
                    if kind == "file":
                        files.append(_Pending(value, windows=shared or self._windows()))
                    elif kind == "segment":
                        current = files[-1]
                        current.results.append(None)
                        current.unscored += 1
                        current.unfeaturised += 1
                        batch.append((current, len(current.results) - 1, value))
                    elif kind == "end":
                        files[-1].report = value
                    else:
                        files[-1].failure = value
                featurised = bool(batch) and (event is None or done or len(batch) >= SORT_WINDOW * self.batch_size)
                if featurised:
                    self._score(batch)
                    batch = []
                if in_context and (done or self.context == "file" and (
                        featurised or event is not None and event[0] in ("end", "error"))):
                    self._score_in_context(files, everything=done)
                while files and files[0].finished:
                    yield self._finish(files.popleft())
        finally:
            stop.set()
            if not done:  # stopped early (a signal, an error, the caller closed us): cut ffmpeg off
                for _, decoding in list(decodings):  # copied under the GIL, as the producer appends
                    if decoding is not None:
                        decoding.kill()
            producer.join()

    def _score(self, batch: list[tuple[_Pending, int, Segment]]) -> None:
        """Classify a window of segments, shortest first in batches of batch_size: the network
        cuts each batch to its longest segment, so batches of similar lengths waste little. A
        context-normalised model's segments are featurised and held for _score_in_context."""
        for pending, _, _ in batch:
            pending.unfeaturised -= 1
        live = [(pending, i, seg) for pending, i, seg in batch if pending.failure is None]
        live.sort(key=lambda item: len(item[2].samples))
        held: list[dict[int, torch.Tensor]] = [{} for _ in self.models]
        for first in range(0, len(live), self.batch_size):
            part = live[first : first + self.batch_size]
            shared: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # this part's features, by config and device
            for member, model in enumerate(self.models):
                with _out_of_memory_hint(model.device, len(part)):
                    key = self._feature_keys[member]
                    if key not in shared:
                        shared[key] = featurise([seg for _, _, seg in part], model.features, model.device)
                    # held only while a later model reads the same features
                    spectrograms, n_frames = shared[key] if key in self._feature_keys[member + 1:] else shared.pop(key)
                    if model.features.context_norm:
                        blocks = self._blocks[member]
                        for (_, _, seg), x, n in zip(part, spectrograms, n_frames):
                            block = blocks.pop() if blocks else torch.empty(x.shape, dtype=torch.float16)
                            block[:, :n] = x[:, :n]
                            held[member][id(seg)] = block[:, :n]
                        continue
                    posteriors = model.posteriors(spectrograms, n_frames).numpy()
                for (pending, i, seg), p in zip(part, posteriors):
                    self._scored(pending, i, seg.start_s, seg.end_s, p)
        for member, kept in enumerate(held):
            for pending, i, seg in batch:  # in time order, as the context windows want them
                if id(seg) in kept:
                    pending.windows[member].add((pending, i, seg.start_s, seg.end_s), seg.start_s, kept[id(seg)])
        for pending, _, seg in live:
            pending.progress_s = max(pending.progress_s, seg.start_s)

    def _scored(self, pending: _Pending, i: int, start_s: float, end_s: float, posteriors: np.ndarray,
                weight: float | None = None) -> None:
        """One model's posteriors of segment i; the segment's result once every model's are in:
        their mean, or with `weight` (a routed pair's: 1 for the model chosen, else 0) their weighted sum."""
        if len(self.models) > 1:
            total, count = pending.partial.pop(i, (0.0, 0))
            total, count = total + (posteriors if weight is None else weight * posteriors), count + 1
            if count < len(self.models):
                pending.partial[i] = (total, count)
                return
            posteriors = total if weight is not None else total / count
        pending.results[i] = SegmentResult.scored(start_s, end_s, posteriors, self.labels)
        pending.unscored -= 1
        if self._on_progress is not None:
            self._on_progress(pending.name, end_s)

    def _score_in_context(self, files: deque[_Pending], everything: bool) -> None:
        """Classify the held segments whose context is complete: every segment within half the
        context window after it is featurised, or its whole file is (everything: all files are)."""
        for member, model in enumerate(self.models):
            if model.features.context_norm:
                self._score_member_in_context(member, model, files, everything)

    def _score_member_in_context(self, member: int, model: Model, files: deque[_Pending], everything: bool) -> None:
        blocks = self._blocks[member]
        ready = []
        windows = {id(p.windows[member]): p.windows[member] for p in files}  # one when shared ("all")
        for pending in files:
            window = pending.windows[member]
            if pending.failure is not None and self.context == "file":
                blocks += [x._base if x._base is not None else x for x in window.discard()]
                continue
            ended = everything or (pending.report is not None and pending.unfeaturised == 0)
            if self.context == "file":
                ready += window.release(pending.progress_s, ended, with_columns=True)
        if everything and self.context == "all":
            for window in windows.values():
                ready += window.release(ended=True, with_columns=True)
        for key, x, *_ in [item for item in ready if item[0][0].failure is not None]:
            blocks.append(x._base if x._base is not None else x)
        ready = [item for item in ready if item[0][0].failure is None]
        ready.sort(key=lambda item: item[1].shape[1])
        for first in range(0, len(ready), self.batch_size):
            part = ready[first : first + self.batch_size]
            n_frames = torch.tensor([x.shape[1] for _, x, *_ in part])
            buffer = self._buffers[member]
            if buffer is None or len(buffer) < len(part):
                buffer = self._buffers[member] = torch.empty(self.batch_size, model.features.n_bins,
                                                             model.features.n_frames)
            x = buffer[: len(part)].zero_()
            for k, (_, spectrogram, *_) in enumerate(part):
                x[k, :, : spectrogram.shape[1]] = spectrogram.float()
            mean = torch.from_numpy(np.stack([m for _, _, m, _, _ in part])).float()
            std = torch.from_numpy(np.stack([s for _, _, _, s, _ in part])).float()
            with _out_of_memory_hint(model.device, len(part)):
                x = standardise_frames(x.to(model.device), n_frames, mean.to(model.device), std.to(model.device),
                                       in_place=True)
                posteriors = model.posteriors(x, n_frames).numpy()
            blocks += [spectrogram._base for _, spectrogram, *_ in part]
            for ((pending, i, start, end), *_, columns), p in zip(part, posteriors):
                weight = None
                if self.route:
                    weight = float(bool(routes_to_films(columns, model.features)) == (member == 1))
                self._scored(pending, i, start, end, p, weight)

    def _finish(self, pending: _Pending) -> FileResult | FileFailure:
        if pending.failure is not None:
            return pending.failure
        return FileResult(pending.name, round(pending.report.duration_s, 3), self.name,
                          [r for r in pending.results if r is not None], self.labels, pending.report.warnings)


@contextmanager
def _out_of_memory_hint(device: torch.device, segments: int):
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceOutOfMemory(f"{device} ran out of memory on a batch of {segments} segments: "
                                "retry with a smaller --batch-size") from exc
