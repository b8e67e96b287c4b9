"""Channel copies of training speech (sercli train --augment-channel): the speech as a lossy
codec or a room would hand it to a user's file. Training only; never imported by analysis.

A channel is named by a short spec:
- `mp3:32`, `aac:48`, `opus:24`: encoded at that many kbit/s by ffmpeg's encoder (at 44.1 or
  48 kHz, as films and podcasts carry them) and decoded back to 16 kHz;
- `room:0.3-0.8`: convolved with the impulse response of a shoebox room whose reverberation time
  (RT60, seconds) lies in that range, from pyroomacoustics' image-source model; each utterance
  gets one of ROOMS rooms, chosen by its path, the room's size and both positions drawn from a
  fixed seed, so a copy is the same on every run and machine;
- `eq:6`: through an equaliser that tilts the spectrum, as microphones, mixing desks and
  loudspeakers colour a voice: a low shelf below 300 Hz and a high shelf above 3 kHz (ffmpeg's
  biquad filters), each raised or lowered by up to that many dB, drawn per utterance from its path.

A plain gain needs no copy: each segment is scaled to one loudness before its functionals
(sercli/functionals.py), so a copy at another level would give the same features.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess

import numpy as np

from .audio import SAMPLE_RATE, AudioError, ffmpeg_binary, filter_audio

# codec name: (ffmpeg encoder, container written, container read, sample rate it is encoded at)
CODECS = {"mp3": ("libmp3lame", "mp3", "mp3", 44100), "aac": ("aac", "adts", "aac", 48000),
          "opus": ("libopus", "ogg", "ogg", 48000)}
KBPS = (8, 320)  # the bit rates a codec spec may ask for
RT60_S = (0.1, 2.0)  # the reverberation times a room spec may ask for
EQ_DB = (1.0, 12.0)  # the shelf gains an equaliser spec may ask for
EQ_SHELVES_HZ = (300, 3000)  # the low shelf's and the high shelf's corner frequencies
ROOMS = 48  # rooms per room spec; an utterance gets one of them
ROOM_SEED = 20171  # the rooms' draw
EQ_SEED = 20172  # the equalisers' draws
CHANNEL_COPIES = "channels-1"  # in the feature cache's key: change it when a channel's copies change


def parse_channel(text: str) -> str:
    """A channel spec in its canonical form (`mp3:32`, `room:0.3-0.8`), or ValueError saying why not."""
    kind, _, value = text.strip().lower().partition(":")
    if kind in CODECS:
        kbps = _number(text, value.removesuffix("k"), int, f"give the bit rate in kbit/s, e.g. {kind}:32")
        if not KBPS[0] <= kbps <= KBPS[1]:
            raise ValueError(f"{text!r}: the bit rate must be {KBPS[0]} to {KBPS[1]} kbit/s")
        return f"{kind}:{kbps}"
    if kind == "room":
        low, _, high = value.partition("-")
        hint = "give the reverberation time range in seconds, e.g. room:0.3-0.8"
        low_s, high_s = _number(text, low, float, hint), _number(text, high or low, float, hint)
        if not RT60_S[0] <= low_s <= high_s <= RT60_S[1]:
            raise ValueError(f"{text!r}: the reverberation times must rise from {RT60_S[0]:g} to at most "
                             f"{RT60_S[1]:g} s")
        return f"room:{low_s:g}-{high_s:g}"
    if kind == "eq":
        db = _number(text, value.removesuffix("db"), float, "give the largest shelf gain in dB, e.g. eq:6")
        if not EQ_DB[0] <= db <= EQ_DB[1]:
            raise ValueError(f"{text!r}: the shelf gain must be {EQ_DB[0]:g} to {EQ_DB[1]:g} dB")
        return f"eq:{db:g}"
    raise ValueError(f"{text!r}: not a channel; use {', '.join(f'{c}:KBPS' for c in CODECS)}, room:LOW-HIGH "
                     "or eq:DB")


def _number(text: str, value: str, parse: type, hint: str) -> int | float:
    """`value`, a number in the spec `text`, parsed by `parse` (int or float); ValueError with `hint` if it is not one."""
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"{text!r}: {hint}") from None


def apply_channel(audio: np.ndarray, spec: str, name: str) -> np.ndarray:
    """16 kHz mono `audio` as the channel `spec` (canonical, see parse_channel) delivers it; `name`
    (the utterance's path) picks its room or its equaliser. Raises AudioError where ffmpeg fails."""
    kind, _, value = spec.partition(":")
    if kind in CODECS:
        return _codec(audio, kind, int(value))
    draw = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    if kind == "eq":
        gains = np.random.default_rng([EQ_SEED, draw]).uniform(-float(value), float(value), size=2)
        return _equalise(audio, gains)
    low, high = (float(v) for v in value.split("-"))
    rooms = _room_bank(low, high)
    return _reverberate(audio, rooms[draw % len(rooms)])


def _ffmpeg(command: list[str], data: bytes, what: str) -> bytes:
    """ffmpeg's output for `data` on its input; AudioError naming `what` and ffmpeg's last word if it fails."""
    result = subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin"] + command,
                            input=data, capture_output=True)
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"{what}: {reason[-1] if reason else 'ffmpeg failed'}")
    return result.stdout


def _codec(audio: np.ndarray, codec: str, kbps: int) -> np.ndarray:
    """Encode and decode `audio` with ffmpeg, as a file in that codec would carry it."""
    encoder, muxer, demuxer, rate = CODECS[codec]
    encode = ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-c:a", encoder,
              "-b:a", f"{kbps}k", "-ar", str(rate), "-f", muxer, "pipe:1"]
    decode = ["-f", demuxer, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    data = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
    for command in (encode, decode):
        data = _ffmpeg(command, data, f"{codec} at {kbps} kbit/s")
    return np.frombuffer(data, dtype=np.float32).copy()


def _equalise(audio: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """`audio` through ffmpeg's low and high shelving filters (EQ_SHELVES_HZ) with these `gains` (dB),
    at its own RMS level, as _reverberate keeps it."""
    (low_hz, high_hz), (low_db, high_db) = EQ_SHELVES_HZ, gains
    shelves = f"lowshelf=f={low_hz}:g={low_db:.2f},highshelf=f={high_hz}:g={high_db:.2f}"
    try:
        equalised = filter_audio(audio, shelves)
    except AudioError as exc:
        raise AudioError(f"equaliser {shelves}: {exc}") from None
    return _at_level(equalised.astype(np.float64), audio)


@functools.lru_cache(maxsize=4)
def _room_bank(low_s: float, high_s: float) -> tuple[np.ndarray, ...]:
    """ROOMS impulse responses (16 kHz) of shoebox rooms with RT60 uniform in [low_s, high_s],
    drawn from ROOM_SEED: 3-8 x 3-7 x 2.4-3.5 m, talker and microphone at least 0.5 m from
    the walls and each other. Each is scaled to unit energy."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise AudioError("room channels need pyroomacoustics: pip install 'sercli[train]'") from None
    rng = np.random.default_rng([ROOM_SEED, round(low_s * 1000), round(high_s * 1000)])
    bank = []
    while len(bank) < ROOMS:
        size = rng.uniform([3.0, 3.0, 2.4], [8.0, 7.0, 3.5])
        rt60 = rng.uniform(low_s, high_s)
        talker, microphone = rng.uniform(0.5, size - 0.5), rng.uniform(0.5, size - 0.5)
        if np.linalg.norm(talker - microphone) < 0.5:
            continue
        try:
            absorption, order = pra.inverse_sabine(rt60, size)
        except ValueError:  # this room cannot be that reverberant (or that dry): draw another
            continue
        room = pra.ShoeBox(size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, 60))
        room.add_source(talker)
        room.add_microphone(microphone)
        room.compute_rir()
        response = np.asarray(room.rir[0][0], dtype=np.float64)
        bank.append((response / np.sqrt(np.sum(response ** 2))).astype(np.float32))
    return tuple(bank)


def _reverberate(audio: np.ndarray, response: np.ndarray) -> np.ndarray:
    """`audio` convolved with a room's `response`, cut to its own length, at its own RMS level
    (a room changes how the voice sounds, not how loud the file is)."""
    n = len(audio) + len(response) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(response, size), size)[:len(audio)]
    return _at_level(wet, audio)


def _at_level(wet: np.ndarray, dry: np.ndarray) -> np.ndarray:
    """`wet` (float64) scaled to the RMS level of `dry`, as float32."""
    dry_rms, wet_rms = np.sqrt(np.mean(dry.astype(np.float64) ** 2)), np.sqrt(np.mean(wet ** 2))
    if wet_rms > 0:
        wet = wet * (dry_rms / wet_rms)
    return wet.astype(np.float32)
