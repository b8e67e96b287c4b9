"""The spectrogram against a plain numpy implementation of the paper's section 3.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sercli.features import FeatureConfig, log_spectrograms, pad_batch

from conftest import tone


def reference(samples: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Straight from the text: frames every 10 ms, Hamming window, DFT, 0-4 kHz, dB, floor, lift, scale."""
    samples = samples[: config.max_samples].astype(np.float64)
    half = config.n_fft // 2
    padded = np.concatenate([np.zeros(half), samples, np.zeros(config.max_samples - len(samples) + half)])
    window = np.zeros(config.n_fft)
    offset = (config.n_fft - config.win_length) // 2
    window[offset : offset + config.win_length] = np.hamming(config.win_length)
    power = np.empty((config.n_bins, config.n_frames))
    for t in range(config.n_frames):
        frame = padded[t * config.hop_length : t * config.hop_length + config.n_fft] * window
        power[:, t] = np.abs(np.fft.rfft(frame))[: config.n_bins] ** 2
    power /= np.sum(np.hamming(config.win_length) ** 2)
    valid = int(np.ceil(len(samples) / config.hop_length))
    db = 10 * np.log10(power + 1e-10)
    frame_db = np.sort(10 * np.log10(power[:, :valid].sum(axis=0) + 1e-10))
    level = frame_db[int(np.floor((valid - 1) * config.level_percentile / 100))]
    if config.level == "speech":
        db -= level
    lifted = np.maximum(db - config.e_noise_db, 0.0)
    lifted[:, valid:] = 0.0
    nonzero = lifted[lifted > 0]
    return lifted / nonzero.std() if nonzero.size and nonzero.std() > 1e-6 else lifted


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding pitch with syllable-rate amplitude and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.1 * voice * envelope + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("grid_hz,window_ms", [(10, 40), (20, 40), (10, 20), (20, 20)])
@pytest.mark.parametrize("level", ["speech", "none"])
def test_matches_numpy_reference(grid_hz, window_ms, level):
    config = FeatureConfig(grid_hz=grid_hz, window_ms=window_ms, level=level,
                           e_noise_db=-60.0 if level == "speech" else -90.0)
    segments = [speech_like(3.0), speech_like(1.37, seed=1), speech_like(2.2, seed=2) * 0.01]
    ours = log_spectrograms(segments, config).numpy()
    assert ours.shape == (3, config.n_bins, 300)
    # The STFT runs in float32: against the float64 reference that is 1e-5 here (about 1e-4 dB),
    # and 2e-4 with an absolute floor 50 dB below the quiet segment's peak.
    tolerance = 1e-4 if level == "speech" else 1e-3
    for i, samples in enumerate(segments):
        np.testing.assert_allclose(ours[i], reference(samples, config), atol=tolerance)


def test_shapes_and_grid():
    assert (FeatureConfig().n_fft, FeatureConfig().n_bins) == (1600, 400)
    assert (FeatureConfig(grid_hz=20).n_fft, FeatureConfig(grid_hz=20).n_bins) == (800, 200)
    assert FeatureConfig(window_ms=20).win_length == 320
    with pytest.raises(ValueError):
        FeatureConfig(grid_hz=15)


def test_tone_lands_in_its_bin():
    config = FeatureConfig()
    spectrogram = log_spectrograms([tone(2.0, freq=440.0)], config)[0]
    assert int(spectrogram[:, 100].argmax()) == 44  # 10 Hz bins: 440 Hz is bin 44


def test_normalisation_properties():
    config = FeatureConfig()
    short = speech_like(1.0)
    x = log_spectrograms([short], config)[0]
    assert float(x.min()) == 0.0
    assert torch.all(x[:, 100:] == 0)  # 1 s = 100 frames; the rest is zero padding
    nonzero = x[x > 0]
    assert abs(float(nonzero.std()) - 1.0) < 1e-3


def test_gain_normalisation_ignores_level():
    config = FeatureConfig()
    loud, quiet = speech_like(2.0), speech_like(2.0) * 10 ** (-20 / 20)
    a, b = log_spectrograms([loud, quiet], config)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


def test_silence_is_all_floor():
    x = log_spectrograms([np.zeros(16000, dtype=np.float32)], FeatureConfig())
    assert torch.all(x == 0)


@pytest.mark.parametrize("denoise", [False, True])
def test_spectrograms_computed_a_few_at_a_time_equal_the_whole_batch(denoise, monkeypatch):
    """On the CPU log_spectrograms works CPU_SUBBATCH segments at a time (for memory); the
    result, pitch tracks included, is that of the whole batch at once."""
    from sercli import features

    rng = np.random.default_rng(3)
    lengths = (48000, 800, 16000, 47999, 3000, 32000, 161)
    samples = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    f0 = [np.where(rng.random(n // 160 + 1) < 0.6, rng.uniform(90, 300, n // 160 + 1), 0.0) for n in lengths]
    config = FeatureConfig(denoise=denoise)
    monkeypatch.setattr(features, "CPU_SUBBATCH", 100)
    whole = log_spectrograms(samples, config, "cpu", f0 if denoise else None)
    monkeypatch.setattr(features, "CPU_SUBBATCH", 3)
    pieces = log_spectrograms(samples, config, "cpu", f0 if denoise else None)
    assert pieces.shape == whole.shape == (len(samples), config.n_bins, config.n_frames)
    torch.testing.assert_close(pieces, whole)
    if denoise:
        with pytest.raises(ValueError, match="pitch track"):
            log_spectrograms(samples, config, "cpu", f0[:-1])


def test_batches_are_zero_padded_and_clipped_whatever_the_memory_held():
    config = FeatureConfig()
    # Fill the allocator's recent memory with non-zeros, so a batch built in uninitialised
    # memory would show them in its padding.
    for _ in range(3):
        torch.full((4, config.max_samples), 7.0)
    rng = np.random.default_rng(5)
    segments = [rng.standard_normal(n) for n in (1, 800, config.max_samples + 500)]  # float64 in
    batch, lengths = pad_batch(segments, config)
    assert batch.dtype == torch.float32 and batch.shape == (3, config.max_samples)
    assert lengths.tolist() == [1, 800, config.max_samples]
    for row, samples, n in zip(batch, segments, lengths.tolist()):
        assert torch.equal(row[:n], torch.from_numpy(samples[:n].astype(np.float32)))
        assert not row[n:].any()
