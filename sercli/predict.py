"""The inference pipeline: decode -> speech segments -> spectrograms -> posteriors, file after file.

A producer thread decodes and segments the next file while the main thread classifies; segments
from consecutive files share batches, so many short clips keep the device as busy as one film.
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, DecodeReport, resample, stream_audio
from .features import ContextStats, context_prior, log_spectrograms, pitch_tracker, standardise_frames
from .segment import PitchTracker, Segment, SegmentationConfig, SpeechProbabilities, Segmenter
from .weights import Model


@dataclass
class SegmentResult:
    """One classified segment; times in seconds from the start of the file."""

    start_s: float
    end_s: float
    label: str
    confidence: float  # posterior of `label`
    probs: dict[str, float]  # posterior per label, summing to 1

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @classmethod
    def scored(cls, start_s: float, end_s: float, posteriors: np.ndarray, labels: tuple[str, ...]) -> "SegmentResult":
        """A segment labelled with the top class of its posteriors (times rounded to 1 ms)."""
        best = int(np.argmax(posteriors))
        return cls(round(start_s, 3), round(end_s, 3), labels[best], float(posteriors[best]),
                   {label: float(v) for label, v in zip(labels, posteriors)})


@dataclass
class Summary:
    """A file at a glance: duration-weighted mean posteriors over its segments."""

    label: str | None  # None when no speech was found
    probs: dict[str, float] | None
    speech_s: float
    seconds_by_label: dict[str, float]


@dataclass
class FileResult:
    """Everything sercli found in one input."""

    file: str
    duration_s: float
    model: str
    segments: list[SegmentResult]
    labels: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        by_label = {label: 0.0 for label in self.labels}
        if not self.segments:
            return Summary(None, None, 0.0, by_label)
        weights = np.array([s.duration_s for s in self.segments])
        probs = np.array([[s.probs[label] for label in self.labels] for s in self.segments])
        mean = (weights[:, None] * probs).sum(axis=0) / max(weights.sum(), 1e-9)
        for segment in self.segments:
            by_label[segment.label] += segment.duration_s
        return Summary(
            self.labels[int(mean.argmax())],
            {label: float(p) for label, p in zip(self.labels, mean)},
            float(weights.sum()),
            by_label,
        )


@dataclass
class FileFailure:
    """An input that could not be analysed, with a one-line cause."""

    file: str
    error: str
    detail: str = ""  # traceback of an unexpected failure, shown with --debug


class AnalysisError(Exception):
    """Raised by the Python API when its input cannot be analysed."""


class DeviceOutOfMemory(Exception):
    """The model's device ran out of memory for a batch."""


Source = Union[str, tuple[str, np.ndarray]]  # a path, or (name, 16 kHz samples)


@dataclass
class _Pending:
    name: str
    results: list[SegmentResult | None] = field(default_factory=list)
    unscored: int = 0
    report: DecodeReport | None = None  # set when the file is fully segmented
    failure: FileFailure | None = None
    # Context-normalised models: the file's speech statistics, and the segments featurised but
    # not yet classified until their context is: (result index, start s, end s, valid frames
    # (F, n)). Not the Segment: its samples were allocated by the decoding thread, and holding
    # them for minutes fragmented that thread's heap, so memory grew with the input's length.
    context: ContextStats | None = None
    held: list[tuple[int, float, float, torch.Tensor]] = field(default_factory=list)
    unfeaturised: int = 0
    progress_s: float = -np.inf  # start of the latest featurised segment

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

    def close(self) -> None:
        """Stop its ffmpeg, if it still runs (the pipeline stopped before this file's turn)."""
        self._thread.join()
        self._chunks.close()


def _produce(sources: Iterable[Source], config: SegmentationConfig, audio_stream: int, pitch: PitchTracker | None,
             out: queue.Queue, stop: threading.Event, on_audio: Callable[[float], None] | None) -> None:
    """Runs in a thread: puts ("file", name), ("segment", Segment), ("end", report) or ("error", failure)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    vad = SpeechProbabilities()
    pending = iter(sources)
    upcoming: deque[tuple[Source, _Decoding | None]] = deque()  # this file and the next DECODE_AHEAD
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


class Pipeline:
    """Classifies files (or arrays) with one model, yielding results in input order."""

    def __init__(self, model: Model, segmentation: SegmentationConfig = SegmentationConfig(),
                 batch_size: int = 32, audio_stream: int = 0, context: str = "file") -> None:
        """context: for a context-normalised model, what each segment is normalised over: the
        speech of its own file around it ("file"), or all speech of all inputs of the run
        ("all": for collections of short clips of the same voices; nothing is classified until
        every input is featurised, and every input's spectrograms are held until then)."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if context not in ("file", "all"):
            raise ValueError(f"context must be file or all, not {context!r}")
        self.context = context
        if segmentation.max_segment_s * SAMPLE_RATE > model.features.max_samples:
            raise ValueError(f"max segment length is {model.features.max_samples / SAMPLE_RATE:g} s "
                             f"for this model, not {segmentation.max_segment_s:g} s")
        self.prior = context_prior(model.meta) if model.features.context_norm else None
        # Context-normalised models: held spectrograms live in reused blocks of one size, and a
        # batch is assembled in one reused buffer. Allocating them afresh, between the large
        # short-lived arrays of the spectrograms, fragmented the heap: memory grew with length.
        self._blocks: list[torch.Tensor] = []
        self._buffer: torch.Tensor | None = None
        self.model = model
        self.segmentation = segmentation
        self.batch_size = batch_size
        self.audio_stream = audio_stream

    def run(self, sources: Iterable[Source],
            on_audio: Callable[[float], None] | None = None) -> Iterator[FileResult | FileFailure]:
        events: queue.Queue = queue.Queue(maxsize=4 * self.batch_size)
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce, args=(sources, self.segmentation, self.audio_stream, pitch_tracker(self.model.features),
                                   events, stop, on_audio),
            name="sercli-decode", daemon=True)
        producer.start()
        files: deque[_Pending] = deque()
        batch: list[tuple[_Pending, int, Segment]] = []
        features = self.model.features
        shared = ContextStats(features.n_bins, self.prior) if features.context_norm and self.context == "all" else None
        try:
            done = False
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
                        files.append(_Pending(value, context=shared or (
                            ContextStats(features.n_bins, self.prior) if features.context_norm else None)))
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
                if features.context_norm and (done or self.context == "file" and (
                        featurised or event is not None and event[0] in ("end", "error"))):
                    self._score_in_context(files, everything=done)
                while files and files[0].finished:
                    yield self._finish(files.popleft())
        finally:
            stop.set()
            producer.join()

    def _score(self, batch: list[tuple[_Pending, int, Segment]]) -> None:
        """Classify a window of segments, shortest first in batches of batch_size: the network
        cuts each batch to its longest segment, so batches of similar lengths waste little. With
        a context-normalised model, featurise them and hold them for _score_in_context."""
        for pending, _, _ in batch:
            pending.unfeaturised -= 1
        live = [(pending, i, seg) for pending, i, seg in batch if pending.failure is None]
        live.sort(key=lambda item: len(item[2].samples))
        model = self.model
        held: dict[int, torch.Tensor] = {}
        for first in range(0, len(live), self.batch_size):
            part = live[first : first + self.batch_size]
            samples = [seg.samples for _, _, seg in part]
            n_frames = torch.tensor([model.features.frames_for(len(s)) for s in samples])
            with _out_of_memory_hint(model.device, len(part)):
                spectrograms = log_spectrograms(samples, model.features, model.device, [seg.f0 for _, _, seg in part])
                if model.features.context_norm:
                    for (_, _, seg), x, n in zip(part, spectrograms, n_frames):
                        block = self._blocks.pop() if self._blocks else torch.empty(x.shape, dtype=torch.float16)
                        block[:, :n] = x[:, :n]
                        held[id(seg)] = block[:, :n]
                    continue
                posteriors = model.posteriors(spectrograms, n_frames).numpy()
            for (pending, i, seg), p in zip(part, posteriors):
                pending.results[i] = SegmentResult.scored(seg.start_s, seg.end_s, p, model.labels)
                pending.unscored -= 1
        for pending, i, seg in batch:  # in time order, as the context statistics want them
            if id(seg) in held:  # one shared context: all of it is every segment's window
                pending.context.add(seg.start_s if self.context == "file" else 0.0, held[id(seg)].float().numpy())
                pending.held.append((i, seg.start_s, seg.end_s, held[id(seg)]))
                pending.progress_s = max(pending.progress_s, seg.start_s)

    def _score_in_context(self, files: deque[_Pending], everything: bool) -> None:
        """Classify the held segments whose context is complete: every segment within half the
        context window after it is featurised, or its whole file is (everything: all files are)."""
        model = self.model
        half = model.features.context_window_s / 2
        ready = []
        for pending in files:
            if pending.failure is not None:
                pending.unscored -= len(pending.held)
                self._blocks += [x._base if x._base is not None else x for *_, x in pending.held]
                pending.held = []
                continue
            ended = everything or (pending.report is not None and pending.unfeaturised == 0)
            keep = []
            for i, start, end, x in pending.held:
                if ended or start + half < pending.progress_s:
                    mean, std = (pending.context.moments(start - half, start + half)
                                 if self.context == "file" else pending.context.moments())
                    ready.append((pending, i, start, end, x, mean, std))
                else:
                    keep.append((i, start, end, x))
            pending.held = keep
            if self.context == "file" and pending.held:  # held in time order: no window reaches further back
                pending.context.forget_before(pending.held[0][1] - half)
        ready.sort(key=lambda item: item[4].shape[1])
        for first in range(0, len(ready), self.batch_size):
            part = ready[first : first + self.batch_size]
            n_frames = torch.tensor([held.shape[1] for *_, held, _, _ in part])
            if self._buffer is None or len(self._buffer) < len(part):
                self._buffer = torch.empty(self.batch_size, model.features.n_bins, model.features.n_frames)
            x = self._buffer[: len(part)].zero_()
            for k, (*_, held, _, _) in enumerate(part):
                x[k, :, : held.shape[1]] = held.float()
            mean = torch.from_numpy(np.stack([m for *_, m, _ in part])).float()
            std = torch.from_numpy(np.stack([s for *_, s in part])).float()
            with _out_of_memory_hint(model.device, len(part)):
                x = standardise_frames(x.to(model.device), n_frames, mean.to(model.device), std.to(model.device),
                                       in_place=True)
                posteriors = model.posteriors(x, n_frames).numpy()
            self._blocks += [held._base for *_, held, _, _ in part]
            for (pending, i, start, end, *_), p in zip(part, posteriors):
                pending.results[i] = SegmentResult.scored(start, end, p, model.labels)
                pending.unscored -= 1

    def _finish(self, pending: _Pending) -> FileResult | FileFailure:
        if pending.failure is not None:
            return pending.failure
        return FileResult(pending.name, round(pending.report.duration_s, 3), self.model.name,
                          [r for r in pending.results if r is not None], self.model.labels,
                          pending.report.warnings)


@contextmanager
def _out_of_memory_hint(device: torch.device, segments: int):
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceOutOfMemory(f"{device} ran out of memory on a batch of {segments} segments: "
                                "retry with a smaller --batch-size") from exc


def analyze(path_or_array: str | np.ndarray, model: Model | str | None = None, *, sample_rate: int = SAMPLE_RATE,
            segmentation: str = "speech", max_segment_s: float = 3.0, audio_stream: int = 0,
            batch_size: int = 32, device: str = "auto", name: str = "<array>") -> FileResult:
    """Per-segment emotions of one file or one mono signal.

    path_or_array: a media file path, or a 1-D float array at `sample_rate` Hz (resampled to
    16 kHz with ffmpeg). model: a loaded Model, an installed model's name or a checkpoint
    path (None: the default model). Raises AnalysisError when the input cannot be analysed.
    """
    from .weights import load_model

    if not isinstance(model, Model):
        model = load_model(model, device=device)
    config = SegmentationConfig(mode=segmentation, max_segment_s=max_segment_s)
    if isinstance(path_or_array, (str, bytes)) or hasattr(path_or_array, "__fspath__"):
        source: Source = str(path_or_array)
    else:
        signal = np.asarray(path_or_array, dtype=np.float32)
        if signal.ndim != 1:
            raise AnalysisError(f"{name}: expected a mono 1-D signal, got shape {signal.shape}")
        source = (name, resample(signal, sample_rate))
    (result,) = Pipeline(model, config, batch_size, audio_stream).run([source])
    if isinstance(result, FileFailure):
        raise AnalysisError(f"{result.file}: {result.error}")
    return result
