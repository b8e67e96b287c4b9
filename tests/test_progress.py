"""The progress bar of `sercli analyze`: counted right, drawn on a real pseudo-terminal, and taken
down before the message when the run is stopped."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO
from sercli.audio import probe_duration
from sercli.progress import AnalysisProgress, clock
from test_outputs import decoders_reading, stalled_input

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def test_clock():
    assert [clock(s) for s in (0, 59.9, 61, 3599, 3600, 7384)] == ["0:00", "0:59", "1:01", "59:59", "1:00:00",
                                                                   "2:03:04"]


def test_counts_classified_audio_not_decoded_audio():
    progress = AnalysisProgress(enabled=False)
    progress.start(["a.wav", "b.wav"])
    progress.position("a.wav", 3.0)
    progress.position("a.wav", 2.0)  # an earlier segment scored later: no step back
    progress.position("a.wav", 9.5)
    assert progress.classified_s == pytest.approx(9.5) and progress.files_done == 0
    progress.file_done("a.wav", 12.0)  # silence at the end counts once the file is done
    progress.skipped("b.wav")
    assert progress.classified_s == pytest.approx(12.0) and progress.files_done == 2
    progress.stop()


def test_probe_reads_the_containers_duration(tmp_path):
    assert probe_duration(str(EXAMPLE)) == pytest.approx(21.54, abs=0.01)
    text = tmp_path / "notes.mp3"
    text.write_text("not audio\n")
    assert probe_duration(str(text)) is None
    assert probe_duration("/dev/stdin") is None  # would consume what it probes


@pytest.fixture(scope="module")
def long_input(tmp_path_factory, run_ffmpeg) -> Path:
    """The example six times over: 2:09 of speech and pauses."""
    path = tmp_path_factory.mktemp("long") / "long.mp3"
    run_ffmpeg("-stream_loop", "5", "-i", str(EXAMPLE), "-c", "copy", str(path))
    return path


def on_terminal(args, until=None, timeout=120) -> tuple[int, bytes]:
    """Run `python -m sercli ARGS` with a pseudo-terminal for stdin/stdout/stderr; `until(text)`,
    if given, is called on what it printed so far and may signal it. Returns (exit code, output)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "sercli", *map(str, args)], stdin=follower, stdout=follower,
                               stderr=follower, env=env, close_fds=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is gone
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
            if until is not None and until(process, output):
                until = None
        return process.wait(timeout=30), output
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()


def test_the_bar_runs_over_the_total_duration_on_a_terminal(tiny_model, long_input, tmp_path):
    code, output = on_terminal(["analyze", long_input, EXAMPLE, "-m", tiny_model, "-o", tmp_path / "out.csv"])
    text = ANSI.sub(b"", output).decode("utf-8", "replace")
    assert code == 0, text
    assert "of 2:31 audio" in text  # 2:09 + 0:21.5, probed before decoding
    assert "100%" in text and "2/2 files" in text and "realtime" in text and "left" in text
    percents = [int(p) for p in re.findall(r"(\d+)%", text)]
    assert percents == sorted(percents)  # never backwards
    assert text.rstrip().splitlines()[-1].startswith("sercli: analysed 2 of 2 file(s), 2.5 min of audio")


def test_a_list_on_stdin_counts_files_without_a_total(tiny_model, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{EXAMPLE}\n")
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(listing, "rb") as stdin:
        process = subprocess.run([sys.executable, "-m", "sercli", "analyze", "-", "-m", str(tiny_model), "-o",
                                  str(tmp_path / "out.csv")], stdin=stdin, stdout=follower, stderr=follower,
                                 env=env, timeout=120)
    os.close(follower)
    output = b""
    while select.select([leader], [], [], 0.2)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    text = ANSI.sub(b"", output).decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert "1/? files 0:21 audio" in text  # counts and a spinner: no total to reach
    assert " of " not in text.split("sercli: analysed")[0]


def test_ctrl_c_takes_the_bar_down_before_the_message(tiny_model, tmp_path):
    fifo, writer = stalled_input(tmp_path)
    stopped = []

    def interrupt_once_drawn(process, output: bytes) -> bool:
        if b"analysing" in output and decoders_reading(fifo):
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            stopped.append(True)
            return True
        return False

    try:
        code, output = on_terminal(["analyze", EXAMPLE, fifo, "-m", tiny_model, "-o", tmp_path / "out.csv"],
                                   until=interrupt_once_drawn)
    finally:
        os.close(writer)
    text = ANSI.sub(b"", output).decode("utf-8", "replace")
    assert stopped and code == 130, text
    message = "sercli: error: interrupted; outputs already completed are kept"
    assert message in text
    assert "analysing" not in text.split(message)[-1]  # no bar drawn again under it
