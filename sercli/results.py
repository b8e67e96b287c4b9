"""What analysis finds, as plain data: a file's segments, its summary, or why it failed. No
torch here, so the writers and anything reading results back need only numpy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .spans import MERGE_GAP_S, Span, merge_spans


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
    spans: list[Span] = field(default_factory=list)  # emotion spans, in time order (sercli.spans)


@dataclass
class FileResult:
    """Everything sercli found in one input."""

    file: str
    duration_s: float
    model: str
    segments: list[SegmentResult]
    labels: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    merge_gap_s: float = MERGE_GAP_S  # s: same-label segments this close join one span

    @property
    def spans(self) -> list[Span]:
        """Consecutive segments with the same label at most merge_gap_s apart, joined."""
        return merge_spans(self.segments, self.merge_gap_s)

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
            self.spans,
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
