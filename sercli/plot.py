"""`sercli plot`: a segment's normal and denoised log-spectrograms side by side (paper Figures 4-5).

Needs matplotlib (`pip install "sercli[plot]"`); nothing else in sercli imports this module.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, stream_audio
from .features import FeatureConfig, log_spectrograms, pitch_tracker
from .segment import samples_between, track_part

CONTEXT_S = 1.0  # s of audio on each side that pitch tracking sees, as it would inside a region


def read_window(path: str, start_s: float, end_s: float, audio_stream: int = 0) -> np.ndarray:
    """Samples [start_s, end_s) of a media file, decoding up to end_s only."""
    first = round(start_s * SAMPLE_RATE)
    samples, reached = samples_between(stream_audio(path, audio_stream), 0, first, round(end_s * SAMPLE_RATE))
    if reached <= first:
        raise AudioError(f"starts at {start_s:g} s but the audio is only {reached / SAMPLE_RATE:.1f} s long")
    return samples


def spectrogram_pair(samples: np.ndarray, offset: int, n_samples: int, features: FeatureConfig):
    """(normal, denoised, f0) for samples[offset : offset + n_samples]: two (F, T) model inputs
    and the pitch per frame (Hz, 0 = unvoiced), the pitch tracked over all of `samples`."""
    denoising = FeatureConfig(**{**features.__dict__, "denoise": True})
    segment = samples[offset : offset + n_samples]
    f0 = track_part(pitch_tracker(denoising)(samples), offset, len(segment))
    normal = log_spectrograms([segment], FeatureConfig(**{**features.__dict__, "denoise": False}))[0]
    cleaned = log_spectrograms([segment], denoising, f0=[f0])[0]
    return normal.numpy(), cleaned.numpy(), f0


def plot_segment(path: str, start_s: float, duration_s: float, out: Path, features: FeatureConfig = FeatureConfig(),
                 audio_stream: int = 0) -> Path:
    """Write a PNG of the segment [start_s, start_s + duration_s) of a media file: its normal
    log-spectrogram and its denoised one (with the pitch track), as the models see them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .weights import atomic_write_bytes

    context_start = max(0.0, start_s - CONTEXT_S)
    samples = read_window(path, context_start, start_s + duration_s + CONTEXT_S, audio_stream)
    offset = round((start_s - context_start) * SAMPLE_RATE)
    n_samples = min(round(duration_s * SAMPLE_RATE), len(samples) - offset)
    normal, cleaned, f0 = spectrogram_pair(samples, offset, n_samples, features)
    frames = features.frames_for(n_samples)
    extent = (start_s, start_s + frames * features.hop_ms / 1000, 0, features.max_hz)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True, constrained_layout=True)
    top = max(float(normal.max()), float(cleaned.max()), 1e-6)
    for axis, image, title in ((axes[0], normal, "normal"), (axes[1], cleaned, "denoised (harmonic model)")):
        shown = axis.imshow(image[:, :frames], origin="lower", aspect="auto", extent=extent, cmap="magma",
                            vmin=0, vmax=top, interpolation="nearest")
        axis.set_title(f"{Path(path).name}, {title}")
        axis.set_xlabel("time (s)")
    times = start_s + np.arange(len(f0)) * features.hop_ms / 1000
    voiced = np.where(f0 > 0, f0, np.nan)
    axes[1].plot(times, voiced, color="cyan", linewidth=1.0, label="F0 (Praat)")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("frequency (Hz)")
    figure.colorbar(shown, ax=axes, label="normalised log-power (0 = floor)")
    image = io.BytesIO()
    figure.savefig(image, dpi=110, format="png")
    plt.close(figure)
    atomic_write_bytes(Path(out), image.getvalue())
    return out
