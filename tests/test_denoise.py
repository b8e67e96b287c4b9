"""The noise filter (sercli.denoise), noise mixing (sercli.noise) and their commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sercli.cli import main
from sercli.denoise import harmonic_depth, modified_power, peak_envelope, pitch_track
from sercli.features import FeatureConfig, log_spectrograms, power_spectrogram
from sercli.noise import active_speech_power, babble, load_noise, mix, noise_categories
from sercli.segment import SegmentationConfig, segment_audio

from conftest import tone

RATE = 16000
F0 = 150.0  # Hz, the synthetic voice's pitch
GRID = 10  # Hz per bin


def voice(seconds: float = 2.0, f0: float = F0) -> np.ndarray:
    """A harmonic 'voice': every harmonic of f0 below 4 kHz, falling 6 dB per octave."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.05 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, int(4000 / f0) + 1))).astype(np.float32)


def music(seconds: float = 2.0) -> np.ndarray:
    """Steady tones near the middle between two harmonics of F0, together as loud as voice() (0 dB
    SNR), and not harmonics of one low pitch themselves (a chord would be periodic at their
    common divisor)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return sum(0.035 * np.sin(2 * np.pi * f * t) for f in (531.0, 1283.0, 2189.0)).astype(np.float32)


def test_pitch_survives_white_noise():
    rng = np.random.default_rng(2)
    noisy = voice() + (0.03 * rng.standard_normal(2 * RATE)).astype(np.float32)
    f0 = pitch_track(noisy)  # the voice at +3.5 dB SNR
    assert np.mean(np.abs(f0[10:190] - F0) < 0.02 * F0) > 0.9


def db_frames(signal: np.ndarray, f0: np.ndarray | None = None) -> np.ndarray:
    """(F, T) dB of the power spectrogram, or of its modified version when f0 is given."""
    config = FeatureConfig(n_frames=-(-len(signal) // 160))
    power = power_spectrogram(torch.from_numpy(signal)[None], config)
    if f0 is not None:
        power = modified_power(power, torch.from_numpy(f0)[None, : power.shape[-1]], GRID)
    return 10 * np.log10(power[0].numpy() + 1e-10)


def middle(db: np.ndarray, bins: list[int]) -> np.ndarray:
    """Mean dB of the given bins over the middle second (away from the signal's edges)."""
    return db[bins, 50:150].mean(axis=1)


def test_pitch_track_finds_f0_on_the_spectrogram_frames():
    f0 = pitch_track(voice(2.0))
    assert len(f0) == 200  # one per 10 ms frame, frame i centred on sample 160 i
    assert np.all(np.abs(f0[10:190] - F0) < 1.0)
    assert np.all(pitch_track(np.zeros(RATE, dtype=np.float32)) == 0)
    assert len(pitch_track(np.zeros(100, dtype=np.float32))) == 1  # too short for Praat: unvoiced


def test_depth_is_20_db_at_0_hz_and_12_db_at_4_khz():
    depth = harmonic_depth(401, GRID)
    assert float(depth[0]) == pytest.approx(20.0)
    assert float(depth[200]) == pytest.approx(16.0)
    assert float(depth[400]) == pytest.approx(12.0)


def test_modified_spectrum_keeps_the_harmonics_and_removes_music_between_them():
    # With the known F0: steady tones fool any pitch tracker (a chord is periodic itself), and
    # tracking under noise is measured on real speech and noise by `sercli evaluate --noise`.
    clean = voice()
    noisy = clean + music()
    f0 = np.full(200, F0)
    harmonics = [15, 30, 45, 90, 150]  # 150, 300, 450, 900, 1500 Hz
    tones = [53, 128, 219]  # 531, 1283, 2189 Hz
    clean_db, noisy_db, cleaned_db = db_frames(clean), db_frames(noisy), db_frames(noisy, f0)
    # The tones stand far above the voice in the noisy spectrogram ...
    assert np.all(middle(noisy_db, tones) - middle(clean_db, tones) > 30)
    # ... and the noise filter takes them back down by more than 15 dB, to the comb's valley,
    removed = middle(noisy_db, tones) - middle(cleaned_db, tones)
    assert np.all(removed > 15), removed
    # while the harmonics keep their clean levels (the envelope passes through them).
    assert np.all(np.abs(middle(cleaned_db, harmonics) - middle(clean_db, harmonics)) < 1.5)


def test_modified_spectrum_under_white_noise_restores_the_harmonic_contrast():
    rng = np.random.default_rng(0)
    clean = voice()
    noisy = clean + (0.03 * rng.standard_normal(len(clean))).astype(np.float32)
    f0 = np.full(200, F0)
    high = list(range(210, 391, 15))  # harmonics from 2 kHz up, where the noise fills the valleys
    valleys = [b + 7 for b in high]  # half way between harmonics
    noisy_db, cleaned_db = db_frames(noisy), db_frames(noisy, f0)
    contrast_noisy = (middle(noisy_db, high) - middle(noisy_db, valleys)).mean()
    contrast_cleaned = (middle(cleaned_db, high) - middle(cleaned_db, valleys)).mean()
    assert contrast_noisy < 6  # white noise has filled the valleys
    assert contrast_cleaned > 12.5  # the comb's depth, D(f) = 12.4-13.6 dB over 2.1-3.9 kHz, is back
    assert contrast_cleaned - contrast_noisy > 8


def test_unvoiced_frames_and_noise_fall_to_the_floor():
    rng = np.random.default_rng(1)
    hiss = (0.1 * rng.standard_normal(2 * RATE)).astype(np.float32)
    config = FeatureConfig(denoise=True)
    f0 = pitch_track(hiss)
    assert np.count_nonzero(f0) < 0.05 * len(f0)
    x = log_spectrograms([hiss], config, f0=[np.zeros_like(f0)])
    assert torch.count_nonzero(x) == 0
    half = np.where(np.arange(len(f0)) < 100, F0, 0.0)  # voiced for the first second only
    x = log_spectrograms([voice()], config, f0=[half])[0]
    assert torch.count_nonzero(x[:, 100:]) == 0 and torch.count_nonzero(x[:, :100]) > 0
    with pytest.raises(ValueError, match="pitch"):
        log_spectrograms([hiss], config)


def test_envelope_passes_through_the_peaks_between_harmonics():
    db = torch.full((1, 400), -60.0, dtype=torch.float64)
    db[0, 15], db[0, 30] = 0.0, -10.0  # harmonics 1 and 2 of 150 Hz
    envelope = peak_envelope(db, torch.tensor([F0], dtype=torch.float64), GRID)[0]
    assert float(envelope[15]) == 0.0 and float(envelope[30]) == -10.0
    assert float(envelope[22]) == pytest.approx(-10 * 7 / 15)  # linear between them
    assert float(envelope[5]) == 0.0  # held below F0


def test_segments_carry_the_pitch_of_their_region(example):
    from sercli.audio import load_audio
    from sercli.features import pitch_tracker

    audio = load_audio(str(example))
    tracker = pitch_tracker(FeatureConfig(denoise=True))
    segments = segment_audio(audio, SegmentationConfig(), pitch=tracker)
    assert segments and all(len(s.f0) == -(-len(s.samples) // 160) for s in segments)
    first, second = segments[2], segments[3]  # the 4.1 s utterance, cut in two halves
    region = audio[round(first.start_s * RATE) : round(second.end_s * RATE)]
    whole = tracker(region)
    np.testing.assert_array_equal(np.concatenate([first.f0, second.f0])[: len(whole)], whole[: len(first.f0) + len(second.f0)])
    assert np.count_nonzero(first.f0) > 0.3 * len(first.f0)
    assert all(s.f0 is None for s in segment_audio(audio, SegmentationConfig()))


@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 20.0])
def test_mixing_lands_on_the_asked_snr(example, snr):
    from sercli.audio import load_audio

    speech = load_audio(str(example))[: 5 * RATE]
    noise = music(1.3)  # shorter than the speech: looped
    noisy = mix(speech, noise, snr, np.random.default_rng(0))
    added = noisy.astype(np.float64) - speech
    measured = 10 * np.log10(active_speech_power(speech) / np.mean(added**2))
    assert measured == pytest.approx(snr, abs=0.1)
    again = mix(speech, noise, snr, np.random.default_rng(0))
    np.testing.assert_array_equal(noisy, again)  # same seed, same offset


def test_active_speech_power_ignores_pauses():
    burst = tone(1.0, amplitude=0.5)
    padded = np.concatenate([np.zeros(3 * RATE, dtype=np.float32), burst, np.zeros(3 * RATE, dtype=np.float32)])
    assert active_speech_power(padded) == pytest.approx(active_speech_power(burst), rel=0.01)


def test_babble_overlaps_six_to_ten_talkers():
    talkers = [tone(0.5 + 0.1 * i, 100.0 + 37 * i) for i in range(12)]
    for seed in range(5):
        mixture = babble(talkers, RATE, np.random.default_rng(seed))
        spectrum = np.abs(np.fft.rfft(mixture))
        lines = np.count_nonzero(spectrum > 0.2 * spectrum.max())
        assert 6 <= lines <= 10 * 3  # each talker is one tone (its leakage spans at most 3 bins)
    with pytest.raises(ValueError, match="at least 6"):
        babble(talkers[:3], RATE, np.random.default_rng(0))


def test_noise_folders(tmp_path, run_ffmpeg):
    (tmp_path / "rain").mkdir()
    run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=0.5:a=0.1", "-ar", "16000", str(tmp_path / "rain" / "a.wav"))
    run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=0.25:a=0.1", "-ar", "16000", str(tmp_path / "rain" / "b.wav"))
    (tmp_path / "empty").mkdir()
    assert noise_categories(tmp_path) == {"rain": tmp_path / "rain"}
    assert noise_categories(tmp_path / "rain") == {"rain": tmp_path / "rain"}
    assert len(load_noise(tmp_path / "rain")) == 12000  # both clips, end to end
    from sercli.noise import NoiseError

    with pytest.raises(NoiseError, match="no audio files"):
        load_noise(tmp_path / "empty")
    with pytest.raises(NoiseError, match="not a folder"):
        noise_categories(tmp_path / "nope")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_analyze_denoise_end_to_end(model_dir, example):
    result = invoke("analyze", example, "--denoise", "-m", model_dir / "tiny-denoise.pt", "-f", "json", "-q")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == "tiny-denoise" and len(document["segments"]) == 5
    plain = invoke("analyze", example, "-m", model_dir / "tiny-lstm.pt", "-f", "json", "-q")
    assert [s["start_s"] for s in json.loads(plain.stdout)["segments"]] == [s["start_s"] for s in document["segments"]]


def test_analyze_denoise_refuses_a_normal_model_and_names_the_missing_default(model_dir, example, no_default_model):
    result = invoke("analyze", example, "--denoise", "-m", model_dir / "tiny-lstm.pt")
    assert result.exit_code == 2
    assert "trained on normal spectrograms" in result.stderr and "Traceback" not in result.stderr
    result = invoke("analyze", example, "--denoise")  # the plain network and the denoising one
    assert result.exit_code == 2
    assert "no model 'cnn-lstm-10hz' is installed (--denoise runs it beside" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = invoke("analyze", example, "-m", "cnn-lstm-10hz-denoise")
    assert result.exit_code == 2 and "unknown model 'cnn-lstm-10hz-denoise' (installed: none)" in result.stderr
    result = invoke("analyze", example)  # the default model, the eGeMAPS MLPs
    assert result.exit_code == 2 and "no default model 'egemaps-mlp'" in result.stderr


def test_evaluate_with_noise_conditions(corpus, model_dir, tmp_path, run_ffmpeg):
    noise = tmp_path / "noise" / "hum"
    noise.mkdir(parents=True)
    run_ffmpeg("-f", "lavfi", "-i", "sine=f=97:d=1", "-ar", "16000", str(noise / "hum.wav"))
    out = tmp_path / "scores.json"
    result = invoke("evaluate", "--model", model_dir / "tiny-lstm.pt", "--model", model_dir / "tiny-denoise.pt",
                    "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", corpus / "folds.csv",
                    "--fold", "all", "--noise", tmp_path / "noise", "--snr", "0", "--snr", "10",
                    "--cache", tmp_path / "cache", "-o", out)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "condition" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| clean", "| hum 0 dB", "| hum 10 dB"]
    scores = json.loads(out.read_text())
    assert len(scores) == 2 and set(scores[1]["conditions"]) == {"clean", "hum 0 dB", "hum 10 dB"}
    for condition in scores[1]["conditions"].values():
        assert sum(r["utterance"]["count"] for r in condition["runs"].values()) == 8
    noisy, clean = scores[0]["conditions"]["hum 0 dB"], scores[0]["conditions"]["clean"]
    assert noisy["runs"]["fold1"]["segment"]["count"] == clean["runs"]["fold1"]["segment"]["count"]


def test_evaluate_noise_errors(corpus, model_dir, tmp_path):
    base = ["evaluate", "--model", model_dir / "tiny-lstm.pt", "--corpus", f"manifest={corpus / 'manifest.csv'}"]
    result = invoke(*base, "--noise", tmp_path / "nothing-here")
    assert result.exit_code == 2 and "not a folder" in result.stderr
    result = invoke(*base, "--snr", "0")
    assert result.exit_code == 2 and "--snr needs --noise" in result.stderr


def test_plot_writes_a_png(example, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "segment.png"
    result = invoke("plot", example, "--start", "11.7", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = invoke("plot", example, "--start", "99", "-o", tmp_path / "late.png")
    assert result.exit_code == 1 and "only 21.5 s long" in result.stderr
    assert not (tmp_path / "late.png").exists()


def test_analyze_with_an_ensemble_of_a_normal_and_a_denoising_model(model_dir, example):
    both = f"{model_dir / 'tiny-lstm.pt'}+{model_dir / 'tiny-denoise.pt'}"
    result = invoke("analyze", example, "--denoise", "-m", both, "-f", "json", "-q")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == "tiny-lstm+tiny-denoise" and len(document["segments"]) == 5
    alone = [json.loads(invoke("analyze", example, "-m", model_dir / name, "-f", "json", "-q").stdout)
             for name in ("tiny-lstm.pt", "tiny-denoise.pt")]
    for k, segment in enumerate(document["segments"]):
        for label, p in segment["probs"].items():
            assert p == pytest.approx((alone[0]["segments"][k]["probs"][label]
                                       + alone[1]["segments"][k]["probs"][label]) / 2, abs=2e-4)
    refused = invoke("analyze", example, "-m", both, "--ray=local")
    assert refused.exit_code == 2 and "--ray runs one model, not an ensemble" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_evaluate_scores_an_ensemble_as_the_mean_of_its_models(corpus, model_dir, tmp_path, run_ffmpeg):
    """evaluate --model A+B: on clean and noisy speech alike, each segment's posteriors are the
    mean of A's and B's (a normal and a denoising model, each with its own features); scored
    after A and B, the ensemble reuses their posteriors, and alone it gives the same."""
    from sercli.corpora import assign_folds, plan_splits, read_corpus, read_folds
    from sercli.evaluation import CLEAN, Condition, run_evaluation

    utterances = assign_folds(read_corpus(f"manifest={corpus / 'manifest.csv'}"), read_folds(corpus / "folds.csv"))
    splits = plan_splits(utterances, "all", "auto")
    (tmp_path / "hum").mkdir()
    run_ffmpeg("-f", "lavfi", "-i", "sine=f=97:d=1", "-ar", "16000", str(tmp_path / "hum" / "hum.wav"))
    conditions = (CLEAN, Condition("hum", 5.0, str(tmp_path / "hum"), 0))
    a, b = str(model_dir / "tiny-lstm.pt"), str(model_dir / "tiny-denoise.pt")
    kept: dict = {}
    results = [run_evaluation(utterances, splits, spec, "cpu", "fp32", None, log=lambda _: None,
                              conditions=conditions, scored_segments=kept) for spec in (a, b, f"{a}+{b}")]
    assert results[2]["model"] == f"{a}+{b}" and results[2]["runs"]["fold1"]["model"] == f"{a}+{b}"
    assert set(results[2]["conditions"]) == {"clean", "hum 5 dB"}
    assert len(kept) == 3 * len(conditions) * len(splits)
    for condition in conditions:
        for split in splits:
            (p, utterance, *_), (q, _, labels, _), (mean, *_) = (
                kept[spec, condition.label, split.name, "speaker", 10.0] for spec in (a, b, f"{a}+{b}"))
            torch.testing.assert_close(mean, (p + q) / 2)
    alone = run_evaluation(utterances, splits, f"{a}+{b}", "cpu", "fp32", None, log=lambda _: None,
                           conditions=conditions)
    assert alone["conditions"] == results[2]["conditions"]
