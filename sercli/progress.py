"""The progress bar of `sercli analyze`: over the inputs' total duration where it is known, moving
as audio is *classified* (not as it is decoded, which runs ahead), with percent, elapsed time,
time left and the speed of analysis. Torch-free.

The durations come from the containers' headers (audio.probe_duration), read in a thread while
analysis starts; until they are in, and where one cannot be read (a pipe, a broken file), the
bar counts files. A probe starts an ffmpeg, about 20 ms: above PROBE_LIMIT inputs, where that
would slow a collection of short clips, the bar counts files too. A list read from stdin has no
known total: the bar then shows counts and a spinner.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

PROBE_LIMIT = 200  # inputs whose durations are probed for the bar; above it, it counts files


def clock(seconds: float) -> str:
    """1:02:03 or 2:03."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class AnalysisProgress:
    """Counts what a run has analysed and, on a terminal, draws it. `console` is where messages
    go while the bar is up (None without a bar: write to stderr directly)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.console = None
        self.started = time.monotonic()
        self.classified_s = 0.0  # audio classified, all files
        self.files_done = 0
        self.n_files: int | None = None
        self._positions: dict[str, float] = {}
        self._durations: dict[str, float] | None = None  # probed, once known
        self._skipped: list[str] = []
        self._lock = threading.Lock()
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(SpinnerColumn(), TextColumn("analysing"), BarColumn(), TaskProgressColumn(),
                                TextColumn("{task.fields[files]}"), TextColumn("{task.fields[audio]}"),
                                TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("elapsed"),
                                TimeRemainingColumn(), TextColumn("left"), console=Console(stderr=True),
                                transient=False)
            self.console = self.bar.console
            self.task = self.bar.add_task("analysing", total=None, files="", audio="", speed="")

    def start(self, inputs: Sequence[str] | None) -> None:
        """Show the bar; inputs: the whole list when known in advance (not a stdin list)."""
        if inputs is not None:
            self.n_files = len(inputs)
            if self.bar is not None and 0 < len(inputs) <= PROBE_LIMIT:
                threading.Thread(target=self._probe, args=(list(inputs),), name="sercli-probe", daemon=True).start()
        if self.bar is not None:
            self.bar.start()
            self._draw()

    def _probe(self, inputs: list[str]) -> None:
        from .audio import probe_duration

        durations = {path: probe_duration(path) for path in inputs}
        if any(seconds is None for seconds in durations.values()):
            return  # a total without them would be wrong: the bar keeps counting files
        with self._lock:
            self._durations = durations
        self._draw()

    def position(self, name: str, seconds: float) -> None:
        """Classification of `name` has reached `seconds` into it."""
        with self._lock:
            before = self._positions.get(name, 0.0)
            if seconds > before:
                self._positions[name] = seconds
                self.classified_s += seconds - before
        self._draw()

    def file_done(self, name: str, duration_s: float) -> None:
        with self._lock:
            before = self._positions.pop(name, 0.0)
            self.classified_s += max(duration_s - before, 0.0)
            self.files_done += 1
        self._draw()

    def skipped(self, name: str) -> None:
        """An input left out (--skip-existing): done, with nothing to classify."""
        with self._lock:
            self._skipped.append(name)
            self.files_done += 1
        self._draw()

    @property
    def speed(self) -> float:
        """Seconds of audio classified per second of run time."""
        return self.classified_s / max(time.monotonic() - self.started, 1e-6)

    def _draw(self) -> None:
        if self.bar is None:
            return
        with self._lock:
            files = f"{self.files_done}/{self.n_files if self.n_files is not None else '?'} files"
            speed = f"{self.speed:.0f}x realtime" if self.classified_s else ""
            if self._durations is not None:  # by time: the audio the inputs hold
                total = sum(self._durations.values())
                done = self.classified_s + sum(self._durations.get(p, 0.0) for p in self._skipped)
                completed, total, audio = min(done, total), total, f"{clock(done)} of {clock(total)} audio"
            else:
                completed, total = self.files_done, self.n_files
                audio = f"{clock(self.classified_s)} audio"
        self.bar.update(self.task, completed=completed, total=total, files=files, audio=audio, speed=speed)

    def stop(self) -> None:
        """Take the bar down (before any closing message, so it is not drawn again under it)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
