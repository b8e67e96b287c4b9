"""Output formats as plain writer classes keyed by name.

csv, json and jsonl hold any number of inputs; srt, vtt, textgrid and audacity are one input's
emotion spans for a video player or an annotation tool. No torch here: results read back from
JSON or made by hand write the same.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable

from .outputs import OutputFile
from .spans import Span

if TYPE_CHECKING:
    from .results import FileResult

CSV_COLUMNS = ["file", "segment", "start_s", "end_s", "label", "confidence"]


def _round(value: float) -> float:
    return round(value, 4)


def result_to_dict(result: FileResult) -> dict:
    """The JSON object of one file (the schema is in the README)."""
    summary = result.summary
    return {
        "file": result.file,
        "duration_s": result.duration_s,
        "model": result.model,
        "segments": [
            {"start_s": s.start_s, "end_s": s.end_s, "label": s.label, "confidence": _round(s.confidence),
             "probs": {k: _round(v) for k, v in s.probs.items()}}
            for s in result.segments
        ],
        "summary": {
            "label": summary.label,
            "probs": None if summary.probs is None else {k: _round(v) for k, v in summary.probs.items()},
            "speech_s": round(summary.speech_s, 3),
            "seconds_by_label": {k: round(v, 3) for k, v in summary.seconds_by_label.items()},
            "spans": [{"label": span.label, "start_s": span.start_s, "end_s": span.end_s,
                       "confidence": _round(span.confidence)} for span in summary.spans],
        },
    }


class CsvWriter:
    def __init__(self, out: IO[str], labels: tuple[str, ...]) -> None:
        self.out = out
        self.rows = csv.writer(out, lineterminator="\n")
        self.rows.writerow(CSV_COLUMNS + [f"p_{label}" for label in labels])
        self.labels = labels

    def write(self, result: FileResult) -> None:
        for i, s in enumerate(result.segments):
            self.rows.writerow([result.file, i, f"{s.start_s:.3f}", f"{s.end_s:.3f}", s.label,
                                f"{s.confidence:.4f}"] + [f"{s.probs[label]:.4f}" for label in self.labels])
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class JsonWriter:
    """One object for one file; a JSON array as soon as a second file is written."""

    def __init__(self, out: IO[str], labels: tuple[str, ...]) -> None:
        self.out = out
        self.objects: list[dict] = []

    def write(self, result: FileResult) -> None:
        self.objects.append(result_to_dict(result))

    def close(self) -> None:
        document = self.objects[0] if len(self.objects) == 1 else self.objects
        json.dump(document, self.out, indent=2)
        self.out.write("\n")
        self.out.flush()


class JsonlWriter:
    def __init__(self, out: IO[str], labels: tuple[str, ...]) -> None:
        self.out = out

    def write(self, result: FileResult) -> None:
        for segment in result_to_dict(result)["segments"]:
            self.out.write(json.dumps({"file": result.file, **segment}) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


def cue_text(span: Span) -> str:
    """What a subtitle or label of a span says: `angry (0.82)`."""
    return f"{span.label} ({span.confidence:.2f})"


def _clock(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


class _OneFileWriter:
    """A format that holds one input's results (times are relative to that input)."""

    def __init__(self, out: IO[str], labels: tuple[str, ...]) -> None:
        self.out = out
        self.written = 0

    def write(self, result: FileResult) -> None:
        if self.written:
            raise ValueError(f"{type(self).name} holds one input's results; with several, use --output-dir")
        self.written += 1
        self.out.write(self.text(result))
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class SrtWriter(_OneFileWriter):
    """SubRip subtitles: one cue per emotion span."""

    name = "srt"

    def text(self, result: FileResult) -> str:
        return "".join(f"{n}\n{_clock(span.start_s, ',')} --> {_clock(span.end_s, ',')}\n{cue_text(span)}\n\n"
                       for n, span in enumerate(result.spans, 1))


class VttWriter(_OneFileWriter):
    """WebVTT subtitles: one cue per emotion span."""

    name = "vtt"

    def text(self, result: FileResult) -> str:
        return "WEBVTT\n\n" + "".join(f"{_clock(span.start_s, '.')} --> {_clock(span.end_s, '.')}\n{cue_text(span)}\n\n"
                                       for span in result.spans)


class AudacityWriter(_OneFileWriter):
    """Audacity's label track (File > Import > Labels): start, end and text, tab-separated."""

    name = "audacity"

    def text(self, result: FileResult) -> str:
        return "".join(f"{span.start_s:.6f}\t{span.end_s:.6f}\t{cue_text(span)}\n" for span in result.spans)


def _intervals(items, end_s: float) -> list[tuple[float, float, str]]:
    """(start, end, label) of `items` in time order, with empty intervals between them, covering
    0..end_s without gaps or overlaps, as a Praat interval tier must."""
    out = []
    reached = 0.0
    for item in items:
        start, stop = max(item.start_s, reached), min(item.end_s, end_s)
        if stop <= start:
            continue
        if start > reached:
            out.append((reached, start, ""))
        out.append((start, stop, item.label))
        reached = stop
    if end_s > reached or not out:
        out.append((reached, end_s, ""))
    return out


def _praat_text(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class TextGridWriter(_OneFileWriter):
    """A Praat TextGrid (long text format): an interval tier of emotion spans and one of segments,
    labelled with the emotion; stretches without speech are empty intervals."""

    name = "textgrid"

    def text(self, result: FileResult) -> str:
        end_s = max([result.duration_s, *(s.end_s for s in result.segments)]) or 0.001
        tiers = {"spans": _intervals(result.spans, end_s), "segments": _intervals(result.segments, end_s)}
        lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end_s:.3f}",
                 "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
        for n, (name, intervals) in enumerate(tiers.items(), 1):
            lines += [f"    item [{n}]:", '        class = "IntervalTier"', f"        name = {_praat_text(name)}",
                      "        xmin = 0", f"        xmax = {end_s:.3f}", f"        intervals: size = {len(intervals)}"]
            for k, (start, stop, label) in enumerate(intervals, 1):
                lines += [f"        intervals [{k}]:", f"            xmin = {start:.3f}",
                          f"            xmax = {stop:.3f}", f"            text = {_praat_text(label)}"]
        return "\n".join(lines) + "\n"


WRITERS: dict[str, Callable] = {"csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter, "srt": SrtWriter,
                                "vtt": VttWriter, "textgrid": TextGridWriter, "audacity": AudacityWriter}
EXTENSIONS = {"csv": ".csv", "json": ".json", "jsonl": ".jsonl", "srt": ".srt", "vtt": ".vtt",
              "textgrid": ".TextGrid", "audacity": ".txt"}  # of the files --output-dir writes


def format_of(path: str | Path) -> str | None:
    """The format an output file's extension names (case aside), or None for another one."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, ext in EXTENSIONS.items() if ext.lower() == suffix), None)


def write_one(path: str | Path, result: FileResult, fmt: str) -> None:
    """Write one file's result (an --output-dir file: its folders are created), whole or not at all."""
    with OutputFile(path, make_parents=True) as target:
        writer = WRITERS[fmt](target.handle, result.labels)
        writer.write(result)
        writer.close()
