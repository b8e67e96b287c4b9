"""Speech detection and the paper's segmentation: segments of at most 3 s, streamed.

Speech regions come from Silero VAD (the batched "sequence" ONNX export that ships inside the
silero-vad wheel), run chunk by chunk with its recurrent state carried across chunks, so a
whole film never has to be in memory. A region longer than `max_segment_s` is cut into the
fewest near-equal parts no longer than it (paper, section 3.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Callable, Iterable, Iterator

import numpy as np

from .audio import HOP, SAMPLE_RATE

VAD_FRAME = 512  # samples, 32 ms: Silero's frame at 16 kHz
VAD_CONTEXT = 64  # samples of the previous frame Silero sees before each frame
VAD_BLOCK_FRAMES = 512  # frames per ONNX call, about 16 s of audio
VAD_MODEL = "silero_vad_16k_sequence.onnx"


@dataclass(frozen=True)
class SegmentationConfig:
    """How speech is found and cut. Times in seconds."""

    mode: str = "speech"  # "speech": VAD regions; "fixed": consecutive windows
    max_segment_s: float = 3.0  # the paper's T
    threshold: float = 0.5  # a region opens when Silero's speech probability reaches this
    neg_threshold: float = 0.35  # and stays open while it is at least this
    min_silence_s: float = 0.5  # a pause this long closes a region
    min_speech_s: float = 0.25  # shorter regions, and fixed windows with less speech, are dropped
    pad_s: float = 0.05  # kept on both sides of a region
    max_region_s: float = 60.0  # a region is closed at this length to bound memory

    def __post_init__(self) -> None:
        if self.mode not in ("speech", "fixed"):
            raise ValueError(f"segmentation must be 'speech' or 'fixed', not {self.mode!r}")
        if not 0.1 <= self.max_segment_s <= 30.0:
            raise ValueError("max segment length must be between 0.1 and 30 s")


@dataclass
class Segment:
    """A stretch of audio to classify: [start_s, end_s) of its file and its samples."""

    start_s: float
    end_s: float
    samples: np.ndarray  # (n,) float32 at 16 kHz
    f0: np.ndarray | None = None  # Hz per 10 ms frame, 0 = unvoiced; only when pitch is tracked


def split_evenly(start: int, end: int, max_length: int) -> list[tuple[int, int]]:
    """Cut [start, end) into the fewest near-equal parts no longer than max_length."""
    length = end - start
    if length <= 0:
        return []
    parts = max(1, math.ceil(length / max_length))
    bounds = [start + (length * k) // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


class SpeechProbabilities:
    """Silero VAD speech probability per 32 ms frame, fed chunk by chunk with state carried.

    threads: onnxruntime's threads for it. Its recurrent state carries through the whole file,
    so a file cannot be split across cores without changing what it finds; more threads inside
    each call help only where the network leaves cores idle (measurements: bench/VAD.md)."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        import torch

        # Creating an onnxruntime session sets OpenMP's thread count to 1 for the whole process,
        # which would leave torch (features, the network, training) on one core: put it back.
        torch_threads = torch.get_num_threads()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = resources.files("silero_vad.data").joinpath(VAD_MODEL).read_bytes()
        self._session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        torch.set_num_threads(torch_threads)
        self.reset()

    def reset(self) -> None:
        self._hidden = np.zeros((1, 1, 128), dtype=np.float32)
        self._cell = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)
        self._leftover = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """Probabilities of the whole frames completed by `samples` (the last one padded if final)."""
        samples = np.concatenate([self._leftover, samples]) if self._leftover.size else samples
        whole = samples.size // VAD_FRAME * VAD_FRAME
        if final and whole < samples.size:
            padded = np.zeros(whole + VAD_FRAME, dtype=np.float32)
            padded[: samples.size] = samples
            samples, whole = padded, padded.size
        self._leftover = samples[whole:].copy()
        frames = samples[:whole].reshape(-1, VAD_FRAME)
        probabilities = []
        for first in range(0, len(frames), VAD_BLOCK_FRAMES):
            block = frames[first : first + VAD_BLOCK_FRAMES]
            contexts = np.empty((len(block), VAD_CONTEXT), dtype=np.float32)  # (frames, 64)
            contexts[0] = self._context
            contexts[1:] = block[:-1, -VAD_CONTEXT:]
            self._context = block[-1, -VAD_CONTEXT:].copy()
            values, self._hidden, self._cell = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], axis=1), "h": self._hidden, "c": self._cell},
            )
            probabilities.append(np.asarray(values, dtype=np.float32).reshape(-1))
        return np.concatenate(probabilities) if probabilities else np.zeros(0, dtype=np.float32)


class _RegionTracker:
    """Hysteresis over frame probabilities: opens at `threshold`, closes after a long pause."""

    def __init__(self, config: SegmentationConfig) -> None:
        self.config = config
        self.frame = 0  # index of the next frame to be seen
        self.open_start: int | None = None
        self.last_voiced = 0
        self._min_silence = max(1, round(config.min_silence_s * SAMPLE_RATE / VAD_FRAME))
        self._max_region = max(1, round(config.max_region_s * SAMPLE_RATE / VAD_FRAME))

    def feed(self, probabilities: np.ndarray) -> list[tuple[int, int]]:
        """Regions (in frames, end exclusive) that these probabilities close."""
        closed = []
        for p in probabilities.tolist():
            i = self.frame
            self.frame += 1
            if self.open_start is None:
                if p >= self.config.threshold:
                    self.open_start, self.last_voiced = i, i
                continue
            if p >= self.config.neg_threshold:
                self.last_voiced = i
            elif i - self.last_voiced >= self._min_silence:
                closed.append((self.open_start, self.last_voiced + 1))
                self.open_start = None
                continue
            if i + 1 - self.open_start >= self._max_region:
                closed.append((self.open_start, i + 1))
                self.open_start = None
        return closed

    def finish(self) -> list[tuple[int, int]]:
        if self.open_start is None:
            return []
        region = (self.open_start, self.last_voiced + 1)
        self.open_start = None
        return [region]


PitchTracker = Callable[[np.ndarray], np.ndarray]  # 16 kHz samples -> F0 per 10 ms frame, 0 = unvoiced


def samples_between(chunks: Iterable[np.ndarray], offset: int, start: int, end: int) -> tuple[np.ndarray, int]:
    """Samples [start, end) of a signal given as consecutive chunks, the first beginning at sample
    `offset`; chunks are read only until `end` and only those overlapping are copied. Returns the
    samples and the sample index where reading stopped (below `end` if the signal ends first)."""
    pieces = []
    for chunk in chunks:
        a, b = max(start - offset, 0), min(end - offset, chunk.size)
        if a < b:
            pieces.append(chunk[a:b])
        offset += chunk.size
        if offset >= end:
            break
    return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), offset


def track_part(track: np.ndarray, offset: int, n_samples: int) -> np.ndarray:
    """The frames of a pitch track (one every HOP samples from its signal's start) for the
    n_samples from sample `offset` on: segment frame t takes the track frame nearest to it."""
    index = np.rint(offset / HOP + np.arange(-(-n_samples // HOP))).astype(int)
    if len(track) == 0:
        return np.zeros(index.size)
    return track[np.clip(index, 0, len(track) - 1)]


def region_segments(samples: np.ndarray, start: int, max_samples: int,
                    pitch: PitchTracker | None = None) -> list[Segment]:
    """A speech region's samples, which begin at sample `start` of their file, cut into the fewest
    near-equal segments no longer than max_samples. With `pitch`, the region's pitch is tracked
    once, whole, and every segment carries its part of the track (Segment.f0), so segment edges
    cut no pitch analysis. Analysis and training both cut speech here."""
    track = pitch(samples) if pitch is not None else None
    return [Segment(a / SAMPLE_RATE, b / SAMPLE_RATE, np.array(samples[a - start : b - start], dtype=np.float32),
                    None if track is None else track_part(track, a - start, b - a))
            for a, b in split_evenly(start, start + len(samples), max_samples)]


class Segmenter:
    """Turns a stream of 16 kHz chunks into segments, holding only the audio still needed.

    With `pitch`, each speech region's pitch is tracked once, whole, and every segment cut from
    it carries its part of the track (Segment.f0), so segment edges cut no pitch analysis.
    """

    def __init__(self, config: SegmentationConfig, vad: SpeechProbabilities | None = None,
                 pitch: PitchTracker | None = None, record_regions: bool = False) -> None:
        """record_regions: keep the sample range [start, end) of every region (or fixed window)
        cut, in `regions` (training cuts an utterance's noisy copies where its clean speech is)."""
        self.config = config
        self.regions: list[tuple[int, int]] | None = [] if record_regions else None
        self.pitch = pitch
        self.vad = vad or SpeechProbabilities()
        self.vad.reset()
        self._regions = _RegionTracker(config)
        self._chunks: list[np.ndarray] = []
        self._buffer_start = 0  # file sample index of self._chunks[0][0]
        self._received = 0  # samples fed so far
        self._probabilities: list[np.ndarray] = []  # fixed mode: the current window's frames
        self._window_start = 0  # fixed mode: sample index of the next window
        self._last_end = 0  # end of the last emitted region, so padding never overlaps it
        self._max_segment = round(config.max_segment_s * SAMPLE_RATE)
        self._pad = round(config.pad_s * SAMPLE_RATE)
        self._min_speech = round(config.min_speech_s * SAMPLE_RATE)

    def feed(self, chunk: np.ndarray) -> list[Segment]:
        self._chunks.append(chunk)
        self._received += chunk.size
        return self._advance(self.vad.feed(chunk), final=False)

    def finish(self) -> list[Segment]:
        return self._advance(self.vad.feed(np.zeros(0, dtype=np.float32), final=True), final=True)

    def _advance(self, probabilities: np.ndarray, final: bool) -> list[Segment]:
        if self.config.mode == "fixed":
            return self._fixed_windows(probabilities, final)
        regions = self._regions.feed(probabilities)
        if final:
            regions += self._regions.finish()
        segments = []
        for first, last in regions:
            start = max(self._last_end, first * VAD_FRAME - self._pad, 0)
            end = min(last * VAD_FRAME + self._pad, self._received)
            self._last_end = end
            if end - start - 2 * self._pad < self._min_speech:
                continue
            segments.extend(self._region(start, end))
        open_start = self._regions.open_start
        keep_from = self._received - 2 * self._pad if open_start is None else open_start * VAD_FRAME - self._pad
        self._drop_before(min(keep_from, self._last_end))
        return segments

    def _fixed_windows(self, probabilities: np.ndarray, final: bool) -> list[Segment]:
        self._probabilities.append(probabilities)
        segments = []
        while self._received - self._window_start >= self._max_segment or (
            final and self._received > self._window_start
        ):
            start = self._window_start
            end = min(start + self._max_segment, self._received)
            frames = np.concatenate(self._probabilities)
            first_frame = start // VAD_FRAME
            window_frames = frames[: max(1, math.ceil(end / VAD_FRAME) - first_frame)]
            speech = np.count_nonzero(window_frames >= self.config.threshold) * VAD_FRAME
            if speech >= self._min_speech:
                segments.extend(self._region(start, end))
            self._window_start = end
            consumed = end // VAD_FRAME - first_frame
            self._probabilities = [frames[consumed:]]
        self._drop_before(self._window_start)
        return segments

    def _region(self, start: int, end: int) -> list[Segment]:
        """The region [start, end) as near-equal segments, with their pitch if it is tracked."""
        if self.regions is not None:
            self.regions.append((start, end))
        samples, _ = samples_between(self._chunks, self._buffer_start, start, end)
        return region_segments(samples, start, self._max_segment, self.pitch)

    def _drop_before(self, sample: int) -> None:
        while self._chunks and self._buffer_start + self._chunks[0].size <= sample:
            self._buffer_start += self._chunks[0].size
            self._chunks.pop(0)


def segment_stream(chunks: Iterable[np.ndarray], config: SegmentationConfig,
                   vad: SpeechProbabilities | None = None, pitch: PitchTracker | None = None) -> Iterator[Segment]:
    """Segments of a stream of 16 kHz float32 chunks, in time order."""
    segmenter = Segmenter(config, vad, pitch)
    for chunk in chunks:
        yield from segmenter.feed(chunk)
    yield from segmenter.finish()


def segment_audio(samples: np.ndarray, config: SegmentationConfig = SegmentationConfig(),
                  vad: SpeechProbabilities | None = None, pitch: PitchTracker | None = None) -> list[Segment]:
    """Segments of a whole 16 kHz signal held in memory."""
    return list(segment_stream([np.asarray(samples, dtype=np.float32)], config, vad, pitch))
