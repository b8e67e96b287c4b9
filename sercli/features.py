"""The paper's normalised linear-frequency log-spectrogram (section 3.1), batched with torch.stft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .audio import HOP, SAMPLE_RATE

if TYPE_CHECKING:
    from .segment import Segment

LOG_EPS = 1e-10  # power floor before the log: -100 dB
BAND_HZ = 4000  # Hz: the spectrogram keeps 0-4 kHz, where the paper found the emotion
WINDOWS_MS = (20, 40)  # ms: the Hamming window lengths the paper compares
SILENCE_DB = -90.0  # dB re full scale: a segment whose level is below this is all floor
FEATURE_KINDS = ("spectrogram", "egemaps")


@dataclass(frozen=True)
class FeatureConfig:
    """Spectrogram settings; defaults are the paper's best (10 Hz grid, 40 ms window)."""

    grid_hz: int = 10  # frequency resolution: 10 Hz (DFT 1600, 400 bins) or 20 Hz (DFT 800, 200 bins)
    window_ms: int = 40  # Hamming window length, one of WINDOWS_MS
    hop_ms: int = 1000 * HOP // SAMPLE_RATE  # frame shift: 10 ms
    max_hz: int = BAND_HZ  # only 0-4 kHz is kept
    n_frames: int = 300  # zero-padded length, 3 s
    # Floor, in dB relative to the segment's speech level (see `level`); chosen from the
    # shared data with train/measure_noise_floor.py, the measurement is in the README.
    e_noise_db: float = -60.0
    # Gain normalisation. "speech": levels are taken relative to the segment's speech level
    # (the 95th percentile of its frame powers), so a quiet film and a loud one give the
    # same spectrogram. "none": absolute dB re full scale, as in the paper.
    level: str = "speech"
    level_percentile: float = 95.0
    # The paper's noise filter (sercli.denoise): voiced frames rebuilt from their pitch, the
    # rest silent. Praat pitch settings: floor and ceiling in Hz, and its voicing threshold.
    denoise: bool = False
    # Context normalisation: each frequency bin is also standardised over the speech around the
    # segment (sercli.context): in training and evaluation the speaker's, in analysis the file's
    # within context_window_s (the whole of a shorter file). 60 s did best on film-like
    # programmes of unseen speakers (train/RESULTS.md); checkpoints before 2026-11-30 say 600.
    context_norm: bool = False
    context_window_s: float = 60.0
    # Voice-typed contexts (sercli.context.Voices): a segment is standardised over the segments of
    # its context whose voice type (male, female: a classifier the checkpoint holds) is its own,
    # with that type's prior. eGeMAPS features only, for now; checkpoints before 2026-12-02 say False.
    context_voices: bool = False

    pitch_floor_hz: float = 75.0
    pitch_ceiling_hz: float = 600.0
    voicing_threshold: float = 0.45
    # What a segment becomes: "spectrogram" (all of the above), or "egemaps": openSMILE's 88
    # eGeMAPS v02 functionals of the level-normalised segment (sercli.functionals), shaped
    # (88, 1) like a one-frame spectrogram; then no denoising, and context normalisation, where
    # it is on, standardises each functional over the context's segments (see context_rate).
    kind: str = "spectrogram"
    # eGeMAPS: the heavy-tailed functionals (coefficients of variation, pitch slopes) through
    # asinh (sercli.functionals.egemaps). `sercli train` sets it; checkpoints before 2026-12-02 say False.
    compress_tails: bool = False

    def __post_init__(self) -> None:
        if self.grid_hz not in (10, 20):
            raise ValueError(f"grid must be 10 or 20 Hz, not {self.grid_hz}")
        if self.window_ms not in WINDOWS_MS:
            raise ValueError(f"window must be 20 or 40 ms, not {self.window_ms}")
        if self.level not in ("speech", "none"):
            raise ValueError(f"level must be 'speech' or 'none', not {self.level!r}")
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FEATURE_KINDS)}, not {self.kind!r}")
        if self.kind == "egemaps" and self.denoise:
            raise ValueError("eGeMAPS features take no denoising")
        if self.compress_tails and self.kind != "egemaps":
            raise ValueError("compress_tails applies to eGeMAPS features only")
        if self.context_voices and not (self.context_norm and self.kind == "egemaps"):
            raise ValueError("context_voices types the contexts of context-normalised eGeMAPS features only")

    @property
    def n_fft(self) -> int:
        return SAMPLE_RATE // self.grid_hz  # 1600 or 800 points

    @property
    def n_bins(self) -> int:
        if self.kind == "egemaps":
            from .functionals import EGEMAPS_SIZE

            return EGEMAPS_SIZE
        return self.max_hz // self.grid_hz  # 400 or 200 bins, 0 .. max_hz - grid_hz

    @property
    def context_rate(self) -> float:
        """What a second of speech adds to a context's statistics (sercli.context counts columns
        of the featurised segments): 100 spectrogram frames; for functionals, whose segment is
        one column, a third (one per longest segment, 3 s)."""
        if self.kind == "egemaps":
            return SAMPLE_RATE / self.max_samples
        return float(SAMPLE_RATE // self.hop_length)

    @property
    def win_length(self) -> int:
        return SAMPLE_RATE * self.window_ms // 1000  # 640 or 320 samples

    @property
    def hop_length(self) -> int:
        return SAMPLE_RATE * self.hop_ms // 1000  # 160 samples

    @property
    def max_samples(self) -> int:
        return self.n_frames * self.hop_length  # 48000 samples, 3 s

    def frames_for(self, n_samples: int) -> int:
        """Frames that carry signal for a segment of n_samples (frame t is centred on t * hop)."""
        return min(self.n_frames, -(-n_samples // self.hop_length))


def pad_batch(segments: list[np.ndarray], config: FeatureConfig,
              pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 16 kHz segments into (B, max_samples) zero-padded, with their lengths (B,).

    pin_memory: build the batch in page-locked memory, for a GPU. Each sample is written once
    (no zero fill first): on a GPU host, stacking and copying the batch in pageable memory took
    most of the time that features and network took on the GPU (bench/GPU.md)."""
    batch = torch.empty(len(segments), config.max_samples, pin_memory=pin_memory)
    rows = batch.numpy()
    lengths = torch.zeros(len(segments), dtype=torch.long)
    for i, samples in enumerate(segments):
        n = min(len(samples), config.max_samples)
        rows[i, :n] = samples[:n]
        rows[i, n:] = 0.0
        lengths[i] = n
    return batch, lengths


def power_spectrogram(waveforms: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """|DFT|^2 of Hamming-windowed frames, (B, samples) -> (B, n_bins, n_frames).

    Frame t is centred on sample t * hop; the signal is zero outside the segment. Power is
    divided by the window's energy so a white signal's level does not depend on the window.
    """
    dtype = torch.float32  # its rounding lies some 140 dB below the peak; float64 took 3x longer on the CPU
    window = torch.hamming_window(config.win_length, periodic=False, device=waveforms.device, dtype=dtype)
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(waveforms.to(dtype), (half, half))  # (B, samples + n_fft)
    spectrum = torch.stft(
        padded, config.n_fft, hop_length=config.hop_length, win_length=config.win_length,
        window=window, center=False, return_complex=True,
    )  # (B, n_fft / 2 + 1, frames); torch centres the short window inside the n_fft frame
    power = spectrum.real.square() + spectrum.imag.square()
    return power[:, : config.n_bins, : config.n_frames] / window.square().sum()


def normalise(power: torch.Tensor, lengths: torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """dB, gain-normalised, floored at E_noise, lifted, unit variance, zero past each segment's end.

    power: (B, n_bins, n_frames); lengths: (B,) in samples. Returns (B, n_bins, n_frames).
    """
    n_valid = torch.tensor([config.frames_for(int(n)) for n in lengths], device=power.device)
    valid = torch.arange(config.n_frames, device=power.device)[None, :] < n_valid[:, None]  # (B, T)
    db = 10.0 * torch.log10(power + LOG_EPS)  # (B, F, T)
    frame_db = 10.0 * torch.log10(power.sum(dim=1) + LOG_EPS)  # (B, T)
    level = _percentile(frame_db, valid, config.level_percentile)  # (B,)
    if config.level == "speech":
        db = db - level[:, None, None]
    lifted = (db - config.e_noise_db).clamp(min=0.0)
    lifted = lifted * valid[:, None, :]
    lifted = lifted * (level > SILENCE_DB)[:, None, None]
    nonzero = lifted > 0
    count = nonzero.sum(dim=(1, 2)).clamp(min=1)
    mean = lifted.sum(dim=(1, 2)) / count
    variance = ((lifted - mean[:, None, None]).square() * nonzero).sum(dim=(1, 2)) / count
    std = variance.sqrt()
    scale = torch.where(std > 1e-6, 1.0 / std.clamp(min=1e-6), torch.ones_like(std))
    return lifted * scale[:, None, None]


def _percentile(values: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row percentile (nearest rank, lower) over the valid entries of (B, T)."""
    filled = torch.where(valid, values, torch.full_like(values, float("inf")))
    ordered = filled.sort(dim=1).values
    count = valid.sum(dim=1).clamp(min=1)
    rank = ((count - 1).float() * q / 100.0).floor().long()
    return ordered.gather(1, rank[:, None]).squeeze(1)


def pitch_tracker(config: FeatureConfig):
    """samples -> F0 per 10 ms frame (0 where unvoiced) with the config's pitch settings, or
    None when the config does not denoise."""
    if not config.denoise:
        return None
    from functools import partial

    from .denoise import pitch_track

    return partial(pitch_track, **pitch_settings(config))


def pitch_settings(config: FeatureConfig) -> dict[str, float]:
    """The config's Praat pitch settings, as sercli.denoise.pitch_track takes them."""
    return {"floor_hz": config.pitch_floor_hz, "ceiling_hz": config.pitch_ceiling_hz,
            "voicing_threshold": config.voicing_threshold}


CPU_SUBBATCH = 8  # segments featurised (and, in sercli.weights, classified) at once on the CPU


def featurise(segments: Sequence[Segment], config: FeatureConfig,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The one featurisation stage of analysis, the Ray file task, training and evaluation:
    segments as sercli.segment cuts them (with a denoising config, each carrying its part of its
    speech region's pitch track, Segment.f0) -> spectrograms (B, n_bins, n_frames) float32 on
    `device` and the frames of each that carry signal (B,). Context normalisation, where the
    model wants it, follows in sercli.context. An eGeMAPS config gives (B, 88, 1) functionals
    and one frame each."""
    if config.kind == "egemaps":
        from .functionals import functionals

        return (functionals([s.samples for s in segments], config.compress_tails).to(device),
                torch.ones(len(segments), dtype=torch.long))
    spectrograms = log_spectrograms([s.samples for s in segments], config, device,
                                    [s.f0 for s in segments] if config.denoise else None)
    return spectrograms, torch.tensor([config.frames_for(len(s.samples)) for s in segments])


def log_spectrograms(segments: list[np.ndarray], config: FeatureConfig, device: torch.device | str = "cpu",
                     f0: list[np.ndarray] | None = None) -> torch.Tensor:
    """The model's input for a batch of 16 kHz segments: (B, n_bins, n_frames) float32.

    f0: with a denoising config, each segment's pitch per 10 ms frame (Hz, 0 = unvoiced), from
    its speech region's pitch track (sercli.denoise.pitch_track).

    On the CPU the batch is computed CPU_SUBBATCH segments at a time, with the same result: a
    batch of 32's short-time Fourier transforms take over 100 MB of short-lived arrays, whose
    churn fragmented the heap and raised the peak memory of long analyses by a quarter
    (bench/CPU_PROFILE.md)."""
    if config.denoise and (f0 is None or len(f0) != len(segments)):
        raise ValueError("a denoising feature config needs each segment's pitch track")
    device = torch.device(device)
    step = CPU_SUBBATCH if device.type == "cpu" else len(segments)
    if len(segments) <= step:
        return _log_spectrograms(segments, config, device, f0)
    return torch.cat([_log_spectrograms(segments[k : k + step], config, device,
                                        f0[k : k + step] if f0 is not None else None)
                      for k in range(0, len(segments), step)])


def _log_spectrograms(segments: list[np.ndarray], config: FeatureConfig, device: torch.device,
                      f0: list[np.ndarray] | None) -> torch.Tensor:
    waveforms, lengths = pad_batch(segments, config, pin_memory=device.type == "cuda")
    waveforms = waveforms.to(device, non_blocking=True)
    power = power_spectrogram(waveforms, config)
    if config.denoise:
        from .denoise import modified_power

        pitch = torch.zeros(len(segments), config.n_frames, dtype=power.dtype)
        for i, track in enumerate(f0):
            n = min(len(track), config.n_frames)
            pitch[i, :n] = torch.from_numpy(np.asarray(track[:n], dtype=np.float64))
        power = modified_power(power, pitch.to(power.device), config.grid_hz)
    return normalise(power, lengths.to(device), config).float()
