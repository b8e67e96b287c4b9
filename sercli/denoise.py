"""The paper's harmonic noise filter (section 5.2): rebuild each voiced frame from its pitch.

For a voiced frame with fundamental F0 the modified log-power spectrum is (eq. 1)

    S(f) = E(f) - 0.5 * (1 - cos(2 pi f / F0)) * D(f)

E(f) being the frame's spectral envelope and D(f) a harmonic depth falling linearly from 20 dB
at 0 Hz to 12 dB at 4 kHz. Unvoiced frames become silence (the spectrogram's floor). Whatever is
not one harmonic voice (music, crowds, applause) keeps at most the level of the voice's envelope
at its harmonics and is removed between them.

E(f) is a curve through the harmonic peaks: the highest bin within a quarter of F0 of each k*F0,
joined linearly across frequency. Peaks stand above noise that fills the valleys between the
harmonics, so this envelope follows the voice where cepstral smoothing (a low-quefrency lifter of
the whole log spectrum) is pulled up by the noise; train/measure_envelope.py measures both.

Pitch comes from Praat's autocorrelation method (praat-parselmouth), run once per speech region
so that segment edges cut no analysis window; frames are 10 ms apart like the spectrogram's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .audio import HOP, SAMPLE_RATE
from .features import BAND_HZ, LOG_EPS

HOP_S = HOP / SAMPLE_RATE  # s: pitch frames are the spectrogram's, 10 ms apart

DEPTH_AT_0_DB = 20.0  # D(0 Hz), dB
DEPTH_AT_4K_DB = 12.0  # D(4 kHz), dB
PEAK_SEARCH = 0.25  # harmonic peaks are searched within this fraction of F0 around k * F0


def pitch_track(samples: np.ndarray, floor_hz: float = 75.0, ceiling_hz: float = 600.0,
                voicing_threshold: float = 0.45) -> np.ndarray:
    """F0 in Hz every 10 ms of a 16 kHz signal, 0 where unvoiced: frame i is centred on
    sample i * HOP, as spectrogram frames are. Praat's "To Pitch (ac)" with its default costs."""
    import parselmouth

    n_frames = -(-len(samples) // HOP)
    f0 = np.zeros(n_frames)
    if len(samples) < 3 * SAMPLE_RATE / floor_hz:  # Praat needs three periods of the floor
        return f0
    sound = parselmouth.Sound(np.asarray(samples, dtype=np.float64), SAMPLE_RATE)
    pitch = sound.to_pitch_ac(time_step=HOP_S, pitch_floor=floor_hz, pitch_ceiling=ceiling_hz,
                              voicing_threshold=voicing_threshold)
    times = pitch.xs()  # frame centres, s
    values = pitch.selected_array["frequency"]  # 0 where unvoiced
    if len(times) == 0:
        return f0
    index = np.rint((np.arange(n_frames) * HOP_S - times[0]) / HOP_S).astype(int)
    inside = (index >= 0) & (index < len(values))
    f0[inside] = values[index[inside]]
    return f0


def harmonic_depth(n_bins: int, grid_hz: float) -> torch.Tensor:
    """D(f) in dB on the grid (n_bins,): 20 dB at 0 Hz falling linearly to 12 dB at 4 kHz."""
    freqs = torch.arange(n_bins, dtype=torch.float64) * grid_hz
    return DEPTH_AT_0_DB + (DEPTH_AT_4K_DB - DEPTH_AT_0_DB) * freqs / BAND_HZ


def _running_max(db: torch.Tensor, half_width: int) -> torch.Tensor:
    """Max over +-half_width bins of each bin, (N, F) -> (N, F)."""
    if half_width == 0:
        return db
    padded = torch.nn.functional.pad(db[:, None, :], (half_width, half_width), value=-math.inf)
    return torch.nn.functional.max_pool1d(padded, 2 * half_width + 1, stride=1)[:, 0, :]


def harmonic_peaks(db: torch.Tensor, f0: torch.Tensor, grid_hz: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Level of each harmonic k * F0 (k = 1, 2, ...) below the top bin: (N, K) dB and the number
    of harmonics inside the band (N,). db: (N, F) log-power spectra; f0: (N,) Hz, all > 0."""
    n, bins = db.shape
    top_hz = (bins - 1) * grid_hz
    count = torch.clamp(torch.floor(top_hz / f0), min=1).long()  # (N,)
    k_max = int(count.max())
    widths = torch.clamp(torch.round(PEAK_SEARCH * f0 / grid_hz), min=0).long()  # (N,) bins
    harmonics = torch.arange(1, k_max + 1, dtype=f0.dtype, device=f0.device)  # (K,)
    centre = torch.round(harmonics[None, :] * f0[:, None] / grid_hz).long().clamp(max=bins - 1)  # (N, K)
    peaks = torch.empty(n, k_max, dtype=db.dtype, device=db.device)
    for width in torch.unique(widths).tolist():
        rows = widths == width
        peaks[rows] = torch.gather(_running_max(db[rows], width), 1, centre[rows])
    return peaks, count


def peak_envelope(db: torch.Tensor, f0: torch.Tensor, grid_hz: float) -> torch.Tensor:
    """E(f): the harmonic peaks joined linearly across frequency, held flat below F0 and above the
    last harmonic in the band. db: (N, F); f0: (N,) Hz > 0. Returns (N, F) dB."""
    n, bins = db.shape
    peaks, count = harmonic_peaks(db, f0, grid_hz)  # (N, K)
    k_max = peaks.shape[1]
    # Position of each bin on the harmonic axis: 1.0 is F0, 2.0 its second harmonic, ...
    position = torch.arange(bins, dtype=f0.dtype, device=f0.device)[None, :] * grid_hz / f0[:, None]  # (N, F)
    position = torch.minimum(torch.clamp(position, min=1.0), count[:, None].to(f0.dtype))
    lower = torch.clamp(torch.floor(position).long(), max=k_max) - 1  # index into peaks, 0-based
    upper = torch.minimum(lower + 1, count[:, None] - 1)
    share = (position - torch.floor(position)).to(db.dtype)
    return torch.gather(peaks, 1, lower) * (1 - share) + torch.gather(peaks, 1, upper) * share


def cepstral_envelope(db: torch.Tensor, f0: torch.Tensor, grid_hz: float) -> torch.Tensor:
    """E(f) by cepstral smoothing, for comparison: the log spectrum's real cepstrum cut below
    half the pitch period's quefrency. db: (N, F); f0: (N,) Hz > 0. Returns (N, F) dB."""
    n, bins = db.shape
    mirrored = torch.cat([db, db.flip(1)], dim=1)  # even extension: a real, symmetric spectrum
    cepstrum = torch.fft.rfft(mirrored, dim=1)  # (N, F + 1)
    period = 2 * bins * grid_hz / f0  # quefrency index of the harmonic comb
    keep = torch.arange(cepstrum.shape[1], device=db.device)[None, :] < (0.5 * period)[:, None]
    return torch.fft.irfft(cepstrum * keep, n=2 * bins, dim=1)[:, :bins]


def modified_power(power: torch.Tensor, f0: torch.Tensor, grid_hz: float, envelope=peak_envelope) -> torch.Tensor:
    """Eq. 1 applied to every voiced frame of a batch of power spectrograms.

    power: (B, F, T); f0: (B, T) Hz per frame, 0 where unvoiced. Returns (B, F, T) power, zero
    in unvoiced frames (they fall to the spectrogram's floor).
    """
    batch, bins, frames = power.shape
    out = torch.zeros_like(power)
    voiced = f0.to(power.device) > 0  # (B, T)
    if not bool(voiced.any()):
        return out
    db = 10.0 * torch.log10(power.permute(0, 2, 1)[voiced] + LOG_EPS)  # (N, F) voiced frames only
    pitch = f0.to(power.device)[voiced].to(db.dtype)  # (N,)
    freqs = torch.arange(bins, dtype=db.dtype, device=db.device) * grid_hz
    comb = 0.5 * (1 - torch.cos(2 * math.pi * freqs[None, :] / pitch[:, None]))  # (N, F), 0 at harmonics
    depth = harmonic_depth(bins, grid_hz).to(db.device, db.dtype)
    modified = envelope(db, pitch, grid_hz) - comb * depth  # (N, F) dB
    out.permute(0, 2, 1)[voiced] = torch.pow(10.0, modified / 10.0)  # a view: writes into out
    return out
