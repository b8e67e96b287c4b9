"""Noise at a chosen signal-to-noise ratio, for robustness tests (paper section 5.3).

Speech power is measured over active speech only, so pauses inside an utterance do not lower
it: 10 ms frames whose level is within ACTIVE_RANGE_DB of the utterance's loud frames (its 95th
percentile) count as active, a simplified form of ITU-T P.56's active speech level. Noise power
is the mean power of the noise actually added. Noise shorter than the speech is looped, longer
noise cropped, starting at a random offset drawn from a seeded generator.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import HOP, MEDIA_EXTENSIONS, AudioError, load_audio

ACTIVE_RANGE_DB = 30.0  # frames this far below the loud frames still count as speech
BABBLE_TALKERS = (6, 10)  # babble overlaps this many utterances (inclusive range)
BABBLE_POOL = 60  # utterances per split (or run) that babble's talkers are drawn from
# The music genres of ../shared/data/noise kept for `sercli evaluate --programmes`: a model that
# trained with the music its programmes use would be scored on what it has heard. Training never
# takes them from a folder of folders; the other five genres (acoustic, electronic, folk, pop,
# rock) are the music to train with.
PROGRAMME_MUSIC = ("music_ambient", "music_chiptune", "music_jazz", "music_metal", "music_orchestral")


class NoiseError(Exception):
    """A noise folder cannot be used; the message names it and the cause."""


def active_speech_power(samples: np.ndarray) -> float:
    """Mean power of the active frames of a 16 kHz signal (linear, full scale = 1)."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x) // HOP
    if n == 0:
        return float(np.mean(x**2)) if len(x) else 0.0
    power = np.mean(x[: n * HOP].reshape(n, HOP) ** 2, axis=1)
    loud = np.percentile(power, 95)
    if loud <= 0:
        return 0.0
    return float(power[power >= loud * 10 ** (-ACTIVE_RANGE_DB / 10)].mean())


def fit_length(noise: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """n_samples of noise from a random offset, looping it as often as needed."""
    if len(noise) == 0:
        raise ValueError("empty noise")
    offset = int(rng.integers(len(noise)))
    index = (offset + np.arange(n_samples)) % len(noise)
    return noise[index]


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """speech + noise scaled to snr_db (active speech power over added noise power), float32."""
    part = fit_length(np.asarray(noise, dtype=np.float64), len(speech), rng)
    noise_power = float(np.mean(part**2))
    speech_power = active_speech_power(speech)
    if noise_power <= 0 or speech_power <= 0:
        return np.asarray(speech, dtype=np.float32).copy()
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (np.asarray(speech, dtype=np.float64) + gain * part).astype(np.float32)


def babble(utterances: list[np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Crowd speech: 6-10 of the given utterances, each at the same active level, looped to
    n_samples from random offsets and summed. Pass utterances of speakers outside the test set."""
    if len(utterances) < BABBLE_TALKERS[0]:
        raise ValueError(f"babble needs at least {BABBLE_TALKERS[0]} utterances")
    talkers = int(rng.integers(BABBLE_TALKERS[0], min(BABBLE_TALKERS[1], len(utterances)) + 1))
    out = np.zeros(n_samples)
    for i in rng.choice(len(utterances), size=talkers, replace=False):
        voice = np.asarray(utterances[i], dtype=np.float64)
        power = active_speech_power(voice)
        if power > 0:
            out += fit_length(voice / np.sqrt(power), n_samples, rng)
    return out.astype(np.float32)


def load_noise(folder: str | Path) -> np.ndarray:
    """Every media file of a noise folder, decoded and joined end to end (sorted by name), so
    short clips are cycled through. Raises NoiseError naming the folder or file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NoiseError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file())
    if not files:
        raise NoiseError(f"{folder}: no audio files")
    parts = []
    for path in files:
        try:
            parts.append(load_audio(str(path)))
        except AudioError as exc:
            raise NoiseError(f"{path}: {exc}") from exc
    joined = np.concatenate(parts)
    if not np.any(joined):
        raise NoiseError(f"{folder}: the noise is silent")
    return joined


def noise_categories(path: str | Path) -> dict[str, Path]:
    """Name -> folder: the folder itself if it holds audio, else each subfolder that does
    (e.g. ../shared/data/noise gives music_ambient, music_pop, ..., laughter)."""
    path = Path(path)
    if not path.is_dir():
        raise NoiseError(f"{path}: not a folder")

    def has_audio(folder: Path) -> bool:
        return any(p.suffix.lower() in MEDIA_EXTENSIONS for p in folder.iterdir())

    if has_audio(path):
        return {path.name: path}
    found = {sub.name: sub for sub in sorted(path.iterdir()) if sub.is_dir() and has_audio(sub)}
    if not found:
        raise NoiseError(f"{path}: no audio files in it or its subfolders")
    return found


def utterance_seed(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on the seed and a key (e.g. condition and file path), so a
    mixture is the same whichever runs or folds ask for it."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def babble_pool(paths: list[str], seed: int, key: str, clean: dict | None = None) -> list[np.ndarray]:
    """The samples of BABBLE_POOL of the utterances `paths` (drawn, seeded by seed and key), in their
    order, taken from `clean` (path -> (samples, ...), build_segments' memo) where it has them."""
    chosen = utterance_seed(seed, key).choice(len(paths), size=min(BABBLE_POOL, len(paths)), replace=False)
    return [clean[paths[i]][0] if clean and paths[i] in clean else load_audio(paths[i]) for i in sorted(chosen)]


@functools.lru_cache(maxsize=16)
def cached_noise(folder: str) -> np.ndarray:
    """load_noise, once per process and folder: featurising workers ask for it per utterance."""
    return load_noise(folder)


@dataclass
class NoisyUtterances:
    """Noise added to utterances (by index into `paths`) for training and evaluation alike, each
    utterance with its own generator seeded by `seed` and "`key`:path", so a mixture is the same
    in any process, run or order. A fixed `snr_db` with one source is an evaluation condition:
    nothing more is drawn. An SNR range (low, high) is training's augmentation: each utterance
    first draws one of `sources` and an SNR, uniform in the range. A source is "babble" (talkers
    from `babble_pool`, see babble) or a noise folder. Picklable, for build_segments' workers."""

    paths: list[str]
    sources: tuple[str, ...]
    snr_db: float | tuple[float, float]
    seed: int
    key: str
    babble_pool: list[np.ndarray] | None = None

    def __call__(self, i: int, clean: np.ndarray) -> np.ndarray:
        rng = utterance_seed(self.seed, f"{self.key}:{self.paths[i]}")
        source, snr = self.sources[0], self.snr_db
        if isinstance(snr, (tuple, list)):
            source = self.sources[int(rng.integers(len(self.sources)))]
            snr = float(rng.uniform(*snr))
        noise = babble(self.babble_pool, len(clean), rng) if source == "babble" else cached_noise(source)
        return mix(clean, noise, snr, rng)
