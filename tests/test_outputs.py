"""Outputs written as a careful Unix tool writes them, stop signals, stdin, and what a non-media file
is called: sercli.outputs, sercli.stopping and the command line around them.

In-process through CliRunner where a real descriptor is not needed; as a subprocess (the real
entry point, `python -m sercli`) for signals and for audio piped to /dev/stdin. The real
/dev/null is never touched: a device node made in tmp_path stands in for it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import EXAMPLE, REPO, tone
from sercli.cli import main
from sercli.outputs import OutputError, OutputFile, check_folder, check_writable, write_bytes

CSV_HEADER = "file,segment,start_s,end_s,label,confidence,p_angry,p_happy,p_neutral,p_sad"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def analyze(model: Path, *args, input=None):
    return CliRunner().invoke(main, ["analyze", "-m", str(model), *[str(a) for a in args]], input=input)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.suffix in (".part", ".probe")]


@pytest.fixture
def umask():
    """Set the process umask for one test, and restore it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Two seconds of a tone: quick to analyse, real audio."""
    path = tmp_path_factory.mktemp("clip") / "tone.wav"
    write_wav(path, tone(2.0))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


# --------------------------------------------------------------------------- files, links, devices


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_output_gets_0666_less_the_umask(umask, tmp_path, mask, mode):
    umask(mask)
    with OutputFile(tmp_path / "new.csv") as out:
        out.handle.write("a,b\n")
    write_bytes(tmp_path / "new.bin", b"\0")
    assert stat.S_IMODE(os.stat(tmp_path / "new.csv").st_mode) == mode
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == mode


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o664])
def test_a_replaced_output_keeps_its_mode(umask, tmp_path, mode):
    umask(0o077)
    target = tmp_path / "old.csv"
    target.write_text("old\n")
    os.chmod(target, mode)
    with OutputFile(target) as out:
        out.handle.write("new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == mode
    assert temp_files(tmp_path) == []


def test_an_output_that_fails_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "kept.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with OutputFile(target) as out:
            out.handle.write("half of the new")
            raise RuntimeError("the disk filled up")
    assert target.read_text() == "old\n"
    assert temp_files(tmp_path) == []


def test_cli_output_modes_follow_the_umask(umask, tiny_model, clip, tmp_path):
    umask(0o022)
    existing = tmp_path / "existing.csv"
    existing.write_text("old\n")
    os.chmod(existing, 0o640)
    assert analyze(tiny_model, clip, "-q", "-o", tmp_path / "new.csv").exit_code == 0
    assert analyze(tiny_model, clip, "-q", "-o", existing).exit_code == 0
    assert analyze(tiny_model, clip, "-q", "--output-dir", tmp_path / "tree").exit_code == 0
    assert stat.S_IMODE(os.stat(tmp_path / "new.csv").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o640
    assert existing.read_text().startswith(CSV_HEADER)
    (written,) = [p for p in (tmp_path / "tree").rglob("*") if p.is_file()]
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o644


def test_a_symlink_output_stays_a_link_and_its_target_is_written(tiny_model, clip, tmp_path):
    real = tmp_path / "data" / "results.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(Path("data") / "results.csv")  # relative, as people make them
    result = analyze(tiny_model, clip, "-q", "-o", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == os.path.join("data", "results.csv")
    assert real.read_text().startswith(CSV_HEADER)
    assert temp_files(tmp_path) == []


def test_a_dangling_symlink_output_creates_its_target(tiny_model, clip, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "made.json")
    assert analyze(tiny_model, clip, "-q", "-f", "json", "-o", link).exit_code == 0
    assert link.is_symlink()
    assert json.loads((tmp_path / "made.json").read_text())["file"] == str(clip)


def test_a_fifo_output_is_written_through_not_replaced(tiny_model, clip, tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = analyze(tiny_model, clip, "-q", "-o", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert not reader.is_alive(), "the reader of the FIFO never saw the end of the output"
    assert received and received[0].decode().startswith(CSV_HEADER)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temp_files(tmp_path) == []


def test_a_device_output_is_written_through_not_replaced(tiny_model, clip, tmp_path):
    device = tmp_path / "null"
    try:  # a node of the null device: the real /dev/null is never put at risk
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    result = analyze(tiny_model, clip, "-q", "-o", device)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert os.stat(device).st_rdev == os.makedev(1, 3)
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- errors before any work


def assert_usage_error_before_work(result, *causes: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sercli: error: cannot write output "), result.stderr
    assert any(cause in lines[0] for cause in causes), lines[0]
    assert "Traceback" not in result.stderr


def test_unwritable_outputs_are_usage_errors_before_decoding(tiny_model, tmp_path):
    # The input does not exist either: a decoded input would add its own "no such file" line.
    missing_input = tmp_path / "not-there.wav"
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    cases = [
        (("-o", tmp_path / "no-folder" / "x.csv"), "no such folder"),
        (("-o", in_the_way / "x.csv"), "not a folder"),
        (("--output-dir", in_the_way), "is a file, not a folder"),
        (("--output-dir", in_the_way / "sub"), "is a file, not a folder"),
    ]
    for options, cause in cases:
        result = analyze(tiny_model, missing_input, *options)
        assert_usage_error_before_work(result, cause)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # the checks create nothing


@pytest.mark.skipif(IS_ROOT, reason="root writes through permissions (the read-only mount stands in)")
def test_an_output_folder_without_write_permission_is_a_usage_error(tiny_model, clip, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert_usage_error_before_work(analyze(tiny_model, clip, "-o", locked / "x.csv"), "Permission denied")
        assert_usage_error_before_work(analyze(tiny_model, clip, "--output-dir", locked / "sub"),
                                       "Permission denied")
    finally:
        locked.chmod(0o755)


def test_an_output_on_a_read_only_file_system_is_a_usage_error(tiny_model, clip, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "--bind", str(mount), str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot bind-mount here (not root, or no mount namespace rights)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        assert_usage_error_before_work(analyze(tiny_model, clip, "-o", mount / "x.csv"), "Read-only file system")
        assert_usage_error_before_work(analyze(tiny_model, clip, "-o", mount / "sub/"), "Read-only file system")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_check_functions_name_the_path_and_create_nothing(tmp_path):
    with pytest.raises(OutputError) as caught:
        check_writable(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a folder, not a file"
    check_writable(tmp_path / "new.csv")
    check_folder(tmp_path / "a" / "b" / "c")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError) as caught:
        check_writable(tmp_path / "missing" / "x.csv")
    assert caught.value.errno == errno.ENOENT


def test_other_commands_check_their_outputs_first(tmp_path, corpus):
    file = tmp_path / "a-file"
    file.write_text("")
    runner = CliRunner()
    plotted = runner.invoke(main, ["plot", str(EXAMPLE), "-o", str(file / "x.png")])
    trained = runner.invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--fold", "none",
                                   "--epochs", "1", "--out", str(file)])
    scored = runner.invoke(main, ["evaluate", "--corpus", f"manifest={corpus / 'manifest.csv'}",
                                  "-o", str(tmp_path / "no-folder" / "scores.json")])
    assert_usage_error_before_work(plotted, "not a folder")
    assert_usage_error_before_work(trained, "is a file, not a folder")
    assert_usage_error_before_work(scored, "no such folder")


def test_a_write_failing_mid_batch_fails_that_input_only(tiny_model, clip, tmp_path, monkeypatch):
    import sercli.writers

    real = sercli.writers.CsvWriter.write
    calls = []

    def full_on_second(self, result):
        calls.append(result.file)
        if len(calls) == 2:
            self.out.write("half a row")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, result)

    monkeypatch.setattr(sercli.writers.CsvWriter, "write", full_on_second)
    second = tmp_path / "second.wav"
    second.write_bytes(clip.read_bytes())
    out = tmp_path / "out"
    result = analyze(tiny_model, clip, second, EXAMPLE, "-q", "--output-dir", out)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"sercli: error: {second}: cannot write output: [Errno {errno.ENOSPC}] No space left on device"]
    written = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert written == sorted([f"{clip.name}.csv", f"{EXAMPLE.name}.csv"])  # nothing of the second
    assert temp_files(out) == []


# --------------------------------------------------------------------------- stdin


@pytest.mark.parametrize("piped", [b"RIFF\x24\x00\x00\x00WAVEfmt ", b"ID3\x04\x00" + bytes(40),
                                   b"\x00\x00\x00\x18ftypmp42", b"some\x00binary", b"\xff\xfe\xfa garbage " * 50])
def test_audio_piped_to_dash_is_a_usage_error_naming_dev_stdin(tiny_model, piped):
    result = analyze(tiny_model, "-", input=piped)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1, result.stderr  # one line, not a line per "path"
    assert "- reads paths from stdin, one per line" in result.stderr
    assert "sercli analyze /dev/stdin" in result.stderr


def test_paths_on_stdin_still_work_with_any_bytes_in_names(tiny_model, clip, tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9 \xff.mp3")  # not UTF-8: Latin-1 names exist on old disks
    odd.write_bytes(EXAMPLE.read_bytes())
    listing = os.fsencode(str(clip)) + b"\n" + os.fsencode(str(odd)) + b"\n"
    result = analyze(tiny_model, "-", "-q", "-o", tmp_path / "out.csv", input=listing)
    assert result.exit_code == 0, result.stderr
    rows = (tmp_path / "out.csv").read_bytes().splitlines()
    assert len(rows) > 1 and all(row.startswith(os.fsencode(str(odd)) + b",") for row in rows[1:])
    on_stdout = analyze(tiny_model, odd, "-q")  # the name's own bytes, as `ls` would print them
    assert on_stdout.exit_code == 0, on_stdout.stderr
    assert on_stdout.stdout_bytes.splitlines()[1:] == rows[1:]


def test_stdin_twice_is_a_usage_error(tiny_model):
    result = analyze(tiny_model, "-", "/dev/stdin", input="")
    assert result.exit_code == 2
    assert "both read stdin" in result.stderr


def sercli_process(*args, **popen) -> subprocess.Popen:
    """The real command (its entry point, signal handlers included) in a child process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "sercli", *map(str, args)], env=env, stderr=subprocess.PIPE,
                            **popen)


def test_audio_piped_to_dev_stdin_is_analysed(tiny_model, clip, tmp_path):
    out = tmp_path / "piped.json"
    process = sercli_process("analyze", "/dev/stdin", "-m", tiny_model, "-f", "json", "-o", out, "-q",
                             stdin=subprocess.PIPE)
    _, stderr = process.communicate(clip.read_bytes(), timeout=120)
    assert process.returncode == 0, stderr.decode()
    document = json.loads(out.read_text())
    assert document["file"] == "/dev/stdin"
    assert document["duration_s"] == pytest.approx(2.0, abs=0.01)


# --------------------------------------------------------------------------- what a non-media file is called


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".m4a", ".mkv", ".mp3"])
def test_a_text_file_is_not_a_media_file_whatever_its_extension(tiny_model, tmp_path, suffix):
    text = tmp_path / f"notes{suffix}"
    text.write_text("These are meeting notes, not a recording.\n" * 20)
    result = analyze(tiny_model, text, "-q")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"sercli: error: {text}: not a media file ffmpeg can read (invalid data)"


# --------------------------------------------------------------------------- signals


def stalled_input(tmp_path: Path) -> tuple[Path, int]:
    """A FIFO carrying a WAV header and 1.5 s of audio (within the pipe's 64 kB), then nothing: the
    writer stays open, so the analysis is mid-file for as long as the test wants. Returns the FIFO
    and the writer's fd."""
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # Linux opens a FIFO read-write without waiting for a reader
    header = tmp_path / "head.wav"
    write_wav(header, tone(1.5))
    data = bytearray(header.read_bytes())
    data[4:8] = data[40:44] = (0x7FFFFFF0).to_bytes(4, "little")  # sizes of a long recording
    os.write(writer, bytes(data))
    return fifo, writer


def decoders_reading(path: Path) -> list[int]:
    """Pids of processes whose command line names `path` (ffmpeg decoding it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, " (SIGTERM)"), (signal.SIGHUP, 129, " (SIGHUP)"),
                                                (signal.SIGINT, 130, "")])
def test_a_stop_signal_mid_file_cleans_up_and_exits_128_plus_it(tiny_model, clip, tmp_path, signum, code, name):
    fifo, writer = stalled_input(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    combined = tmp_path / "all.csv"
    combined.write_text("yesterday's results\n")
    try:
        process = sercli_process("analyze", clip, fifo, "-m", tiny_model, "-o", combined, "-q",
                                 stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not decoders_reading(fifo) or not temp_files(tmp_path):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the analysis never reached the stalled input"
            time.sleep(0.1)
        time.sleep(0.5)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        os.close(writer)
    assert process.returncode == code, stderr.decode()
    assert stderr.decode() == f"sercli: error: interrupted{name}; outputs already completed are kept\n"
    assert combined.read_text() == "yesterday's results\n"  # not half of today's
    assert temp_files(tmp_path) == []
    assert decoders_reading(fifo) == []  # ffmpeg was killed, not left reading


def test_ctrl_c_during_start_up_exits_130_without_click_abort(tmp_path):
    process = sercli_process("analyze", EXAMPLE, "-o", tmp_path / "x.csv", stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # the handlers are in; torch and the model are still loading
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode() == "sercli: error: interrupted; outputs already completed are kept\n"
    assert not (tmp_path / "x.csv").exists()
