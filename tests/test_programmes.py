"""`sercli evaluate --programmes`: film-like programmes of test speakers, analysed like a user's file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sercli.audio import SAMPLE_RATE
from sercli.cli import main
from sercli.corpora import Utterance
from sercli.predict import SegmentResult
from sercli.programmes import (PlacedUtterance, ProgrammeConfig, build_programme, music_files, programme_accuracies,
                               utterance_posteriors)

LABELS = ("angry", "happy", "neutral", "sad")


@pytest.fixture(scope="module")
def music(tmp_path_factory, run_ffmpeg) -> Path:
    """A noise folder as in ../shared/data/noise: two music_* genres (synthetic chords) and a crowd."""
    root = tmp_path_factory.mktemp("noise")
    for name, chord in {"music_a": "220*t)+0.2*sin(2*PI*277*t", "music_b": "147*t)+0.2*sin(2*PI*185*t",
                        "crowd": "90*t)+0.2*sin(2*PI*95*t"}.items():
        (root / name).mkdir()
        run_ffmpeg("-f", "lavfi", "-i", f"aevalsrc=0.2*sin(2*PI*{chord}):s=16000:d=12", str(root / name / "x.wav"))
    return root


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory, run_ffmpeg, example) -> Path:
    """8 utterances of 1.3 s cut from the example's speech, 4 speakers of 2 corpora in 2 folds,
    with a manifest and a folds file: a programme of them is short and quick to analyse."""
    root = tmp_path_factory.mktemp("short")
    rows = ["path,emotion,speaker,corpus"]
    starts = {"anger": (2.2, 3.2), "happiness": (7.5, 8.5), "neutral": (12.0, 13.0), "sadness": (17.0, 18.0)}
    for n, (emotion, times) in enumerate(starts.items()):
        for k, start in enumerate(times):
            name = f"s{n + 1}_{k}.wav"
            run_ffmpeg("-ss", str(start), "-t", "1.3", "-i", str(example), "-ar", "16000", "-ac", "1", str(root / name))
            rows.append(f"{name},{emotion},s{n + 1},{'ab'[n % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "folds.csv").write_text("speaker,fold\ns1,1\ns2,1\ns3,2\ns4,2\n")
    return root


def voices(folder: Path, speakers: int = 3, per_speaker: int = 3) -> list[Utterance]:
    """Synthetic voices: harmonic buzzes with a wobbling pitch, one pitch per speaker, 1-2 s each."""
    import wave

    rng = np.random.default_rng(1)
    out = []
    for s in range(speakers):
        for k in range(per_speaker):
            seconds = rng.uniform(1.0, 2.0)
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            f0 = (110 + 40 * s) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
            phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
            x = sum(np.sin(h * phase) / h for h in range(1, 8)) * np.hanning(len(t)) * rng.uniform(0.05, 0.5)
            path = folder / f"s{s}-{k}.wav"
            with wave.open(str(path), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(SAMPLE_RATE)
                handle.writeframes((x * 32767).astype("<i2").tobytes())
            out.append(Utterance(str(path), LABELS[(s + k) % 4], f"s{s}", "synthetic"))
    return out


def test_a_programme_is_scenes_of_two_voices_at_their_own_levels_with_music(tmp_path, music):
    from sercli.noise import active_speech_power

    utterances = voices(tmp_path)
    config = ProgrammeConfig(minutes=3.0)
    tracks = music_files(music)
    assert [p.parent.name for p in tracks] == ["music_a", "music_b"]  # the music_* genres, not the crowd
    samples, placed = build_programme(utterances, tracks, config, "fold1-1")
    again, placed_again = build_programme(utterances, tracks, config, "fold1-1")
    other, _ = build_programme(utterances, tracks, config, "fold1-2")
    assert np.array_equal(samples, again) and placed == placed_again  # seeded
    assert len(other) != len(samples) or not np.array_equal(other, samples)
    assert len(samples) >= 180 * SAMPLE_RATE and placed[-1].end_s <= len(samples) / SAMPLE_RATE
    starts = [p.start_s for p in placed]
    assert starts == sorted(starts) and all(a.end_s < b.start_s for a, b in zip(placed, placed[1:]))
    gaps = np.array([b.start_s - a.end_s for a, b in zip(placed, placed[1:])])
    within = gaps[gaps <= config.pause_s[1] + 1e-9]
    assert within.min() >= config.pause_s[0] - 1e-3 and len(within) >= len(gaps) - len(gaps) // 8
    # Each speaker keeps one level; the voices spread over at most 12 dB.
    levels: dict[str, list[float]] = {}
    for p in placed:
        span = samples[round(p.start_s * SAMPLE_RATE) : round(p.end_s * SAMPLE_RATE)]
        levels.setdefault(p.utterance.speaker, []).append(10 * np.log10(active_speech_power(span)))
    assert set(levels) == {"s0", "s1", "s2"}
    assert max(np.ptp(v) for v in levels.values()) < 1.0
    means = [np.mean(v) for v in levels.values()]
    assert max(means) - min(means) <= config.level_spread_db + 1.0
    # Pauses between turns are silent in some scenes and carry a music bed in others, and music
    # plays alone between some scenes.
    pauses = [samples[round(a.end_s * SAMPLE_RATE) + 800 : round(b.start_s * SAMPLE_RATE) - 800]
              for a, b in zip(placed, placed[1:])]
    assert any(np.all(p == 0) for p in pauses) and any(np.abs(p).max() > 1e-3 for p in pauses)
    assert max(gaps) >= config.interlude_s[0]


def test_the_music_beds_level_moves_nothing_else(tmp_path, music):
    utterances, tracks = voices(tmp_path), music_files(music)
    usual, placed = build_programme(utterances, tracks, ProgrammeConfig(minutes=1.0), "fold1-1")
    loud, placed_loud = build_programme(utterances, tracks, ProgrammeConfig(minutes=1.0, music_snr_db=0.0), "fold1-1")
    assert placed == placed_loud and len(usual) == len(loud)  # the same scenes, turns and music draws
    # where a bed lies under a pause between two turns, it is 15 dB (5.6x in amplitude) louder
    ratios = []
    for a, b in zip(placed, placed[1:]):
        span = slice(round(a.end_s * SAMPLE_RATE) + 800, round(b.start_s * SAMPLE_RATE) - 800)
        if b.start_s - a.end_s <= 1.0 and np.abs(usual[span]).max() > 1e-4:
            ratios.append(np.sqrt(np.mean(loud[span] ** 2) / np.mean(usual[span] ** 2)))
    assert ratios and np.allclose(ratios, 10 ** (15 / 20), rtol=0.02)


def test_the_music_share_puts_a_bed_under_every_scene_or_none(tmp_path, music):
    utterances, tracks = voices(tmp_path), music_files(music)
    for share in (0.0, 1.0):
        samples, placed = build_programme(utterances, tracks, ProgrammeConfig(minutes=1.0, music_share=share),
                                          "fold1-1")
        # a pause under 0.7 s lies inside a scene (a scene's end adds a gap of at least 0.5 s)
        inside = [samples[round(a.end_s * SAMPLE_RATE) + 800 : round(b.start_s * SAMPLE_RATE) - 800]
                  for a, b in zip(placed, placed[1:]) if b.start_s - a.end_s < 0.7]
        assert inside
        carrying = [np.abs(pause).max() > 1e-4 for pause in inside]
        assert all(carrying) if share else not any(carrying)


def test_a_dialogue_needs_two_speakers(tmp_path, music):
    from sercli.programmes import ProgrammeError

    with pytest.raises(ProgrammeError, match="two speakers"):
        build_programme(voices(tmp_path, speakers=1), music_files(music), ProgrammeConfig(minutes=0.2), "fold1-1")


def test_utterances_take_the_overlap_weighted_posteriors_and_undetected_ones_count_wrong():
    segments = [SegmentResult.scored(0.0, 2.0, np.array([0.9, 0.1, 0.0, 0.0]), LABELS),
                SegmentResult.scored(2.0, 5.0, np.array([0.0, 0.2, 0.8, 0.0]), LABELS)]
    placed = [PlacedUtterance(Utterance("a", "angry", "s", "c"), 1.0, 3.5),  # 1 s of the first, 1.5 s of the second
              PlacedUtterance(Utterance("b", "sad", "s", "c"), 6.0, 7.0)]  # nothing overlaps it
    first, second = utterance_posteriors(segments, placed, LABELS)
    np.testing.assert_allclose(first, (1.0 * np.array([0.9, 0.1, 0, 0]) + 1.5 * np.array([0, 0.2, 0.8, 0])) / 2.5)
    assert second is None
    scores = programme_accuracies([0, 3, 3], [0, None, 3], 4)
    assert scores["wa"] == pytest.approx(2 / 3) and scores["ua"] == pytest.approx((1 + 0.5) / 2)
    assert scores["detected"] == pytest.approx(2 / 3) and scores["confusion"][3] == [0, 0, 0, 1, 1]


def test_evaluate_scores_programmes_of_each_folds_test_speakers(short_corpus, model_dir, music, tmp_path, monkeypatch):
    """Fold by fold, for an ensemble of each fold's own model (the {run} pattern) and a denoising one."""
    import sercli.programmes

    for fold in ("fold1", "fold2"):  # a "training run" whose fold models are the tiny model
        (tmp_path / "run" / fold).mkdir(parents=True)
        for suffix in ("", ".sha256"):
            shutil.copyfile(f"{model_dir / 'tiny-lstm.pt'}{suffix}", tmp_path / "run" / fold / f"model.pt{suffix}")
    built = []
    original = sercli.programmes.build_programme

    def spy(utterances, *args, **kwargs):
        built.append((args[2], {u.speaker for u in utterances}))
        return original(utterances, *args, **kwargs)

    monkeypatch.setattr(sercli.programmes, "build_programme", spy)
    fold_models = str(tmp_path / "run" / "{run}" / "model.pt")  # the {run} pattern, in an ensemble
    models = [f"{fold_models}+{model_dir / 'tiny-denoise.pt'}"]
    result = CliRunner().invoke(main, ["evaluate", "--corpus", f"manifest={short_corpus / 'manifest.csv'}", "--folds",
                                       str(short_corpus / "folds.csv"), "--fold", "all", "--programmes", "1",
                                       "--programme-minutes", "0.3", "--programme-music", str(music),
                                       *(a for m in models for a in ("--model", str(m))), "--device", "cpu",
                                       "--workers", "1", "--context-window", "60", "--programme-snr", "10",
                                       "--programme-music-share", "1",
                                       "-o", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    assert sorted(built) == [("fold1-1", {"s1", "s2"}), ("fold2-1", {"s3", "s4"})]  # built once, test speakers only
    assert result.stdout.count("\nprogramme WA ") == 1 and "| fold2 |" in result.stdout
    assert "| fold1 | 4 |" in result.stdout  # the clip-level table, beside the programmes'
    assert "music beds 10 dB under the speech of 100% of the scenes), analysed as `sercli analyze --context-window " \
        "60` analyses a file" in result.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    programmes = scores["programmes"]
    assert programmes["context_window_s"] == 60.0 and programmes["music_snr_db"] == 10.0
    assert programmes["music_share"] == 1.0
    assert set(programmes["runs"]) == {"fold1", "fold2"} and "ua" in programmes["mean"]
    for fold, run in programmes["runs"].items():
        assert sum(map(sum, run["confusion"])) == run["count"] >= 8
        assert run["detected"] > 0.5  # the example's speech is found under the music
        assert run["model"] == f"{tmp_path / 'run' / fold / 'model.pt'}+{model_dir / 'tiny-denoise.pt'}"
    assert programmes["mean"]["ua"] == pytest.approx(np.mean([r["ua"] for r in programmes["runs"].values()]))
    assert "utterance" in scores["runs"]["fold1"]
    # each fold has a speaker of corpus a and one of b: both views say how each corpus fares
    for run in (*programmes["runs"].values(), *scores["runs"].values()):
        by_corpus = run["by_corpus"]
        assert set(by_corpus) == {"a", "b"}
        total = run["count"] if "count" in run else run["utterance"]["count"]
        assert sum(c["count"] for c in by_corpus.values()) == total
    clips = scores["runs"]["fold1"]
    assert clips["by_corpus"]["a"]["count"] == 2  # s1's two clips
    assert result.stdout.count("UA by corpus (utterances):") == 2 and "- mean: a " in result.stdout


def test_programme_options_need_programmes_and_music(short_corpus, tiny_model, tmp_path):
    base = ["evaluate", "--corpus", f"manifest={short_corpus / 'manifest.csv'}", "--model", str(tiny_model)]
    for option in (["--programme-minutes", "3"], ["--context-window", "60"], ["--programme-snr", "0"]):
        result = CliRunner().invoke(main, [*base, *option])
        assert result.exit_code == 2 and "need --programmes" in result.output
    result = CliRunner().invoke(main, [*base, "--programmes", "1", "--programme-music", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"sercli: error: --programmes needs music for its beds: {tmp_path}: no music files in it or its subfolders"


def test_programmes_play_the_held_out_genres_and_training_leaves_them_out(tmp_path, capsys):
    from sercli.commands.train import _augmentation
    from sercli.noise import PROGRAMME_MUSIC

    for name in ("music_jazz", "music_pop", "crowd"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.wav").write_bytes(b"")  # only names matter here
    assert [p.parent.name for p in music_files(tmp_path)] == ["music_jazz"]
    assert "music_pop" not in PROGRAMME_MUSIC and "music_jazz" in PROGRAMME_MUSIC

    augmentation = _augmentation(("babble", str(tmp_path)), "0:20", 0.5, 0)
    assert augmentation.sources == ("babble", str(tmp_path / "crowd"), str(tmp_path / "music_pop"))
    assert "leaving out music_jazz" in capsys.readouterr().err
    named = _augmentation((str(tmp_path / "music_jazz"),), "0:20", 0.5, 0)  # named, it is taken, with a warning
    assert named.sources == (str(tmp_path / "music_jazz"),)
    assert "will flatter it" in capsys.readouterr().err
    only = tmp_path / "only"
    (only / "music_metal").mkdir(parents=True)
    (only / "music_metal" / "x.wav").write_bytes(b"")
    with pytest.raises(SystemExit) as refused:  # nothing left to train with: a usage error, not an empty run
        _augmentation((str(only),), "0:20", 0.5, 0)
    assert refused.value.code == 2 and "its only noise is the music" in capsys.readouterr().err
