"""Decoding any media file ffmpeg can read into 16 kHz mono float32 PCM, streamed in chunks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Iterator

import ffmpeg
import numpy as np

SAMPLE_RATE = 16000  # Hz: every input is decoded to this
HOP = 160  # samples, 10 ms: the frame step of spectrograms, pitch tracks and speech-level frames
FRAMES_PER_S = SAMPLE_RATE // HOP  # 100 frames a second
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # samples, 30 s per read from the ffmpeg pipe
BYTES_PER_SAMPLE = 4  # float32
FFMPEG_FRAME_SAMPLES = 65536  # samples per frame inside ffmpeg, at the input's rate (see _decode_command)

MEDIA_EXTENSIONS = frozenset(
    ".wav .flac .mp3 .m4a .aac .ogg .oga .opus .wma .aif .aiff .amr .ac3 .mka "
    ".mp4 .m4v .mkv .webm .mov .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .vob".split()
)


# Names of this process's own descriptors, stdin first: ffmpeg is handed the descriptor itself
# (audio piped in: `ffmpeg -i x.mkv -f wav - | sercli analyze /dev/stdin`, or `<(...)`).
STDIN_PATHS = frozenset({"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
_DESCRIPTOR_PATH = re.compile(r"/dev/fd/(\d+)|/proc/self/fd/(\d+)")
# Box types an ISO base media file (MP4, MOV, M4A, 3GP) can begin with, at byte 4.
MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx",
                       b"moof"})


INPUT_STAND_IN = "sercli-input"


class AudioError(Exception):
    """A file could not be decoded; the message names the cause in one line."""


@dataclass
class DecodeReport:
    """Filled in while a file streams; complete once the stream is exhausted."""

    samples: int = 0
    warnings: list[str] = field(default_factory=list)
    decoder: subprocess.Popen | None = field(default=None, repr=False, compare=False)  # ffmpeg, while it runs

    @property
    def duration_s(self) -> float:
        return self.samples / SAMPLE_RATE


def ffmpeg_binary() -> str:
    """The ffmpeg to run: $SERCLI_FFMPEG, else `ffmpeg` on PATH, else the imageio-ffmpeg one."""
    override = os.environ.get("SERCLI_FFMPEG")
    if override:
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a dependency, present in any install
        raise AudioError("no ffmpeg found: install ffmpeg or the imageio-ffmpeg package") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def own_descriptor(path: str) -> int | None:
    """N when `path` names this process's descriptor N (/dev/stdin is 0), else None."""
    if path in STDIN_PATHS:
        return 0
    match = _DESCRIPTOR_PATH.fullmatch(path)
    return int(match.group(1) or match.group(2)) if match else None


def _decode_command(path: str, audio_stream: int) -> list[str]:
    descriptor = own_descriptor(path)
    # "file:" keeps a name such as "a:b.wav" from being read as a protocol.
    url = f"pipe:{descriptor}" if descriptor is not None else "file:" + os.path.abspath(path)
    # ffmpeg-python hashes its arguments as UTF-8, which a name in another encoding (its bytes
    # kept as surrogates) cannot be: the graph is built on a stand-in, swapped for the name after.
    stream = ffmpeg.input(INPUT_STAND_IN, nostdin=None, hide_banner=None)
    out = stream.output(
        "pipe:",
        map=f"0:a:{audio_stream}",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        ar=SAMPLE_RATE,
        # With float output ffmpeg does not normalise the downmix unless told: stereo would
        # come out 3 dB louder and 5.1 could exceed full scale.
        rematrix_maxval=1,
        # The decoder's frames (1024 samples for AAC) are grouped before resampling and output:
        # each frame is a handoff between ffmpeg's threads and a pipe write, and per-frame
        # handoffs cost ffmpeg as much CPU as the decoding itself. The samples are unchanged.
        af=f"asetnsamples=n={FFMPEG_FRAME_SAMPLES}:p=0",
        loglevel="error",
    )
    return [url if arg == INPUT_STAND_IN else arg for arg in out.compile(cmd=ffmpeg_binary())]


def _explain(stderr: str, path: str, audio_stream: int) -> str:
    """Turn ffmpeg's stderr into one line a user can act on."""
    text = stderr.strip()
    lowered = text.lower()
    if "matches no streams" in lowered:
        if audio_stream == 0:
            return "no audio stream"
        return f"no audio stream #{audio_stream} (streams are counted from 0)"
    no_index = "moov atom not found" in lowered
    if no_index and _starts_like_mp4(path):
        return "truncated or incomplete file (mp4 index missing), nothing decodable"
    # Without an mp4's first box, ffmpeg picked its mp4 reader by the name alone: not media.
    if no_index or "invalid data found" in lowered or "could not find codec parameters" in lowered:
        return "not a media file ffmpeg can read (invalid data)"
    if "permission denied" in lowered:
        return "permission denied"
    return f"ffmpeg: {_last_line(text, path)}"


def _starts_like_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(8)[4:8] in MP4_BOXES
    except OSError:
        return True  # cannot look: trust ffmpeg's word


def _last_line(stderr: str, path: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "ffmpeg failed without a message"
    last = re.sub(r"\[[^\]]*\]\s*", "", last)  # "[in#0/mov,mp4,... @ 0x55e1...] " tags
    if path in last:
        last = last.split(": ", 1)[-1]
    return last.strip()


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError("no such file")
    if os.path.isdir(path):
        raise AudioError("is a directory")
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied")
    if os.path.isfile(path) and own_descriptor(path) is None and os.path.getsize(path) == 0:
        raise AudioError("empty file")  # a pipe or a FIFO says 0 bytes whatever it will carry


def stream_audio(
    path: str, audio_stream: int = 0, chunk_samples: int = CHUNK_SAMPLES, report: DecodeReport | None = None
) -> Iterator[np.ndarray]:
    """Yield the file's audio as float32 chunks of `chunk_samples` (the last may be shorter).

    One ffmpeg process decodes, downmixes and resamples to 16 kHz mono; memory stays at one
    chunk whatever the input's length. Raises AudioError when nothing is decodable. When
    ffmpeg fails part-way (truncated or corrupt data) the audio decoded so far is kept and
    the failure is added to `report.warnings`.
    """
    if chunk_samples < 1:
        raise ValueError("chunk_samples must be at least 1")
    report = report if report is not None else DecodeReport()
    _check_readable(path)
    command = _decode_command(path, audio_stream)
    try:
        descriptor = own_descriptor(path)
        process = subprocess.Popen(
            command, stdin=None if descriptor == 0 else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, pass_fds=(descriptor,) if descriptor and descriptor > 2 else (),
        )
    except OSError as exc:
        raise AudioError(f"cannot run ffmpeg ({command[0]}): {exc.strerror}") from exc
    report.decoder = process

    stderr_chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: stderr_chunks.append(process.stderr.read()), daemon=True)
    drain.start()
    chunk_bytes = chunk_samples * BYTES_PER_SAMPLE
    pending = b""
    try:
        while True:
            data = process.stdout.read(chunk_bytes - len(pending))
            if not data:
                break
            pending += data
            if len(pending) == chunk_bytes:
                chunk = np.frombuffer(pending, dtype=np.float32)
                pending = b""
                report.samples += chunk.size
                yield chunk
        usable = len(pending) - len(pending) % BYTES_PER_SAMPLE
        if usable:
            chunk = np.frombuffer(pending[:usable], dtype=np.float32)
            report.samples += chunk.size
            yield chunk
    finally:
        if process.poll() is None:
            process.stdout.close()
            process.kill()
        process.wait()
        drain.join()
        process.stdout.close()
        process.stderr.close()

    stderr = b"".join(stderr_chunks).decode("utf-8", "replace")
    if process.returncode != 0 or stderr.strip():
        cause = _explain(stderr, path, audio_stream)
        if report.samples == 0:
            raise AudioError(cause)
        if process.returncode != 0:
            report.warnings.append(
                f"decoding stopped with an error after {report.duration_s:.2f} s ({cause}); "
                "the decoded part was analysed"
            )
        else:
            report.warnings.append(f"ffmpeg reported damaged or missing data ({_last_line(stderr, path)}); "
                                   f"{report.duration_s:.2f} s were decoded and analysed")
    if report.samples == 0:
        raise AudioError("the audio stream is empty (0 samples)")


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def probe_duration(path: str) -> float | None:
    """The duration a file's container states, in seconds: ffmpeg reads its header and decodes
    nothing (about 20 ms). None for what cannot be probed without being consumed (a pipe, a
    FIFO, stdin), a container that states none, or a file ffmpeg cannot open."""
    if own_descriptor(path) is not None or not os.path.isfile(path):
        return None
    command = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", "file:" + os.path.abspath(path)]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _DURATION.search(result.stderr.decode("utf-8", "replace"))
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_audio(path: str, audio_stream: int = 0) -> np.ndarray:
    """The whole file as one float32 array at 16 kHz (for short files and the Python API)."""
    return np.concatenate(list(stream_audio(path, audio_stream)))


def resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample a mono float32 signal to 16 kHz with ffmpeg's resampler."""
    if sample_rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return filter_audio(samples, sample_rate=sample_rate)


def filter_audio(samples: np.ndarray, audio_filter: str | None = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A mono float32 signal at `sample_rate` through ffmpeg: its filter graph `audio_filter`
    (e.g. "lowshelf=f=300:g=3", None: none), then resampled to 16 kHz."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    filters = {"af": audio_filter} if audio_filter else {}
    command = (
        ffmpeg.input("pipe:", format="f32le", ac=1, ar=sample_rate)
        .output("pipe:", format="f32le", ac=1, ar=SAMPLE_RATE, loglevel="error", **filters)
        .compile(cmd=ffmpeg_binary())
    )
    result = subprocess.run(command, input=samples.tobytes(), capture_output=True)
    if result.returncode != 0:
        raise AudioError(_explain(result.stderr.decode("utf-8", "replace"), "pipe:", 0))
    return np.frombuffer(result.stdout, dtype=np.float32).copy()
