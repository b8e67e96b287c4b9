"""Channel copies of training speech (sercli train --augment-channel): the speech as a lossy
codec or a room would hand it to a user's file. Training only; never imported by analysis.

A channel is named by a short spec:
- `mp3:32`, `aac:48`, `opus:24`: encoded at that many kbit/s by ffmpeg's encoder (at 44.1 or
  48 kHz, as films and podcasts carry them) and decoded back to 16 kHz;
- `room:0.3-0.8`: convolved with the impulse response of a shoebox room whose reverberation time
  (RT60, seconds) lies in that range, from pyroomacoustics' image-source model; each utterance
  gets one of ROOMS rooms, chosen by its path, the room's size and both positions drawn from a
  fixed seed, so a copy is the same on every run and machine.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess

import numpy as np

from .audio import SAMPLE_RATE, AudioError, ffmpeg_binary

# codec name: (ffmpeg encoder, container written, container read, sample rate it is encoded at)
CODECS = {"mp3": ("libmp3lame", "mp3", "mp3", 44100), "aac": ("aac", "adts", "aac", 48000),
          "opus": ("libopus", "ogg", "ogg", 48000)}
KBPS = (8, 320)  # the bit rates a codec spec may ask for
RT60_S = (0.1, 2.0)  # the reverberation times a room spec may ask for
ROOMS = 48  # rooms per room spec; an utterance gets one of them
ROOM_SEED = 20171  # the rooms' draw
CHANNEL_COPIES = "channels-1"  # in the feature cache's key: change it when a channel's copies change


def parse_channel(text: str) -> str:
    """A channel spec in its canonical form (`mp3:32`, `room:0.3-0.8`), or ValueError saying why not."""
    kind, _, value = text.strip().lower().partition(":")
    if kind in CODECS:
        try:
            kbps = int(value.removesuffix("k"))
        except ValueError:
            raise ValueError(f"{text!r}: give the bit rate in kbit/s, e.g. {kind}:32") from None
        if not KBPS[0] <= kbps <= KBPS[1]:
            raise ValueError(f"{text!r}: the bit rate must be {KBPS[0]} to {KBPS[1]} kbit/s")
        return f"{kind}:{kbps}"
    if kind == "room":
        low, _, high = value.partition("-")
        try:
            low_s, high_s = float(low), float(high or low)
        except ValueError:
            raise ValueError(f"{text!r}: give the reverberation time range in seconds, e.g. room:0.3-0.8") from None
        if not RT60_S[0] <= low_s <= high_s <= RT60_S[1]:
            raise ValueError(f"{text!r}: the reverberation times must rise from {RT60_S[0]:g} to at most "
                             f"{RT60_S[1]:g} s")
        return f"room:{low_s:g}-{high_s:g}"
    raise ValueError(f"{text!r}: not a channel; use {', '.join(f'{c}:KBPS' for c in CODECS)} or room:LOW-HIGH")


def apply_channel(audio: np.ndarray, spec: str, name: str) -> np.ndarray:
    """16 kHz mono `audio` as the channel `spec` (canonical, see parse_channel) delivers it; `name`
    (the utterance's path) picks its room. Raises AudioError where ffmpeg fails."""
    kind, _, value = spec.partition(":")
    if kind in CODECS:
        return _codec(audio, kind, int(value))
    low, high = (float(v) for v in value.split("-"))
    rooms = _room_bank(low, high)
    pick = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % len(rooms)
    return _reverberate(audio, rooms[pick])


def _codec(audio: np.ndarray, codec: str, kbps: int) -> np.ndarray:
    """Encode and decode `audio` with ffmpeg, as a file in that codec would carry it."""
    encoder, muxer, demuxer, rate = CODECS[codec]
    ffmpeg = [ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin"]
    encode = ffmpeg + ["-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0", "-c:a", encoder,
                       "-b:a", f"{kbps}k", "-ar", str(rate), "-f", muxer, "pipe:1"]
    decode = ffmpeg + ["-f", demuxer, "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    data = np.ascontiguousarray(audio, dtype=np.float32).tobytes()
    for command in (encode, decode):
        result = subprocess.run(command, input=data, capture_output=True)
        if result.returncode != 0:
            reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError(f"{codec} at {kbps} kbit/s: {reason[-1] if reason else 'ffmpeg failed'}")
        data = result.stdout
    return np.frombuffer(data, dtype=np.float32).copy()


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
    dry_rms, wet_rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2)), np.sqrt(np.mean(wet ** 2))
    if wet_rms > 0:
        wet *= dry_rms / wet_rms
    return wet.astype(np.float32)
