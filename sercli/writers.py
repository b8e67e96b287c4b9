"""Output formats (csv, json, jsonl) as plain writer classes keyed by name."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Callable

from .outputs import OutputFile
from .predict import FileResult

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


WRITERS: dict[str, Callable] = {"csv": CsvWriter, "json": JsonWriter, "jsonl": JsonlWriter}


def write_one(path: str | Path, result: FileResult, fmt: str) -> None:
    """Write one file's result (an --output-dir file: its folders are created), whole or not at all."""
    with OutputFile(path, make_parents=True) as target:
        writer = WRITERS[fmt](target.handle, result.labels)
        writer.write(result)
        writer.close()
