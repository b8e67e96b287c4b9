"""Acoustic functionals of a segment: openSMILE's eGeMAPS v02 (Eyben et al., 2016), 88 statistics
of pitch, loudness, voice quality, formants and spectral balance over the whole segment.

The features of the shared folds' classic baseline, here computed per analysed segment (at
most 3 s, as the spectrograms are) and after scaling each segment to one loudness: a recording's
gain means nothing, and left in, the corpora's 14 dB level difference would carry the label.
openSMILE (audEERING's maintained C++ extractor and its Python wrapper) is a dependency since
these features feed the default model; its research licence allows non-commercial use only, as the
shipped weights' CC BY-NC-SA 4.0 training data do.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE

EGEMAPS_SIZE = 88  # eGeMAPS v02 functionals
LEVEL_DB = -20.0  # dB re full scale of a segment's loud frames once scaled
LEVEL_PERCENTILE = 95.0  # which 25 ms frames count as its loud ones
INSTALL_HINT = "pip install 'opensmile>=2.5,<3'"  # a dependency of sercli: missing only from a --no-deps install

_local = threading.local()  # one extractor per thread: openSMILE's is not shared between threads
_pool: tuple[int, ThreadPoolExecutor] | None = None  # functionals' threads (count, pool), as many as torch's
_pool_lock = threading.Lock()


class FunctionalsUnavailable(RuntimeError):
    """openSMILE is not installed."""


def available() -> bool:
    try:
        import opensmile  # noqa: F401
    except ImportError:
        return False
    return True


class _Extractor:
    """openSMILE's eGeMAPS v02 functionals, one instance kept and reset between segments.

    `opensmile.Smile.process_signal` sets up a fresh openSMILE (its configuration parsed, its
    component graph built) for every signal and wraps the result in a pandas frame: about 4 ms a
    segment, a sixth of a 2 s segment's time. The SMILEapi instance it builds is made once here
    and reset after each run (`OpenSMILE.reset`, which the API provides for this), with the
    wrapper's own configuration; tests/test_functionals.py checks the values are identical."""

    def __init__(self) -> None:
        try:
            import opensmile
            from opensmile.core.config import config
        except ImportError as exc:
            raise FunctionalsUnavailable(f"eGeMAPS features need openSMILE: {INSTALL_HINT}") from exc
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                     feature_level=opensmile.FeatureLevel.Functionals)
        self.names = list(self.smile.feature_names)
        self._source, self._sink = config.EXTERNAL_SOURCE_COMPONENT, config.EXTERNAL_OUTPUT_COMPONENT
        options = self.smile._options()
        options.update(source=os.path.join(self.smile.default_config_root, config.EXTERNAL_INPUT_CONFIG),
                       sampleRate=SAMPLE_RATE, nBits=16)
        self._engine = self.smile._smile(options=options)
        self._rows: list[np.ndarray] = []
        self._listen()

    def _listen(self) -> None:
        """(Re-)register the sink's callback: a reset drops it. The wrapper keeps every callback it
        was given alive; only the newest is still registered, so the older ones are let go (else a
        long batch would hold one per segment)."""
        self._engine.external_sink_set_callback_ex(self._sink, lambda data, meta: self._rows.append(data.copy()))
        kept = getattr(self._engine, "_callbacks", None)
        if isinstance(kept, list):
            del kept[:-1]

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """The 88 functionals of one 16 kHz float segment (NaN where openSMILE gives none)."""
        self._rows.clear()
        # 16-bit PCM, as the wrapper feeds it, but clipped: where a loud transient sits in quieter
        # speech, the level-normalised peaks pass full scale, and the wrapper's cast wraps them round
        # (none of the shared corpora's speech segments does: 0 of 327 sampled; in 3 s windows with
        # their pauses, 6 of 228)
        pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        self._engine.external_audio_source_write_data(self._source, pcm.tobytes())
        self._engine.external_audio_source_set_eoi(self._source)
        self._engine.run()
        self._engine.reset()
        self._listen()
        if not self._rows:  # too short for a single frame
            return np.full(EGEMAPS_SIZE, np.nan, dtype=np.float32)
        return np.asarray(self._rows[0], dtype=np.float32).reshape(-1)


def _extractor() -> _Extractor:
    extractor = getattr(_local, "extractor", None)
    if extractor is None:
        extractor = _local.extractor = _Extractor()
    return extractor


def level_normalised(samples: np.ndarray, target_db: float = LEVEL_DB) -> np.ndarray:
    """`samples` scaled so that their loud frames (the LEVEL_PERCENTILE of 25 ms frame RMS) sit at
    target_db; silence stays silence."""
    samples = np.asarray(samples, dtype=np.float32)
    hop = SAMPLE_RATE // 40
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    if not len(frames):
        return samples
    loud = float(np.percentile(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)), LEVEL_PERCENTILE))
    if loud < 1e-6:  # below -120 dB: nothing to scale
        return samples
    return (samples * (10 ** (target_db / 20) / loud)).astype(np.float32)


def heavy_tailed(names: Sequence[str]) -> np.ndarray:
    """Which of the functionals `names` have unbounded tails: every coefficient of variation
    (stddevNorm: a standard deviation over a mean, which explodes where an MFCC's or a spectral
    slope's mean nears zero; on the shared corpora up to 9,000 interquartile ranges from the
    median) and the pitch slopes (hundreds of semitones a second where a track jumps)."""
    return np.array([name.endswith("_stddevNorm") or (name.startswith("F0") and "Slope" in name) for name in names])


def egemaps(samples: np.ndarray, compress_tails: bool = False) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals of one 16 kHz segment, level-normalised first (float32;
    a statistic openSMILE cannot compute, as on a segment too short for it, is 0).
    compress_tails: the heavy-tailed ones through asinh (about themselves below 1, their log
    beyond), so that one wild value cannot swamp a context's moments or the network's input."""
    extractor = _extractor()
    values = np.nan_to_num(extractor(level_normalised(samples)), nan=0.0, posinf=0.0, neginf=0.0)
    if compress_tails:
        mask = getattr(_local, "heavy", None)
        if mask is None:
            mask = _local.heavy = heavy_tailed(extractor.names)
        values[mask] = np.arcsinh(values[mask])
    return values


def functionals(segments: Sequence[np.ndarray], compress_tails: bool = False) -> torch.Tensor:
    """A batch's functionals as the networks take their input: (B, EGEMAPS_SIZE, 1) float32.
    The segments are shared among as many threads as torch uses (openSMILE runs outside the
    GIL: twice as fast on two cores); a featurising worker process, set to one, uses none."""
    if not len(segments):
        return torch.zeros(0, EGEMAPS_SIZE, 1)
    threads = min(torch.get_num_threads(), len(segments))
    if threads < 2:
        rows = [egemaps(s, compress_tails) for s in segments]
    else:
        rows = list(_threads(torch.get_num_threads()).map(lambda s: egemaps(s, compress_tails), segments))
    return torch.from_numpy(np.stack(rows))[:, :, None]


def _threads(count: int) -> ThreadPoolExecutor:
    """The process's functionals pool of `count` threads, made anew when the count changes."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != count:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (count, ThreadPoolExecutor(count, thread_name_prefix="sercli-opensmile"))
        return _pool[1]
