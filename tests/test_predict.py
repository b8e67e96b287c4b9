"""The pipeline and the Python API: batching across files, order, failures, summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import sercli
from sercli.cli import main
from sercli.audio import load_audio, resample
from sercli.predict import AnalysisError, FileFailure, FileResult, Pipeline
from sercli.segment import SegmentationConfig
from sercli.weights import load_model


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model, device="cpu", precision="fp32")


def test_results_do_not_depend_on_batching(model, example, tmp_path):
    missing = str(tmp_path / "missing.wav")
    sources = [str(example), missing, str(example)]
    one = list(Pipeline(model, batch_size=1).run(sources))
    many = list(Pipeline(model, batch_size=64).run(sources))
    assert [type(r) for r in one] == [FileResult, FileFailure, FileResult]
    assert [type(r) for r in many] == [FileResult, FileFailure, FileResult]
    assert many[1].file == missing and "no such file" in many[1].error
    for a, b in zip([one[0], one[2]], [many[0], many[2]]):
        assert [(s.start_s, s.end_s, s.label) for s in a.segments] == [(s.start_s, s.end_s, s.label) for s in b.segments]
        for s, t in zip(a.segments, b.segments):
            assert max(abs(s.probs[k] - t.probs[k]) for k in s.probs) < 1e-5


def test_decoding_ahead_keeps_order_and_failures(model, example, tmp_path, monkeypatch):
    """Later files start decoding while earlier ones are analysed; results come in input order,
    each failure with its own cause, the same as decoding one file at a time."""
    from sercli import predict

    not_media = tmp_path / "notes.wav"
    not_media.write_text("not audio")
    samples = load_audio(str(example))
    sources = [str(example), str(tmp_path / "missing.wav"), str(not_media), ("array", samples), str(example)]
    ahead = list(Pipeline(model, batch_size=4).run(sources))
    monkeypatch.setattr(predict, "DECODE_AHEAD", 0)
    one_by_one = list(Pipeline(model, batch_size=4).run(sources))
    assert [r.file for r in ahead] == [s if isinstance(s, str) else s[0] for s in sources]
    assert [type(r) for r in ahead] == [FileResult, FileFailure, FileFailure, FileResult, FileResult]
    assert "no such file" in ahead[1].error and "invalid data" in ahead[2].error
    for a, b in zip(ahead, one_by_one):
        if isinstance(a, FileResult):
            assert a.duration_s == b.duration_s and [s.label for s in a.segments] == [s.label for s in b.segments]
        else:
            assert a.error == b.error


def test_abandoned_run_stops_every_ffmpeg(model, example, tmp_path, monkeypatch):
    """Leaving the results generator early stops the ffmpeg of the file being read and of those
    decoding ahead (files longer than the 30 s read ahead, so their ffmpeg waits on the pipe)."""
    import subprocess
    import wave

    from sercli import audio

    long = tmp_path / "long.wav"
    pcm = (np.tile(load_audio(str(example)), 4) * 32767).astype("<i2")  # 86 s
    with wave.open(str(long), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(pcm.tobytes())

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(audio.subprocess, "Popen", Recorded)
    results = Pipeline(model, batch_size=2).run([str(example)] + [str(long)] * 8)
    assert isinstance(next(results), FileResult)
    results.close()
    assert 3 <= len(started) < 9
    assert all(process.poll() is not None for process in started)


def test_analyze_path_and_array_agree(model, example):
    from_path = sercli.analyze(str(example), model=model)
    assert from_path.file == str(example)
    assert 21.0 < from_path.duration_s < 22.0
    assert len(from_path.segments) == 5
    samples = load_audio(str(example))
    from_array = sercli.analyze(samples, model=model, name="clip")
    assert from_array.file == "clip"
    assert [(s.start_s, s.end_s) for s in from_array.segments] == [(s.start_s, s.end_s) for s in from_path.segments]


def test_analyze_resamples_arrays(model, example):
    samples = resample(load_audio(str(example)), 16000)
    at_44k = np.interp(np.arange(0, len(samples), 16000 / 44100), np.arange(len(samples)), samples).astype(np.float32)
    result = sercli.analyze(at_44k, model=model, sample_rate=44100)
    assert abs(result.duration_s - len(samples) / 16000) < 0.01
    assert len(result.segments) == 5


def test_summary_is_duration_weighted(model, example):
    result = sercli.analyze(str(example), model=model)
    summary = result.summary
    durations = np.array([s.end_s - s.start_s for s in result.segments])
    for label in model.labels:
        expected = sum(d * s.probs[label] for d, s in zip(durations, result.segments)) / durations.sum()
        assert abs(summary.probs[label] - expected) < 1e-9
    assert summary.label == max(summary.probs, key=summary.probs.get)
    assert abs(summary.speech_s - durations.sum()) < 1e-9
    assert abs(sum(summary.seconds_by_label.values()) - durations.sum()) < 1e-9
    for s in result.segments:
        assert s.label == max(s.probs, key=s.probs.get) and s.confidence == s.probs[s.label]
        assert abs(sum(s.probs.values()) - 1) < 1e-5


def test_silence_has_no_segments_and_no_label(model):
    result = sercli.analyze(np.zeros(16000 * 4, dtype=np.float32), model=model)
    assert result.segments == [] and result.summary.label is None and result.summary.speech_s == 0


def test_api_errors(model, tmp_path):
    with pytest.raises(AnalysisError, match="no such file"):
        sercli.analyze(str(tmp_path / "nope.mp4"), model=model)
    with pytest.raises(AnalysisError, match="mono"):
        sercli.analyze(np.zeros((2, 100), dtype=np.float32), model=model)


def test_fixed_segmentation_through_pipeline(model, example):
    result = sercli.analyze(str(example), model=model, segmentation="fixed")
    assert all(abs(s.start_s / 3 - round(s.start_s / 3)) < 1e-9 for s in result.segments)


def test_too_long_segments_are_refused(model):
    with pytest.raises(ValueError, match="max segment"):
        Pipeline(model, SegmentationConfig(max_segment_s=5.0))


@pytest.fixture(scope="module")
def context_models(tmp_path_factory):
    """One random tiny network saved twice as a context-normalised model: the default context
    window (the whole 21 s example) and a 4 s one; with a prior in its metadata."""
    import torch

    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("context")
    config = ModelConfig(lstm_hidden=16, dense=16)
    torch.manual_seed(0)
    net = EmotionNet(config)
    prior = {"mean": np.linspace(0.5, 1.5, 400).tolist(), "variance": np.full(400, 4.0).tolist()}
    models = {}
    for window in (600.0, 4.0):
        path = folder / f"context-{window:g}.pt"
        save_checkpoint(path, config, net.state_dict(), FeatureConfig(context_norm=True, context_window_s=window),
                        {"name": "context", "context_prior": prior})
        models[window] = load_model(path, device="cpu", precision="fp32")
    return models


def test_context_normalised_model_standardises_over_the_speech_around_each_segment(context_models, example):
    import torch

    from sercli.context import ContextStats, context_prior, standardise_frames
    from sercli.features import log_spectrograms
    from sercli.segment import segment_audio

    samples = load_audio(str(example))
    results = {}
    for window, model in context_models.items():
        segments = segment_audio(samples, SegmentationConfig())
        features = model.features
        x = log_spectrograms([s.samples for s in segments], features)
        n = torch.tensor([features.frames_for(len(s.samples)) for s in segments])
        stats = ContextStats(features.n_bins, context_prior(model.meta))
        for segment, spectrogram, frames in zip(segments, x, n):
            stats.add(segment.start_s, spectrogram[:, :frames].numpy())
        # Several files in one run, batches of 2: each file is its own context.
        one, two = Pipeline(model, batch_size=2).run([str(example), str(example)])
        assert len(one.segments) == len(two.segments) == len(segments) == 5
        for k, segment in enumerate(segments):
            mean, std = (torch.from_numpy(m).float() for m in stats.moments(segment.start_s - window / 2,
                                                                             segment.start_s + window / 2))
            expected = model.posteriors(standardise_frames(x[k : k + 1], n[k : k + 1], mean, std), n[k : k + 1])[0]
            for result in (one, two):
                got = np.array([result.segments[k].probs[label] for label in model.labels])
                assert np.abs(got - expected.numpy()).max() < 1e-4
        results[window] = one
    whole, local = (np.array([[s.probs[label] for label in context_models[600.0].labels] for s in results[w].segments])
                    for w in (600.0, 4.0))
    assert np.abs(whole - local).max() > 1e-3  # the 4 s window changes what segments are compared with


def test_a_context_window_given_at_analysis_replaces_the_models_own(context_models, example):
    wide, narrow = context_models[600.0], context_models[4.0]
    (own,) = Pipeline(narrow).run([str(example)])
    (given,) = Pipeline(wide, context_window_s=4).run([str(example)])
    assert np.abs(_probs(own, narrow.labels) - _probs(given, wide.labels)).max() < 1e-6
    assert wide.features.context_window_s == 600.0  # the caller's model is left as it was
    (unchanged,) = Pipeline(wide).run([str(example)])
    assert np.abs(_probs(unchanged, wide.labels) - _probs(given, wide.labels)).max() > 1e-3
    cli = CliRunner().invoke(main, ["analyze", str(example), "-m", str(wide.path), "--context-window", "4", "-f",
                                    "json", "-q", "--device", "cpu", "--precision", "fp32"])
    assert cli.exit_code == 0, cli.output
    probs = np.array([[s["probs"][label] for label in wide.labels] for s in json.loads(cli.stdout)["segments"]])
    assert np.abs(probs - _probs(given, wide.labels)).max() < 1e-3  # as written, rounded
    for bad in ({"context_window_s": -1}, {"context": "all", "context_window_s": 4}):
        with pytest.raises(ValueError):
            Pipeline(wide, **bad)
    refused = CliRunner().invoke(main, ["analyze", str(example), "--context", "all", "--context-window", "4"])
    assert refused.exit_code == 2 and "leave out --context all" in refused.output


def test_context_statistics_by_hand():
    from sercli.context import ContextStats

    stats = ContextStats(2, (np.array([0.0, 10.0]), np.array([1.0, 1.0]), 2.0))
    stats.add(0.0, np.array([[1.0, 3.0], [2.0, 2.0]]))
    stats.add(5.0, np.array([[5.0], [2.0]]))
    mean, std = stats.moments()  # frames 1, 3, 5 and two prior frames of mean 0, variance 1 (bin 0)
    assert mean[0] == pytest.approx(9 / 5) and std[0] == pytest.approx(np.sqrt((1 + 9 + 25 + 2) / 5 - (9 / 5) ** 2))
    assert mean[1] == pytest.approx((6 + 20) / 5)
    mean, _ = stats.moments(4.0, 6.0)  # only the second segment: frame 5 and the prior
    assert mean[0] == pytest.approx(5 / 3)
    assert ContextStats(2).moments()[1].tolist() == [1e-3, 1e-3]  # empty: no division by zero
    assert stats.columns() == 3 and stats.columns(4.0, 6.0) == 1 and stats.columns(6.0) == 0  # the prior's not counted


def test_forgetting_old_segments_keeps_windowed_moments_exact():
    """A long file's statistics drop the segments no window reaches any more; the moments of
    every later window are unchanged and the array does not grow past what a window needs."""
    from sercli.context import ContextStats

    rng = np.random.default_rng(0)
    full, sliding = ContextStats(3, (np.zeros(3), np.ones(3), 50.0)), ContextStats(3, (np.zeros(3), np.ones(3), 50.0))
    sizes = []
    for k in range(3000):  # a segment every 3.5 s: about 3 hours
        start = 3.5 * k
        x = rng.normal(k % 7, 1 + k % 3, size=(3, int(rng.integers(20, 300))))
        full.add(start, x)
        sliding.add(start, x)
        sliding.forget_before(start - 600.0)
        sizes.append(len(sliding.cumulative))
        if k % 250 == 249:
            for first, last in ((start - 600.0, start), (start - 300.0, start + 10.0), (start - 100.0, start - 50.0)):
                for got, want in zip(sliding.moments(first, last), full.moments(first, last)):
                    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert len(sliding.starts) <= 2 * 600 / 3.5 + 64 and max(sizes) <= 512 < len(full.cumulative)


def test_context_all_normalises_every_input_of_the_run_together(context_models, example):
    import torch

    from sercli.context import ContextStats, context_prior, standardise_frames
    from sercli.features import log_spectrograms
    from sercli.segment import segment_audio

    model = context_models[4.0]  # the window does not apply to one shared context
    samples = load_audio(str(example))
    part = samples[: 10 * 16000]
    sources = [str(example), ("part", part)]
    together = list(Pipeline(model, batch_size=3, context="all").run(sources))
    alone = list(Pipeline(model, batch_size=3).run(sources))
    segments = segment_audio(samples, SegmentationConfig()) + segment_audio(part, SegmentationConfig())
    x = log_spectrograms([s.samples for s in segments], model.features)
    n = torch.tensor([model.features.frames_for(len(s.samples)) for s in segments])
    stats = ContextStats(model.features.n_bins, context_prior(model.meta))
    for spectrogram, frames in zip(x, n):
        stats.add(0.0, spectrogram[:, :frames].numpy())
    mean, std = (torch.from_numpy(m).float() for m in stats.moments())
    expected = model.posteriors(standardise_frames(x, n, mean, std), n).numpy()
    got = np.array([[s.probs[label] for label in model.labels] for r in together for s in r.segments])
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    assert [len(r.segments) for r in together] == [len(r.segments) for r in alone]
    assert np.abs(got - np.array([[s.probs[label] for label in model.labels] for r in alone for s in r.segments])).max() > 1e-3
    with pytest.raises(ValueError):
        Pipeline(model, context="speaker")


def _probs(result, labels):
    return np.array([[s.probs[label] for label in labels] for s in result.segments])


def test_an_ensemble_averages_its_models_posteriors(model, context_models, model_dir, example, tmp_path):
    """A plain, a context-normalised (4 s window) and a denoising model together: every segment's
    posteriors are the mean of each model's alone, with each fed its own features, in every
    batching, beside a failing file."""
    denoising = load_model(model_dir / "tiny-denoise.pt", device="cpu", precision="fp32")
    members = [model, context_models[4.0], denoising]
    sources = [str(example), str(tmp_path / "missing.wav"), ("part", load_audio(str(example))[: 8 * 16000])]
    alone = [list(Pipeline(m, batch_size=3).run(sources)) for m in members]
    for batch_size in (1, 4, 64):
        together = list(Pipeline(members, batch_size=batch_size).run(sources))
        assert [type(r) for r in together] == [FileResult, FileFailure, FileResult]
        for k in (0, 2):
            assert together[k].model == "tiny-lstm+context+tiny-denoise"
            assert [(s.start_s, s.end_s) for s in together[k].segments] == \
                [(s.start_s, s.end_s) for s in alone[0][k].segments]
            expected = np.mean([_probs(runs[k], model.labels) for runs in alone], axis=0)
            np.testing.assert_allclose(_probs(together[k], model.labels), expected, atol=1e-5)
    # A model joined with itself changes nothing.
    twice = list(Pipeline([model, model]).run(sources[:1]))[0]
    np.testing.assert_allclose(_probs(twice, model.labels), _probs(alone[0][0], model.labels), atol=1e-6)


def test_ensembles_by_name_and_their_errors(model_dir, example, tmp_path):
    from sercli.weights import ModelError, load_models, model_names

    assert model_names("a+b+c") == ["a", "b", "c"] and model_names("a") == ["a"] and model_names(None) == [None]
    odd = tmp_path / "odd+name.pt"
    odd.write_bytes(b"")
    assert model_names(str(odd)) == [str(odd)]  # an existing file is one model, '+' or not
    with pytest.raises(ModelError, match="none empty"):
        model_names("a++b")
    spec = f"{model_dir / 'tiny-lstm.pt'}+{model_dir / 'tiny-denoise.pt'}"
    assert [m.name for m in load_models(spec, device="cpu")] == ["tiny-lstm", "tiny-denoise"]
    result = sercli.analyze(str(example), model=spec, device="cpu")
    assert result.model == "tiny-lstm+tiny-denoise" and len(result.segments) == 5
    grid20 = load_model(model_dir / "tiny-cnn5.pt", device="cpu")
    lstm = load_model(model_dir / "tiny-lstm.pt", device="cpu")
    assert len(Pipeline([lstm, grid20]).run([str(example)]).__next__().segments) == 5  # 10 and 20 Hz together
    swapped = load_model(model_dir / "tiny-lstm.pt", device="cpu")
    swapped.labels = tuple(reversed(swapped.labels))
    with pytest.raises(ValueError, match="same classes"):
        Pipeline([lstm, swapped])


@pytest.fixture(scope="module")
def films_model(context_models, tmp_path_factory):
    """A second random network beside context_models' 600 s one, with the same features and prior:
    the films half of a routed pair whose clips half is context_models[600.0]."""
    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    config = ModelConfig(lstm_hidden=16, dense=16)
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("films") / "films.pt"
    save_checkpoint(path, config, EmotionNet(config).state_dict(), FeatureConfig(context_norm=True, context_window_s=600.0),
                    {"name": "films", "context_prior": context_models[600.0].meta["context_prior"]})
    return load_model(path, device="cpu", precision="fp32")


def test_a_routed_pair_scores_each_segment_by_the_speech_around_it(context_models, films_model, example, monkeypatch):
    """CLIPS|FILMS: a segment whose context holds ROUTE_SPEECH_S of speech or more gets FILMS's
    posteriors, exactly as FILMS alone gives them; any other CLIPS's. The example's 21 s hold
    about 11 s of speech (over the 10 s): FILMS; its first 8 s one 2.6 s segment: CLIPS."""
    from sercli import context
    from sercli.features import FeatureConfig
    from sercli.segment import segment_audio

    clips, films = context_models[600.0], films_model
    samples = load_audio(str(example))
    sources = [str(example), ("part", samples[: 8 * 16000])]
    alone = {m.name: list(Pipeline(m).run(sources)) for m in (clips, films)}
    routed = list(Pipeline([clips, films], route=True, batch_size=2).run(sources))
    assert routed[0].model == "context|films"
    np.testing.assert_allclose(_probs(routed[0], clips.labels), _probs(alone["films"][0], clips.labels), atol=1e-6)
    np.testing.assert_allclose(_probs(routed[1], clips.labels), _probs(alone["context"][1], clips.labels), atol=1e-6)
    assert np.abs(_probs(alone["films"][0], clips.labels) - _probs(alone["context"][0], clips.labels)).max() > 1e-3

    # Within one file: 8 s windows, routed at 3.5 s of speech. Each segment goes by its own window.
    monkeypatch.setattr(context, "ROUTE_SPEECH_S", 3.5)
    segments = segment_audio(samples, SegmentationConfig())
    frames = np.array([FeatureConfig().frames_for(len(s.samples)) for s in segments])
    starts = np.array([s.start_s for s in segments])
    to_films = [frames[np.abs(starts - start) <= 4.0].sum() >= 350 for start in starts]
    assert 0 < sum(to_films) < len(segments)  # both halves at work
    windowed = {m.name: next(Pipeline(m, context_window_s=8).run(sources[:1])) for m in (clips, films)}
    (mixed,) = Pipeline([clips, films], context_window_s=8, route=True).run(sources[:1])
    for k, films_here in enumerate(to_films):
        want = windowed["films" if films_here else "context"].segments[k]
        np.testing.assert_allclose(_probs(mixed, clips.labels)[k], [want.probs[label] for label in clips.labels],
                                   atol=1e-6)


def test_a_routed_pair_featurises_once_and_refuses_what_it_cannot_route(context_models, films_model, model,
                                                                          example, monkeypatch):
    from sercli import predict

    calls = []
    featurise = predict.featurise

    def counted(segments, config, device="cpu"):
        calls.append(len(segments))
        return featurise(segments, config, device)

    monkeypatch.setattr(predict, "featurise", counted)
    list(Pipeline(context_models[600.0], batch_size=2).run([str(example)]))
    once = list(calls)
    calls.clear()
    list(Pipeline([context_models[600.0], films_model], batch_size=2, route=True).run([str(example)]))
    assert calls == once and sum(once) == 5  # the same features feed both: openSMILE or the STFT runs once
    calls.clear()
    list(Pipeline([context_models[600.0], context_models[4.0]], batch_size=2).run([str(example)]))
    assert calls == once  # an ensemble of models that differ only in their contexts also shares
    for members in ([context_models[600.0]], [model, films_model], [context_models[4.0], films_model],
                    [context_models[600.0], films_model, films_model]):
        with pytest.raises(ValueError, match="routed pair"):
            Pipeline(members, route=True)


def test_routed_pairs_by_name(context_models, films_model, example, tmp_path, monkeypatch):
    from sercli import weights
    from sercli.weights import ModelError, is_routed, model_names

    assert model_names("a|b") == ["a", "b"] and is_routed("a|b") and not is_routed("a+b") and not is_routed(None)
    for bad in ("a|b|c", "a|", "a+b|c"):
        with pytest.raises(ModelError, match="routed pair"):
            model_names(bad)
    odd = tmp_path / "odd|name.pt"
    odd.write_bytes(b"")
    assert model_names(str(odd)) == [str(odd)] and not is_routed(str(odd))
    spec = f"{context_models[600.0].path}|{films_model.path}"
    result = sercli.analyze(str(example), model=spec, device="cpu", precision="fp32")
    expected = next(Pipeline(films_model).run([str(example)]))
    assert result.model == "context|films"
    np.testing.assert_allclose(_probs(result, films_model.labels), _probs(expected, films_model.labels), atol=1e-6)
    cli = CliRunner().invoke(main, ["analyze", str(example), "-m", spec, "-f", "json", "-q", "--device", "cpu",
                                    "--precision", "fp32"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["model"] == "context|films"
    refused = CliRunner().invoke(main, ["analyze", str(example), "-m", spec, "--ray=local"])
    assert refused.exit_code == 2 and "not an ensemble or a routed pair" in refused.output

    asked = []

    def fake_load_models(spec, device="auto", precision="auto"):  # the shipped pair, without loading it
        asked.append(spec)
        return [context_models[600.0], films_model]

    monkeypatch.setattr(weights, "load_models", fake_load_models)
    default = sercli.analyze(str(example))
    assert asked == [weights.DEFAULT_ANALYSIS_MODEL] == ["egemaps-mlp|egemaps-mlp-voices"]
    assert default.model == "context|films"
    np.testing.assert_allclose(_probs(default, films_model.labels), _probs(expected, films_model.labels), atol=1e-6)
    cli = CliRunner().invoke(main, ["analyze", str(example), "-f", "json", "-q"])  # the command's default too
    assert cli.exit_code == 0, cli.output
    assert asked[-1] == weights.DEFAULT_ANALYSIS_MODEL and json.loads(cli.stdout)["model"] == "context|films"


def test_analyze_takes_the_options_of_the_command_line(model, context_models, model_dir, example, monkeypatch):
    """denoise, context, max_segment_s and merge_gap_s mean what --denoise, --context,
    --max-segment and --merge-gap do."""
    from sercli import weights
    from sercli.weights import ModelError

    denoising = load_model(model_dir / "tiny-denoise.pt", device="cpu", precision="fp32")
    with pytest.raises(ModelError, match="trained on normal spectrograms"):
        sercli.analyze(str(example), model=model, denoise=True)
    asked = []

    def fake_load_models(spec, device="auto", precision="auto"):  # the shipped pair, without loading it
        asked.append(spec)
        return [model, denoising]

    monkeypatch.setattr(weights, "load_models", fake_load_models)
    paired = sercli.analyze(str(example), denoise=True)
    assert asked == [weights.DEFAULT_DENOISE_MODEL] and paired.model == "tiny-lstm+tiny-denoise"
    expected = list(Pipeline([model, denoising]).run([str(example)]))[0]
    np.testing.assert_allclose(_probs(paired, model.labels), _probs(expected, model.labels), atol=1e-6)

    context = context_models[4.0]
    whole = sercli.analyze(str(example), model=context, context="all")
    np.testing.assert_allclose(_probs(whole, context.labels),
                               _probs(list(Pipeline(context, context="all").run([str(example)]))[0], context.labels),
                               atol=1e-6)
    assert np.abs(_probs(whole, context.labels) - _probs(sercli.analyze(str(example), model=context),
                                                         context.labels)).max() > 1e-3

    short = sercli.analyze(str(example), model=model, max_segment_s=1.0, merge_gap_s=0.0)
    assert max(s.duration_s for s in short.segments) <= 1.0 + 1e-6 and len(short.segments) > 5
    assert short.merge_gap_s == 0.0
    wide = sercli.analyze(str(example), model=model, max_segment_s=1.0, merge_gap_s=60.0)
    labels = [s.label for s in short.segments]
    runs = 1 + sum(a != b for a, b in zip(labels, labels[1:]))
    assert [s.label for s in wide.spans] == [label for k, label in enumerate(labels) if k == 0 or label != labels[k - 1]]
    assert len(wide.spans) == runs and wide.summary.spans == wide.spans
    assert len(short.spans) >= len(wide.spans)


def test_a_model_and_the_package_describe_themselves_briefly(model):
    assert len(repr(model)) < 150 and "\n" not in repr(model)
    assert repr(model).startswith("<sercli Model 'tiny-lstm': cnn-lstm, 10 Hz grid")
    public = [name for name in dir(sercli) if not name.startswith("_")]
    assert {"analyze", "load_model", "load_models", "FileResult", "Span", "AnalysisError", "ModelError"} <= set(public)
    assert all(getattr(sercli, name) is not None for name in sercli.__all__)
