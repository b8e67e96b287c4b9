"""Copies of training speech: channels (codecs through ffmpeg, rooms from pyroomacoustics;
sercli train --augment-channel) and pairs of utterances (--augment-pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sercli.audio import SAMPLE_RATE, load_audio
from sercli.channels import _equalise, apply_channel, parse_channel
from sercli.cli import main
from sercli.corpora import read_manifest
from sercli.model import LABELS
from sercli.weights import load_model


def _lag_and_match(dry: np.ndarray, wet: np.ndarray) -> tuple[int, float]:
    """The delay of `wet` behind `dry` (samples) and their correlation once aligned."""
    n = min(len(dry), len(wet))
    lags = np.correlate(wet[:n], dry[:n], "full")
    lag = int(lags.argmax()) - (n - 1)
    a, b = (dry[: n - lag], wet[lag:n]) if lag >= 0 else (dry[-lag:n], wet[: n + lag])
    return lag, float(np.corrcoef(a, b)[0, 1])


def test_channel_specs_are_checked_and_made_canonical():
    assert parse_channel("MP3:32k") == "mp3:32"
    assert parse_channel(" aac:48 ") == "aac:48"
    assert parse_channel("room:0.30-0.8") == "room:0.3-0.8"
    assert parse_channel("room:0.5") == "room:0.5-0.5"
    assert parse_channel("EQ:6dB") == "eq:6"
    for bad, why in [("flac:32", "not a channel"), ("mp3:fast", "bit rate"), ("opus:4", "8 to 320"),
                     ("room:0.8-0.3", "rise"), ("room:x", "seconds"), ("room:0.2-5", "at most"),
                     ("eq:loud", "in dB"), ("eq:20", "1 to 12")]:
        with pytest.raises(ValueError, match=why):
            parse_channel(bad)


@pytest.mark.parametrize("codec", ["mp3:32", "aac:48", "opus:24"])
def test_a_codec_copy_is_the_same_speech_a_little_late_and_changed(example, codec):
    dry = load_audio(str(example))[: 5 * SAMPLE_RATE]
    wet = apply_channel(dry, codec, "any")
    assert abs(len(wet) - len(dry)) < 0.1 * SAMPLE_RATE  # encoder priming at most
    lag, match = _lag_and_match(dry, wet)
    assert 0 <= lag < 0.05 * SAMPLE_RATE and match > 0.9
    assert not np.allclose(wet[lag:lag + len(dry) // 2], dry[: len(dry) // 2], atol=1e-3)  # a lossy copy
    assert np.array_equal(wet, apply_channel(dry, codec, "other"))  # the same on every call


def test_a_room_copy_is_reverberant_at_the_dry_level_and_fixed_per_utterance(example):
    dry = load_audio(str(example))[: 5 * SAMPLE_RATE]
    wet = apply_channel(dry, "room:0.6-0.9", "a.wav")
    assert len(wet) == len(dry)
    assert np.sqrt(np.mean(wet ** 2)) == pytest.approx(np.sqrt(np.mean(dry ** 2)), rel=1e-3)
    assert np.array_equal(wet, apply_channel(dry, "room:0.6-0.9", "a.wav"))
    names = [f"{n}.wav" for n in range(12)]
    assert len({apply_channel(dry, "room:0.6-0.9", name)[:4000].tobytes() for name in names}) > 1  # rooms vary

    def tail(signal: np.ndarray) -> float:
        """The energy of the 300 ms after each loud 10 ms frame's onset, relative to that frame's:
        speech smeared by a room keeps more of it."""
        frames = signal[: len(signal) // 160 * 160].reshape(-1, 160)
        energy = (frames.astype(np.float64) ** 2).sum(axis=1)
        loud = np.flatnonzero(energy > 0.3 * energy.max())
        loud = loud[loud + 31 < len(energy)]
        return float(np.mean([energy[i + 20:i + 31].sum() / energy[i] for i in loud]))

    dry_room = apply_channel(dry, "room:0.15-0.2", "a.wav")
    assert tail(wet) > tail(dry_room)  # longer reverberation times ring longer
    # a room's direct sound still carries the voice
    assert _lag_and_match(dry, dry_room)[1] > 0.3


def _band_db(wet: np.ndarray, dry: np.ndarray, low_hz: float, high_hz: float) -> float:
    """How much louder `wet` is than `dry` between these frequencies, in dB."""
    frequency = np.fft.rfftfreq(len(dry), 1 / SAMPLE_RATE)
    band = (frequency >= low_hz) & (frequency < high_hz)
    power = [np.sum(np.abs(np.fft.rfft(x.astype(np.float64))[band]) ** 2) for x in (wet, dry)]
    return float(10 * np.log10(power[0] / power[1]))


def test_an_equaliser_copy_tilts_the_spectrum_at_the_dry_level(example):
    dry = load_audio(str(example))[: 5 * SAMPLE_RATE]
    wet = _equalise(dry, np.array([6.0, -6.0]))  # bass up, treble down
    assert len(wet) == len(dry)
    assert np.sqrt(np.mean(wet ** 2)) == pytest.approx(np.sqrt(np.mean(dry ** 2)), rel=1e-3)
    tilt = _band_db(wet, dry, 50, 200) - _band_db(wet, dry, 5000, 7500)
    assert 9 < tilt < 13  # about 12 dB between the shelves, less what their slopes leave out
    flipped = _equalise(dry, np.array([-6.0, 6.0]))
    assert _band_db(flipped, dry, 50, 200) - _band_db(flipped, dry, 5000, 7500) == pytest.approx(-tilt, abs=1)
    # each utterance gets its own equaliser, the same on every call
    copies = [apply_channel(dry, "eq:6", f"{n}.wav") for n in range(6)]
    assert np.array_equal(copies[0], apply_channel(dry, "eq:6", "0.wav"))
    tilts = [_band_db(c, dry, 50, 200) - _band_db(c, dry, 5000, 7500) for c in copies]
    assert max(tilts) - min(tilts) > 3 and all(abs(t) < 13 for t in tilts)


def test_train_with_channel_copies_tests_the_same_speech_and_records_them(corpus, tmp_path):
    cache = tmp_path / "cache"
    args = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--fold", "1", "--epochs", "1", "--device", "cpu", "--cache", str(cache), "--workers", "1"]
    runner = CliRunner()
    plain = runner.invoke(main, args + ["--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    result = runner.invoke(main, args + ["--out", str(tmp_path / "coded"), "--augment-channel", "aac:48",
                                         "--augment-channel", "room:0.3-0.5", "--augment-channel", "AAC:48k",
                                         "--augment-speed", "1.1"])
    assert result.exit_code == 0, result.output
    assert "24 speed, channel or pair copies" in result.output  # 8 utterances x (one speed + two channels)
    meta = load_model(tmp_path / "coded" / "fold1" / "model.pt", device="cpu").meta
    assert meta["training"]["channel_augmentation"] == ["aac:48", "room:0.3-0.5"]
    assert meta["training"]["speed_augmentation"] == [1.1]
    # the recorded speech's cache is reused; the speed and each channel add one
    assert len(list(cache.glob("segments-*.pt"))) == 4
    tested = [np.array(json.loads((tmp_path / run / "fold1" / "metrics.json").read_text())
                       ["test"]["segment"]["confusion"]) for run in ("plain", "coded")]
    assert tested[0].sum() == tested[1].sum()  # the same test segments: no copies among them
    plain_prior = load_model(tmp_path / "plain" / "fold1" / "model.pt", device="cpu").meta["context_prior"]
    assert np.allclose(meta["context_prior"]["mean"], plain_prior["mean"])  # the prior: recorded speech only
    for bad in ("wav:32", "room:3-4"):
        refused = runner.invoke(main, args + ["--out", str(tmp_path / "bad"), "--augment-channel", bad])
        assert refused.exit_code == 2 and "--augment-channel" in refused.output
        assert "Traceback" not in refused.output


def test_a_channel_copy_is_a_talker_of_its_own(corpus):
    from dataclasses import replace

    utterance = read_manifest(corpus / "manifest.csv")[0]
    coded = replace(utterance, channel="mp3:32")
    both = replace(utterance, channel="mp3:32", speed=0.9)
    assert coded.perturbed and both.perturbed and not utterance.perturbed
    assert coded.talker == "s1@mp3:32" and both.talker == "s1@speed=0.9@mp3:32"
    assert len({utterance.key, coded.key, both.key}) == 3


def test_a_pair_segment_takes_the_label_it_mostly_hears_and_an_emotion_outweighs_neutral():
    from sercli.dataset import pair_label

    seam = 100.0
    assert pair_label("sad", "happy", 0, 90, seam) == "sad" and pair_label("sad", "happy", 110, 200, seam) == "happy"
    assert pair_label("sad", "happy", 40, 130, seam) == "sad"  # 60 of 90 before the seam
    assert pair_label("sad", "happy", 80, 170, seam) == "happy"
    assert pair_label("neutral", "angry", 20, 120, seam) == "neutral"  # angry for a fifth
    assert pair_label("neutral", "angry", 30, 120, seam) == "neutral"  # angry for 20 of 90: less than a third
    assert pair_label("neutral", "angry", 50, 140, seam) == "angry"  # for 40 of 90: the lesser part, but a third
    assert pair_label("angry", "neutral", 40, 130, seam) == "angry" and pair_label("neutral", "angry", 40, 130, seam) == "angry"
    assert pair_label("neutral", "neutral", 40, 130, seam) == "neutral"


def test_pair_copies_join_two_utterances_of_one_speaker_the_same_way_every_time(corpus):
    from sercli.corpora import pair_copies
    from sercli.dataset import build_segments
    from sercli.experiment import _build_by_copy
    from sercli.features import FeatureConfig

    utterances = read_manifest(corpus / "manifest.csv")
    pairs = pair_copies(utterances)
    assert len(pairs) == len(utterances)  # every speaker has two utterances
    for pair in pairs:
        assert pair.then[0] != pair.path and pair.perturbed and pair.talker == f"{pair.speaker}@pairs"
        partner = next(u for u in utterances if u.path == pair.then[0])
        assert partner.speaker == pair.speaker and partner.label == pair.then[1]
    assert pair_copies(utterances[::-1]) == pair_copies(utterances)[::-1]  # not the manifest's order
    everyone = utterances + pairs
    both = _build_by_copy(everyone, FeatureConfig(), None, lambda _: None, None)
    alone = build_segments(utterances, FeatureConfig(), None, log=lambda _: None)
    paired = both.utterance >= len(utterances)
    # a pair is both utterances' speech, cut by the same rules: about as many frames as the two
    for k, pair in enumerate(pairs):
        rows = both.utterance == len(utterances) + k
        parts = [i for i, u in enumerate(utterances) if u.path in (pair.path, pair.then[0])]
        frames = sum(int(alone.n_frames[alone.utterance == i].sum()) for i in parts)
        assert 0.85 < int(both.n_frames[rows].sum()) / frames < 1.15
        # its segments are labelled with one of the two labels
        assert set(both.labels[rows].tolist()) <= {LABELS.index(pair.label), LABELS.index(pair.then[1])}
    assert paired.sum() > 0 and torch.equal(both.utterance[~paired], alone.utterance)


def test_train_with_pair_copies_records_them_and_tests_the_same_speech(corpus, tmp_path):
    args = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--fold", "1", "--epochs", "1", "--device", "cpu", "--cache", str(tmp_path / "cache"), "--workers", "1"]
    runner = CliRunner()
    plain = runner.invoke(main, args + ["--out", str(tmp_path / "plain")])
    result = runner.invoke(main, args + ["--out", str(tmp_path / "pairs"), "--augment-pairs"])
    assert plain.exit_code == 0 and result.exit_code == 0, result.output
    assert "8 speed, channel or pair copies" in result.output
    meta = load_model(tmp_path / "pairs" / "fold1" / "model.pt", device="cpu").meta
    assert meta["training"]["pair_augmentation"] == 8
    tested = [np.array(json.loads((tmp_path / run / "fold1" / "metrics.json").read_text())["test"]["segment"]
                       ["confusion"]) for run in ("plain", "pairs")]
    assert tested[0].sum() == tested[1].sum()
