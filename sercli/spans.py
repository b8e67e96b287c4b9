"""Emotion spans: runs of consecutive segments with the same label, read as one stretch.

Kept free of torch and numpy, so writers and the timeline can use it on results read back from JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

MERGE_GAP_S = 1.0  # s: same-label segments at most this far apart join one span (--merge-gap)


class _Labelled(Protocol):
    start_s: float
    end_s: float
    label: str
    confidence: float


@dataclass(frozen=True)
class Span:
    """A stretch of one emotion: seconds from the start of the file, and the duration-weighted
    mean confidence of the segments it joins (the gaps between them count for nothing)."""

    label: str
    start_s: float
    end_s: float
    confidence: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def merge_spans(segments: Iterable[_Labelled], merge_gap_s: float = MERGE_GAP_S) -> list[Span]:
    """Join consecutive segments (in time order) with the same label whose gap, from one's end
    to the next one's start, is at most merge_gap_s seconds. A segment with another label in
    between always splits a span."""
    if merge_gap_s < 0:
        raise ValueError(f"merge gap must be 0 s or more, not {merge_gap_s:g} s")
    spans: list[Span] = []
    run: list[_Labelled] = []

    def close() -> None:
        seconds = sum(s.end_s - s.start_s for s in run)
        if seconds > 0:
            confidence = sum((s.end_s - s.start_s) * s.confidence for s in run) / seconds
        else:
            confidence = sum(s.confidence for s in run) / len(run)
        spans.append(Span(run[0].label, run[0].start_s, run[-1].end_s, confidence))

    for segment in segments:
        if run and (segment.label != run[-1].label or segment.start_s - run[-1].end_s > merge_gap_s + 1e-9):
            close()
            run = []
        run.append(segment)
    if run:
        close()
    return spans
