"""Where the results of `sercli analyze` go: one combined output (stdout, or -o FILE written
atomically) in one format, or one file per input and format under an output folder, resumable
with skip_existing. The sink also says each failure and warning and counts what it wrote, skipped
and lost, for the closing summary. Torch-free."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Iterator

import click

from .outputs import OutputFile
from .report import say
from .results import FileFailure, FileResult
from .writers import EXTENSIONS, WRITERS, write_one


def output_name(path: str, fmt: str) -> Path:
    """The --output-dir file of an input: its path, made relative, plus the format's extension.

    `talk.mp3` -> `talk.mp3.csv`, `media/s1/ep1.mkv` -> `media/s1/ep1.mkv.csv` (`.TextGrid` for
    textgrid, `.txt` for audacity); an absolute path,
    or one that leaves the working directory, is mirrored whole (`/data/x.mp4` ->
    `data/x.mp4.csv`). The name depends only on the input, so different inputs never collide
    and a resumed batch finds the same names in any order.
    """
    normal = os.path.normpath(path)
    if os.path.isabs(normal) or normal.split(os.sep, 1)[0] == os.pardir:
        normal = os.path.abspath(path)
        normal = normal[len(os.path.splitdrive(normal)[0]):].lstrip(os.sep)
    return Path(normal + EXTENSIONS[fmt])


class OutputSink:
    """Results in, outputs and messages out. `output` is a file or "-" (stdout), used when
    `output_dir` is None; `progress` is the run's AnalysisProgress (its console carries the
    messages while the bar is up)."""

    def __init__(self, formats: tuple[str, ...], output: str = "-", output_dir: Path | None = None,
                 skip_existing: bool = False, merge_gap_s: float = 1.0, quiet: bool = False, debug: bool = False,
                 progress=None) -> None:
        self.formats, self.output, self.output_dir = formats, output, output_dir
        self.skip_existing, self.merge_gap_s = skip_existing, merge_gap_s
        self.quiet, self.debug, self.progress = quiet, debug, progress
        self.files = self.failed = self.skipped = 0
        self._targets: dict[str, list[tuple[Path, str]]] = {}
        self._combined: OutputFile | None = None
        self._writer = None

    @property
    def _console(self):
        return None if self.progress is None else self.progress.console

    def wanted(self, paths: Iterable[str]) -> Iterator[str]:
        """The inputs still to analyse: all, less those whose outputs all exist with skip_existing."""
        for path in paths:
            if self.output_dir is not None:
                target = [(self.output_dir / output_name(path, f), f) for f in self.formats]
                if self.skip_existing and all(t.exists() for t, _ in target):
                    self.skipped += 1
                    if self.progress is not None:
                        self.progress.skipped(path)
                    continue
                self._targets[path] = target
            yield path

    def open(self, labels: tuple[str, ...]) -> None:
        """Start the combined output, if there is one."""
        if self.output_dir is not None:
            return
        if self.output == "-" and hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="surrogateescape")  # names' own bytes, as in a file
        self._combined = None if self.output == "-" else OutputFile(self.output)
        stream = sys.stdout if self._combined is None else self._combined.handle
        self._writer = WRITERS[self.formats[0]](stream, labels)

    def take(self, result: FileResult | FileFailure) -> None:
        """Write one input's result, or say why it failed."""
        self.files += 1
        if self.progress is not None:
            self.progress.file_done(result.file, 0.0 if isinstance(result, FileFailure) else result.duration_s)
        if isinstance(result, FileFailure):
            self.failed += 1
            say(self._console, "error", f"{result.file}: {result.error}")
            if self.debug and result.detail:
                click.echo(result.detail, err=True)
            return
        if not self.quiet:
            for warning in result.warnings:
                say(self._console, "warning", f"{result.file}: {warning}")
        result.merge_gap_s = self.merge_gap_s
        if self.output_dir is None:
            self._writer.write(result)
            return
        try:
            for target, fmt in self._targets.pop(result.file):
                write_one(target, result, fmt)
        except OSError as exc:
            self.failed += 1
            say(self._console, "error", f"{result.file}: cannot write output: {exc}")

    def commit(self) -> None:
        """Finish the combined output: it replaces -o FILE only now, whole."""
        if self._writer is not None:
            self._writer.close()
        if self._combined is not None:
            self._combined.commit()

    def discard(self) -> None:
        """Remove an unfinished combined output (nothing once committed)."""
        if self._combined is not None:
            self._combined.discard()

    def summary(self, classified_s: float, elapsed_s: float, speed: float) -> str:
        """The closing line: files analysed, audio, time, speed, skipped and failed."""
        line = (f"analysed {self.files - self.failed} of {self.files} file(s), "
                f"{classified_s / 60:.1f} min of audio in {elapsed_s:.1f} s ({speed:.0f}x realtime)")
        if self.skipped:
            line += f", skipped {self.skipped} with existing output"
        if self.failed:
            line += f"; {self.failed} failed"
        return line
