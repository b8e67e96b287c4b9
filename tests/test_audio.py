"""sercli.audio: one ffmpeg process decodes any media file to 16 kHz mono float32, in chunks.

All media are made here, from numpy tones written as wav or from lavfi sources, once per
session (built lazily by the `media` fixture, so a single selected test only builds what it
needs). Each clip is a few seconds long; the one long input (20 min) is a small FLAC file.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

import sercli.audio as audio
from conftest import tone
from sercli.audio import (
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    AudioError,
    DecodeReport,
    ffmpeg_binary,
    load_audio,
    resample,
    stream_audio,
)

SECONDS = 3.0  # length of the test clips
AMPLITUDE = 0.5
TONE_RMS = AMPLITUDE / np.sqrt(2)  # RMS of a sine of that amplitude
LENGTH_TOLERANCE = int(0.050 * SAMPLE_RATE)  # codec priming / padding: 50 ms
FREQ_TOLERANCE = 5.0  # Hz


# --------------------------------------------------------------------------- helpers


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM wav; `samples` is (n,) or (n, channels) float in [-1, 1]."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(frames, -1, 1) * 32767).round().astype("<i2").tobytes())
    return path


def spectrum(x: np.ndarray, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    return np.fft.rfftfreq(x.size, 1 / rate), power


def peak_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    freqs, power = spectrum(x, rate)
    return float(freqs[np.argmax(power)])


def tone_fraction(x: np.ndarray, freq: float, rate: int = SAMPLE_RATE) -> float:
    """Share of the signal's energy within 20 Hz of `freq` (1.0 for a clean tone)."""
    freqs, power = spectrum(x, rate)
    return float(power[np.abs(freqs - freq) <= 20].sum() / power.sum())


def middle(x: np.ndarray, trim_s: float = 0.25) -> np.ndarray:
    """Drop the edges, where codecs fade in / pad."""
    trim = int(trim_s * SAMPLE_RATE)
    assert x.size > 3 * trim, f"only {x.size} samples decoded"
    return x[trim:-trim]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def audio_error(path, **kwargs) -> str:
    """The AudioError message load/stream raise for `path`, checked to be one line."""
    with pytest.raises(AudioError) as info:
        load_audio(str(path), **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert message == message.strip() and len(message) < 200, repr(message)
    return message


# --------------------------------------------------------------------------- media

VIDEO = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={SECONDS}"]


def _sources(folder: Path) -> dict[str, Path]:
    """Numpy-made wavs every encoded clip starts from."""
    t44 = tone(SECONDS, 440, 44100, AMPLITUDE)
    return {
        "mono44.wav": write_wav(folder / "mono44.wav", t44, 44100),
        "stereo44.wav": write_wav(folder / "stereo44.wav", np.stack([t44, t44], axis=1), 44100),
        "mono8k.wav": write_wav(folder / "mono8k.wav", tone(SECONDS, 440, 8000, AMPLITUDE), 8000),
        "mono48.wav": write_wav(folder / "mono48.wav", tone(SECONDS, 440, 48000, AMPLITUDE), 48000),
        "t300.wav": write_wav(folder / "t300.wav", tone(SECONDS, 300, 44100, AMPLITUDE), 44100),
        "t600.wav": write_wav(folder / "t600.wav", tone(SECONDS, 600, 22050, AMPLITUDE), 22050),
        # 3.5 s at 16 kHz: exactly 56000 samples, not a multiple of 16000
        "mono16_3p5.wav": write_wav(folder / "mono16_3p5.wav", tone(3.5, 440, 16000, 0.3), 16000),
    }


# name -> ffmpeg arguments before the output path; "{name.wav}" is replaced with a source's path
RECIPES: dict[str, list[str]] = {
    "h264_aac.mp4": [*VIDEO, "-i", "{mono44.wav}", "-c:v", "libx264", "-preset", "ultrafast",
                     "-pix_fmt", "yuv420p", "-c:a", "aac"],
    "mpeg4_ac3.mkv": [*VIDEO, "-i", "{mono44.wav}", "-c:v", "mpeg4", "-c:a", "ac3"],
    "opus.webm": ["-i", "{mono44.wav}", "-c:a", "libopus"],
    "mpeg4_pcm.mov": [*VIDEO, "-i", "{mono44.wav}", "-c:v", "mpeg4", "-c:a", "pcm_s16le"],
    "mpeg4_mp3.avi": [*VIDEO, "-i", "{mono44.wav}", "-c:v", "mpeg4", "-c:a", "libmp3lame"],
    "tone.mp3": ["-i", "{mono44.wav}", "-c:a", "libmp3lame"],
    "vorbis.ogg": ["-i", "{mono44.wav}", "-c:a", "libvorbis"],
    "tone.flac": ["-i", "{mono44.wav}", "-c:a", "flac"],
    "surround51_48k.flac": ["-i", "{mono48.wav}", "-af",
                            "pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0", "-c:a", "flac"],
    "video_only.mp4": [*VIDEO, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
    # a video stream first, then two audio streams: audio_stream counts audio streams only
    "two_streams.mkv": [*VIDEO, "-i", "{t300.wav}", "-i", "{t600.wav}", "-map", "0:v", "-map", "1:a",
                        "-map", "2:a", "-c:v", "mpeg4", "-c:a", "flac"],
    # 20 minutes of a 220 Hz sine (lavfi's default amplitude 1/8) in ~7 MB
    "long.flac": ["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=1200",
                  "-c:a", "flac"],
}


@pytest.fixture(scope="session")
def media(tmp_path_factory, run_ffmpeg):
    """media(name) -> Path of a clip, made on first use and kept for the session."""
    folder = tmp_path_factory.mktemp("audio-media")
    made = _sources(folder)

    def get(name: str) -> Path:
        if name not in made:
            args = []
            for arg in RECIPES[name]:
                if arg.startswith("{") and arg.endswith("}"):
                    arg = str(get(arg[1:-1]))
                args.append(arg)
            run_ffmpeg(*args, str(folder / name))
            made[name] = folder / name
        return made[name]

    return get


# --------------------------------------------------------------------------- containers / codecs

# every clip holds a 440 Hz tone of amplitude 0.5, SECONDS long
FORMATS = [
    "h264_aac.mp4",  # video track + AAC
    "mpeg4_ac3.mkv",
    "opus.webm",
    "mpeg4_pcm.mov",
    "mpeg4_mp3.avi",
    "tone.mp3",
    "vorbis.ogg",
    "tone.flac",
    "stereo44.wav",  # 44.1 kHz stereo, the same tone in both channels
    "mono8k.wav",  # 8 kHz -> upsampled to 16 kHz
    "surround51_48k.flac",  # 48 kHz 5.1, the same tone in all six channels
]



@pytest.mark.parametrize("name", FORMATS)
def test_decodes_length_and_frequency(media, name):
    report = DecodeReport()
    x = np.concatenate(list(stream_audio(str(media(name)), report=report)))

    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - SECONDS * SAMPLE_RATE) <= LENGTH_TOLERANCE, x.size
    assert report.samples == x.size
    assert report.warnings == []
    body = middle(x)
    assert abs(peak_hz(body) - 440) <= FREQ_TOLERANCE
    assert tone_fraction(body, 440) > 0.95
    assert rms(body) > 0.1 * TONE_RMS  # not silence


@pytest.mark.parametrize("name", FORMATS)
def test_decoded_level_matches_source(media, name):
    """A 0.5-amplitude tone keeps its RMS (0.354) through codec, resampling and downmix."""
    body = middle(load_audio(str(media(name))))
    assert rms(body) == pytest.approx(TONE_RMS, rel=0.10)
    assert np.abs(body).max() <= 1.0


@pytest.mark.parametrize("name", ["h264_aac.mp4", "stereo44.wav", "surround51_48k.flac"])
def test_grouping_frames_changes_no_sample(media, name, monkeypatch):
    """The decode command groups ffmpeg's frames (asetnsamples) only to save CPU: the samples
    equal those of ffmpeg's plain frame-by-frame run, the last partial group included."""
    grouped = load_audio(str(media(name)))
    command = audio._decode_command

    def ungrouped(*args):
        words = command(*args)
        at = words.index("-af")
        assert words[at + 1].startswith("asetnsamples=")
        return words[:at] + words[at + 2 :]

    monkeypatch.setattr(audio, "_decode_command", ungrouped)
    np.testing.assert_array_equal(grouped, load_audio(str(media(name))))


def test_mono_wav_decodes_sample_exact(media):
    """A 16 kHz mono wav needs no resampling: the samples come back as written."""
    x = load_audio(str(media("mono16_3p5.wav")))
    expected = tone(3.5, 440, 16000, 0.3)
    assert x.size == expected.size
    np.testing.assert_allclose(x, expected, atol=1.5 / 32767)


def test_file_names_that_look_like_options_or_protocols(media, tmp_path, monkeypatch):
    odd = tmp_path / "-a:b c é.wav"
    shutil.copy(media("mono8k.wav"), odd)
    monkeypatch.chdir(tmp_path)
    x = load_audio(odd.name)  # relative, with a colon, a leading dash, a space, non-ASCII
    assert abs(x.size - SECONDS * SAMPLE_RATE) <= 2


# --------------------------------------------------------------------------- audio_stream


def test_audio_stream_selects_among_audio_streams(media):
    path = str(media("two_streams.mkv"))
    default = load_audio(path)
    first = load_audio(path, audio_stream=0)
    second = load_audio(path, audio_stream=1)
    assert np.array_equal(default, first)
    assert abs(peak_hz(middle(first)) - 300) <= FREQ_TOLERANCE
    assert abs(peak_hz(middle(second)) - 600) <= FREQ_TOLERANCE
    for x in (first, second):
        assert abs(x.size - SECONDS * SAMPLE_RATE) <= LENGTH_TOLERANCE


def test_missing_audio_stream_index(media):
    message = audio_error(media("two_streams.mkv"), audio_stream=2)
    assert "no audio stream #2" in message


# --------------------------------------------------------------------------- chunking


def test_chunks_are_exact_except_the_last(media):
    path = str(media("mono16_3p5.wav"))
    report = DecodeReport()
    chunks = list(stream_audio(path, chunk_samples=16000, report=report))
    assert [c.size for c in chunks] == [16000, 16000, 16000, 8000]
    assert all(c.dtype == np.float32 for c in chunks)
    whole = load_audio(path)
    assert np.array_equal(np.concatenate(chunks), whole)
    assert report.samples == whole.size == 56000
    assert report.duration_s == pytest.approx(3.5)
    assert report.warnings == []


@pytest.mark.parametrize("chunk", [1, 7777, 56000, 100000])
def test_other_chunk_sizes(media, chunk):
    path = str(media("mono16_3p5.wav"))
    chunks = list(stream_audio(path, chunk_samples=chunk))
    sizes = [c.size for c in chunks]
    assert sum(sizes) == 56000
    assert all(s == chunk for s in sizes[:-1]) and 0 < sizes[-1] <= chunk
    assert np.array_equal(np.concatenate(chunks), load_audio(path))


def test_report_fills_while_streaming(media):
    report = DecodeReport()
    seen = []
    for chunk in stream_audio(str(media("mono16_3p5.wav")), chunk_samples=16000, report=report):
        seen.append(report.samples)
    assert seen == [16000, 32000, 48000, 56000]


def test_closing_the_stream_early_stops_ffmpeg(media, monkeypatch):
    path = str(media("long.flac"))  # made before the spy goes in
    started = []
    real_popen = subprocess.Popen

    def spy(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(audio.subprocess, "Popen", spy)
    begin = time.monotonic()
    stream = stream_audio(path, chunk_samples=16000)
    first = next(stream)
    stream.close()
    assert first.size == 16000
    assert len(started) == 1
    assert started[0].returncode is not None  # killed and reaped, not left running
    assert started[0].stdout.closed and started[0].stderr.closed
    assert time.monotonic() - begin < 5  # did not decode the whole 20 minutes


# --------------------------------------------------------------------------- bounded memory


def test_long_input_streams_in_bounded_memory(media):
    path = str(media("long.flac"))  # 20 min: 19.2 M samples, 76.8 MB as float32
    full_bytes = 1200 * SAMPLE_RATE * 4

    tracemalloc.start()
    try:
        # tracemalloc sees numpy buffers (else the bound below would prove nothing)
        before = tracemalloc.get_traced_memory()[0]
        probe = np.ones(1_000_000, dtype=np.float32)
        assert tracemalloc.get_traced_memory()[0] - before >= probe.nbytes
        del probe

        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        total, sum_squares, sizes = 0, 0.0, []
        for chunk in stream_audio(path):
            total += chunk.size
            sum_squares += float(np.dot(chunk, chunk))
            sizes.append(chunk.size)
            del chunk
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()

    assert abs(total - 1200 * SAMPLE_RATE) <= LENGTH_TOLERANCE
    assert all(s == CHUNK_SAMPLES for s in sizes[:-1])
    assert np.sqrt(sum_squares / total) == pytest.approx(0.125 / np.sqrt(2), rel=0.02)
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB while streaming ({full_bytes / 1e6:.1f} MB in all)"


# --------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    assert "no such file" in audio_error(tmp_path / "nothing-here.wav")


def test_directory(tmp_path):
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert "directory" in audio_error(folder)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.touch()
    assert "empty file" in audio_error(empty)


def test_text_file_named_wav(tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("these are notes, not audio\n" * 20)
    assert "not a media file" in audio_error(text)


def test_video_only_file(media):
    message = audio_error(media("video_only.mp4"))
    assert message.startswith("no audio stream") and "#" not in message


def test_wav_header_without_samples(tmp_path):
    path = write_wav(tmp_path / "header-only.wav", np.zeros(0, dtype=np.float32), 16000)
    assert "empty" in audio_error(path)


def test_truncated_mp4_with_index_at_the_end(media, tmp_path):
    data = media("h264_aac.mp4").read_bytes()
    # ffmpeg's mp4 muxer (no +faststart) writes the moov index after the media data,
    # so cutting the file in half loses the index and nothing can be decoded.
    assert data.find(b"moov") > data.find(b"mdat") > 0
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in audio_error(cut)


def test_stream_errors_before_yielding_anything(tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio\n" * 50)
    stream = stream_audio(str(text))
    with pytest.raises(AudioError):
        next(stream)


# --------------------------------------------------------------------------- partial decodes


def test_mp3_cut_in_half_decodes_the_first_half(media, tmp_path):
    """ffmpeg treats a plainly truncated mp3 as a shorter file: it stops at the last whole
    frame, exits 0 and prints nothing, so the first half comes back (no warning is possible)."""
    data = media("tone.mp3").read_bytes()
    cut = tmp_path / "half.mp3"
    cut.write_bytes(data[: len(data) // 2])
    report = DecodeReport()
    x = np.concatenate(list(stream_audio(str(cut), report=report)))
    assert 1.2 * SAMPLE_RATE < x.size < 1.8 * SAMPLE_RATE
    assert abs(peak_hz(middle(x, 0.1)) - 440) <= FREQ_TOLERANCE


def test_mp3_with_corrupt_tail_keeps_audio_and_warns(media, tmp_path):
    """Half an mp3 followed by 0xFF bytes (frame-sync-like garbage): mp3float logs "Header
    missing" / "Invalid data found" at error level and exits 0; the decoded part is kept."""
    data = media("tone.mp3").read_bytes()
    bad = tmp_path / "corrupt-tail.mp3"
    bad.write_bytes(data[: len(data) // 2] + b"\xff" * 4000)
    report = DecodeReport()
    x = np.concatenate(list(stream_audio(str(bad), report=report)))
    assert 1.2 * SAMPLE_RATE < x.size < 1.8 * SAMPLE_RATE
    assert report.samples == x.size
    assert len(report.warnings) == 1
    assert "\n" not in report.warnings[0] and "decod" in report.warnings[0]
    assert abs(peak_hz(middle(x, 0.1)) - 440) <= FREQ_TOLERANCE


def test_mp3_with_garbage_in_the_middle_resyncs(media, tmp_path):
    """ffmpeg skips the garbage, logs errors and decodes on to the end."""
    data = media("tone.mp3").read_bytes()
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    bad = tmp_path / "garbage-middle.mp3"
    bad.write_bytes(data[: len(data) // 2] + garbage + data[len(data) // 2:])
    report = DecodeReport()
    x = np.concatenate(list(stream_audio(str(bad), report=report)))
    assert abs(x.size - SECONDS * SAMPLE_RATE) <= 0.2 * SAMPLE_RATE
    assert report.warnings, "ffmpeg reported decode errors; they should reach report.warnings"
    assert "damaged or missing data" in report.warnings[0] and " @ 0x" not in report.warnings[0]


def test_wav_with_garbage_tail_stops_at_the_data_chunk(media, tmp_path):
    """The wav demuxer reads only the data chunk's declared size: a garbage tail is ignored."""
    data = media("mono8k.wav").read_bytes()
    bad = tmp_path / "garbage-tail.wav"
    bad.write_bytes(data + np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    report = DecodeReport()
    x = np.concatenate(list(stream_audio(str(bad), report=report)))
    assert x.size == SECONDS * SAMPLE_RATE
    assert report.warnings == []
    assert np.array_equal(x, load_audio(str(media("mono8k.wav"))))


# --------------------------------------------------------------------------- ffmpeg binary


def test_sercli_ffmpeg_pointing_nowhere(media, tmp_path, monkeypatch):
    missing = str(tmp_path / "no-such-ffmpeg")
    monkeypatch.setenv("SERCLI_FFMPEG", missing)
    assert ffmpeg_binary() == missing
    message = audio_error(media("mono8k.wav"))
    assert "cannot run ffmpeg" in message and missing in message


def test_sercli_ffmpeg_is_the_one_run(media, tmp_path, monkeypatch, ffmpeg_exe):
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "my-ffmpeg"
    wrapper.write_text(f'#!/bin/sh\necho called >> "{log}"\nexec "{ffmpeg_exe}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SERCLI_FFMPEG", str(wrapper))
    x = load_audio(str(media("mono8k.wav")))
    assert x.size == SECONDS * SAMPLE_RATE
    y = resample(tone(1.0, 440, 8000), 8000)
    assert y.size == SAMPLE_RATE
    assert log.read_text().split() == ["called", "called"]


def test_without_override_uses_a_working_ffmpeg(monkeypatch):
    monkeypatch.delenv("SERCLI_FFMPEG", raising=False)
    exe = ffmpeg_binary()
    assert os.path.isfile(exe) and os.access(exe, os.X_OK)


# --------------------------------------------------------------------------- resample


def test_resample_44k_to_16k_keeps_length_and_frequency():
    source = tone(2.0, 440, 44100, AMPLITUDE)
    out = resample(source, 44100)
    assert out.dtype == np.float32
    assert abs(out.size - 2 * SAMPLE_RATE) <= 2
    body = middle(out)
    assert abs(peak_hz(body) - 440) <= FREQ_TOLERANCE
    assert rms(body) == pytest.approx(TONE_RMS, rel=0.02)


def test_resample_8k_upsamples():
    out = resample(tone(2.0, 440, 8000, AMPLITUDE), 8000)
    assert abs(out.size - 2 * SAMPLE_RATE) <= 2
    assert abs(peak_hz(middle(out)) - 440) <= FREQ_TOLERANCE
    assert rms(middle(out)) == pytest.approx(TONE_RMS, rel=0.02)


def test_resample_at_16k_returns_the_same_data():
    source = tone(1.5, 440, 16000)
    out = resample(source, SAMPLE_RATE)
    assert out.dtype == np.float32
    assert np.array_equal(out, source)
    as_double = resample(source.astype(np.float64), SAMPLE_RATE)
    assert as_double.dtype == np.float32 and np.array_equal(as_double, source)
