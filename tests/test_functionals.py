"""The eGeMAPS branch: openSMILE functionals per segment, the MLP on them, its training and analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sercli.cli import main
from sercli.features import FeatureConfig, featurise
from sercli.model import FunctionalsNet, ModelConfig, build_net
from sercli.segment import Segment

pytest.importorskip("opensmile", reason="the eGeMAPS branch needs openSMILE, a dependency of sercli")

from sercli.functionals import EGEMAPS_SIZE, egemaps, level_normalised  # noqa: E402

RATE = 16000


def _voice(seconds: float = 2.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A buzzy vowel-like tone with a slow pitch glide and a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    return (0.1 * wave + 0.003 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def test_level_normalisation_puts_the_loud_frames_at_one_level_and_leaves_silence():
    loud = level_normalised(_voice())
    quiet = level_normalised(0.01 * _voice())
    assert np.allclose(loud, quiet, atol=1e-5)
    frames = loud[: len(loud) // 400 * 400].reshape(-1, 400)
    assert 20 * np.log10(np.percentile(np.sqrt((frames ** 2).mean(1)), 95)) == pytest.approx(-20, abs=0.01)
    silence = np.zeros(8000, dtype=np.float32)
    assert not level_normalised(silence).any()


def test_egemaps_features_ignore_the_recording_gain_but_not_the_voice():
    base = egemaps(_voice())
    assert base.shape == (EGEMAPS_SIZE,) and base.dtype == np.float32 and np.isfinite(base).all()
    assert np.allclose(egemaps(0.02 * _voice()), base, rtol=1e-3, atol=1e-3)  # 34 dB quieter: the same
    higher = egemaps(_voice(f0=220.0))
    assert np.abs(higher - base).max() > 1.0  # the pitch statistics move


def test_featurise_gives_one_frame_of_functionals_and_handles_tiny_segments():
    config = FeatureConfig(kind="egemaps", context_norm=False)
    segments = [Segment(0.0, 2.0, _voice()), Segment(2.0, 2.05, _voice(0.05)),
                Segment(3.0, 3.5, np.zeros(8000, dtype=np.float32))]
    x, n = featurise(segments, config)
    assert x.shape == (3, EGEMAPS_SIZE, 1) and n.tolist() == [1, 1, 1]
    assert torch.isfinite(x).all()
    assert config.n_bins == EGEMAPS_SIZE
    with pytest.raises(ValueError, match="eGeMAPS"):
        FeatureConfig(kind="egemaps", denoise=True, context_norm=False)
    # a context's statistics count a segment's functionals once, its spectrogram once per frame
    assert FeatureConfig(kind="egemaps").context_rate == pytest.approx(1 / 3)
    assert FeatureConfig().context_rate == 100
    with pytest.raises(ValueError, match="kind"):
        FeatureConfig(kind="mfcc")


def test_heavy_tailed_functionals_are_compressed_on_request():
    from sercli.functionals import _extractor, heavy_tailed

    names = _extractor().names
    mask = heavy_tailed(names)
    assert mask.sum() == 34 and mask[names.index("mfcc3_sma3_stddevNorm")]
    assert mask[names.index("F0semitoneFrom27.5Hz_sma3nz_meanRisingSlope")]
    assert not mask[names.index("F0semitoneFrom27.5Hz_sma3nz_amean")] and not mask[names.index("loudness_sma3_amean")]
    raw, compressed = egemaps(_voice()), egemaps(_voice(), compress_tails=True)
    assert np.array_equal(raw[~mask], compressed[~mask])
    assert np.allclose(compressed[mask], np.arcsinh(raw[mask]))
    config = FeatureConfig(kind="egemaps", compress_tails=True)
    x, _ = featurise([Segment(0.0, 2.0, _voice())], config)
    assert torch.allclose(x[0, :, 0], torch.from_numpy(compressed))
    with pytest.raises(ValueError, match="eGeMAPS"):
        FeatureConfig(compress_tails=True)


def test_the_kept_extractor_gives_what_a_fresh_opensmile_gives_segment_after_segment():
    import opensmile

    from sercli.functionals import _extractor

    fresh = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals)
    kept = _extractor()
    segments = [level_normalised(_voice(1.0 + 0.5 * k, f0=100 + 30 * k, seed=k)) for k in range(4)]
    segments += [np.zeros(16000, dtype=np.float32), segments[0]]  # silence, then a segment again: nothing carried over
    for samples in segments:
        assert np.abs(samples).max() < 1  # in range, where the wrapper's 16-bit cast and ours agree
        expected = fresh.process_signal(samples, RATE).to_numpy()[0].astype(np.float32)
        assert np.array_equal(kept(samples), expected, equal_nan=True)
    with pytest.warns(UserWarning, match="too short"):
        fresh.process_signal(np.zeros(100, dtype=np.float32), RATE)
    assert np.isnan(kept(np.zeros(100, dtype=np.float32))).all()  # too short for a frame: no values


def test_peaks_past_full_scale_are_clipped_not_wrapped_round():
    from sercli.functionals import _extractor

    extract = _extractor()
    voice = level_normalised(_voice())
    loud = voice.copy()
    loud[::997] = 1.6  # a few samples past full scale
    clipped = np.clip(loud, -1.0, 32767 / 32768)
    assert np.array_equal(extract(loud), extract(clipped), equal_nan=True)
    wrapped = ((loud * 32768).astype(np.int64).astype(np.int16) / 32768).astype(np.float32)
    assert not np.array_equal(extract(loud), extract(wrapped), equal_nan=True)


def test_functionals_of_a_batch_are_the_same_on_one_thread_and_on_several():
    from sercli.functionals import functionals

    segments = [_voice(1.0 + 0.25 * k, f0=110 + 20 * k, seed=k) for k in range(5)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = functionals(segments, compress_tails=True)
        torch.set_num_threads(3)
        shared = functionals(segments, compress_tails=True)
    finally:
        torch.set_num_threads(threads)
    assert shared.shape == (5, EGEMAPS_SIZE, 1) and torch.equal(alone, shared)  # same rows, same order


def test_mlps_trained_apart_merge_into_one_checkpoint_that_averages_their_posteriors(tmp_path):
    from dataclasses import asdict

    from sercli.weights import ModelError, load_model, merged_functionals, read_checkpoint, save_checkpoint

    config, features = ModelConfig(topology="egemaps", dense=8), FeatureConfig(kind="egemaps", compress_tails=True)
    nets, paths = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        net = build_net(config)
        net.train()
        with torch.no_grad():  # input statistics of their own
            net(torch.randn(32, EGEMAPS_SIZE, 1) * (seed + 1) + seed)
        nets.append(net.eval())
        paths.append(tmp_path / f"s{seed}.pt")
        save_checkpoint(paths[-1], config, net.state_dict(), features)
    older = [read_checkpoint(p) for p in paths]
    del older[0]["meta"]["features"]["context_voices"]  # saved before that setting existed: its default
    merged_config, state = merged_functionals(older)
    assert merged_config.members == 3
    save_checkpoint(tmp_path / "all.pt", merged_config, state, features)
    model = load_model(tmp_path / "all.pt", device="cpu", precision="fp32")
    x = torch.randn(5, EGEMAPS_SIZE, 1) * 2
    expected = torch.stack([net(x).softmax(dim=-1) for net in nets]).mean(dim=0)
    assert torch.allclose(model.posteriors(x, torch.ones(5, dtype=torch.long)), expected, atol=1e-6)
    assert "3 MLPs" in repr(model)
    other = tmp_path / "raw.pt"
    save_checkpoint(other, config, nets[0].state_dict(), FeatureConfig(kind="egemaps"))
    with pytest.raises(ModelError, match="share their features"):
        merged_functionals([read_checkpoint(paths[0]), read_checkpoint(other)])
    with pytest.raises(ValueError, match="members"):
        ModelConfig(members=2)
    assert asdict(ModelConfig())["members"] == 1


def test_functionals_net_standardises_by_the_training_features_moments():
    net = build_net(ModelConfig(topology="egemaps", dense=8))
    assert isinstance(net, FunctionalsNet) and net.n_classes == 4
    rng = torch.Generator().manual_seed(0)
    batches = [100 + 50 * torch.randn(16, EGEMAPS_SIZE, 1, generator=rng) for _ in range(5)]
    net.train()
    with torch.no_grad():
        for batch in batches:
            net(batch)
    seen = torch.cat(batches).flatten(1)
    assert torch.allclose(net.norm.running_mean, seen.mean(0), rtol=1e-4)  # the cumulative mean, not a decayed one
    net.eval()
    out = net(seen[:3, :, None], torch.tensor([1, 1, 1]))
    assert out.shape == (3, 4) and torch.equal(out, net(seen[:3, :, None]))


def test_egemaps_training_analysis_and_an_ensemble_with_a_spectrogram_model(corpus, tmp_path, example, model_dir):
    out = tmp_path / "run"
    runner = CliRunner()
    common = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv")]
    refused = runner.invoke(main, ["train", *common, "--fold", "1", "--topology", "egemaps", "--denoise",
                                   "--out", str(out)])
    assert refused.exit_code == 2 and "no --denoise" in refused.output
    refused = runner.invoke(main, ["train", *common, "--fold", "1", "--topology", "egemaps", "--set", "members=3",
                                   "--out", str(out)])
    assert refused.exit_code == 2 and "--merge" in refused.output
    trained = runner.invoke(main, ["train", *common, "--fold", "1", "--topology", "egemaps", "--epochs", "2",
                                   "--average-from", "1", "--out", str(out), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    assert "--no-context-norm" in (out / "results.md").read_text()  # the command as it ran
    checkpoint = out / "fold1" / "model.pt"
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    scored = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), *common, "--fold", "1",
                                  "--device", "cpu", "-o", str(tmp_path / "scores.json")])
    assert scored.exit_code == 0, scored.output
    runs = json.loads((tmp_path / "scores.json").read_text())["runs"]["fold1"]
    assert runs["utterance"]["confusion"] == metrics["test"]["utterance"]["confusion"]  # analysis = training's view
    analysed = runner.invoke(main, ["analyze", "-m", str(checkpoint), str(example), "-q"])
    assert analysed.exit_code == 0, analysed.stderr
    rows = analysed.stdout.strip().splitlines()
    assert len(rows) == 1 + 5
    both = runner.invoke(main, ["analyze", "-m", f"{checkpoint}+{model_dir / 'tiny-lstm.pt'}", str(example), "-q"])
    assert both.exit_code == 0, both.stderr
    alone = runner.invoke(main, ["analyze", "-m", str(model_dir / "tiny-lstm.pt"), str(example), "-q"])
    p = lambda text: np.array([[float(v) for v in line.split(",")[-4:]] for line in text.strip().splitlines()[1:]])
    assert np.allclose(p(both.stdout), (p(analysed.stdout) + p(alone.stdout)) / 2, atol=2e-4)
    listed = runner.invoke(main, ["models"], env={"SERCLI_MODEL_PATH": str(out / "fold1")})
    assert "egemaps (MLP on eGeMAPS v02 functionals)" in listed.output


def test_egemaps_with_context_normalisation_scores_as_trained_and_analyses(corpus, tmp_path, example):
    from sercli import analyze
    from sercli.context import context_prior
    from sercli.weights import load_model

    out = tmp_path / "ctx"
    runner = CliRunner()
    common = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv")]
    trained = runner.invoke(main, ["train", *common, "--fold", "1", "--topology", "egemaps", "--context-norm",
                                   "--set", "context_utterance=0.5", "--set", "context_pair=0.3", "--epochs", "2",
                                   "--average-from", "1", "--out", str(out), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.features.kind == "egemaps" and model.features.context_norm and model.features.compress_tails
    mean, variance, weight = context_prior(model.meta)
    assert mean.shape == variance.shape == (EGEMAPS_SIZE,) and weight == pytest.approx(10 / 3)  # 10 s of speech
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    scored = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), *common, "--fold", "1",
                                  "--context-prior", "0", "--device", "cpu", "-o", str(tmp_path / "scores.json")])
    assert scored.exit_code == 0, scored.output
    runs = json.loads((tmp_path / "scores.json").read_text())["runs"]["fold1"]
    assert runs["utterance"]["confusion"] == metrics["test"]["utterance"]["confusion"]  # each speaker's context
    result = analyze(str(example), model=model)
    assert len(result.segments) == 5
    probs = lambda r: np.array([[s.probs[k] for k in model.labels] for s in r.segments])
    assert np.allclose(probs(result).sum(1), 1, atol=1e-3)
    # each segment's functionals standardised over the file's: not as with a window that holds it alone
    alone = analyze(str(example), model=model, context_window_s=0.01)
    assert np.abs(probs(result) - probs(alone)).max() > 1e-3


def test_the_default_models_recipe_file_trains_what_was_shipped(corpus, tmp_path):
    from pathlib import Path

    from sercli.weights import DEFAULT_MODEL, read_checkpoint, resolve

    recipe = Path(__file__).resolve().parent.parent / "train" / "egemaps-mlp.toml"
    out = tmp_path / "recipe"
    common = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv")]
    trained = CliRunner().invoke(main, ["train", "--config", str(recipe), *common, "--fold", "1", "--epochs", "1",
                                        "--out", str(out), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    ours, shipped = read_checkpoint(out / "fold1" / "model.pt"), read_checkpoint(resolve(DEFAULT_MODEL))
    assert {**ours["config"], "members": 5} == shipped["config"]  # the five seeds are merged afterwards
    assert FeatureConfig(**ours["meta"]["features"]) == FeatureConfig(**shipped["meta"]["features"])
    config, expected = ours["meta"]["training"]["config"], dict(shipped["meta"]["training"]["config"])
    assert config == {**expected, "epochs": 1}
    # the speed-perturbed copies it trained with
    assert ours["meta"]["training"].get("speed_augmentation") == shipped["meta"]["training"].get("speed_augmentation")


def test_an_egemaps_model_without_opensmile_is_a_clear_error(tmp_path, monkeypatch):
    from sercli import functionals
    from sercli.weights import ModelError, load_model, save_checkpoint

    config = ModelConfig(topology="egemaps", dense=8)
    save_checkpoint(tmp_path / "eg.pt", config, build_net(config).state_dict(),
                    FeatureConfig(kind="egemaps", context_norm=False))
    assert load_model(tmp_path / "eg.pt", device="cpu").features.kind == "egemaps"
    monkeypatch.setattr(functionals, "available", lambda: False)
    with pytest.raises(ModelError, match=r"eg\.pt: .*openSMILE: pip install 'opensmile>=2\.5,<3'"):
        load_model(tmp_path / "eg.pt", device="cpu")


def test_shipped_egemaps_model(example):
    from sercli import analyze
    from sercli.weights import installed_models, load_model, recorded_scores

    path = installed_models()["egemaps-mlp"]
    assert path.with_suffix(".md").is_file()  # its model card
    model = load_model("egemaps-mlp", device="cpu")
    assert model.features.kind == "egemaps" and model.features.context_norm and model.features.compress_tails
    assert model.features.context_window_s == 60 and model.meta["context_prior"]  # the file's minute around a segment
    assert isinstance(model.net, FunctionalsNet) and model.net.config.members == 5  # seeds 0-4, averaged
    for member in model.net.members:
        # its inputs arrive standardised over their context (mixed with the clips-alone view), so near unit variance
        variance = member.norm.running_var
        assert variance.dtype == torch.float32 and torch.isfinite(variance).all() and 0.3 < variance.mean() < 3
    assert recorded_scores(path)["clips"]["ua"] is not None
    result = analyze(str(example), model=model)
    assert len(result.segments) == 5 and result.segments[0].label == "angry"


# --------------------------------------------------------------------------- voice-typed contexts


def _two_voices(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 6 features whose first column tells the voice type (female high), the rest noise."""
    rng = np.random.default_rng(seed)
    female = rng.random(n) < 0.5
    x = rng.normal(size=(n, 6))
    x[:, 0] += np.where(female, 3.0, -3.0)
    return x, female


def test_voices_are_learnt_from_labelled_segments_and_round_trip_through_the_checkpoint():
    from sercli.context import fit_voices, voice_context

    x, female = _two_voices()
    voices = fit_voices(x, female, prior_columns=3.0)
    assert np.mean(voices.of(x) == female) > 0.97
    for kind, rows in ((0, ~female), (1, female)):
        mean, variance, columns = voices.priors[kind]
        assert np.allclose(mean, x[rows].mean(0)) and np.allclose(variance, x[rows].var(0)) and columns == 3.0
    meta = {"context_voices": voices.to_meta(), "features": {"kind": "egemaps", "context_norm": True}}
    again = voice_context(meta, seconds=30)
    assert np.array_equal(again.of(x), voices.of(x)) and again.priors[1][2] == pytest.approx(10)  # 30 s: 10 segments
    assert voice_context({"features": {}}) is None
    with pytest.raises(ValueError, match="both female and male"):
        fit_voices(x, np.ones(len(x), dtype=bool), 3.0)
    with pytest.raises(ValueError, match="context_voices"):
        FeatureConfig(kind="egemaps", context_voices=True)  # needs context normalisation


def test_a_voice_typed_window_standardises_each_segment_over_its_own_types_segments():
    from sercli.context import ContextWindow, fit_voices

    x, female = _two_voices(n=40, seed=1)
    voices = fit_voices(x, female, prior_columns=2.0)
    window = ContextWindow(6, None, np.inf, voices)
    for k, row in enumerate(x):
        window.add(k, float(k), torch.from_numpy(row[:, None]).float())
    released = window.release(ended=True)
    types = voices.of(x)
    for key, _, mean, std in released:
        same = x[types == types[key]]
        prior_mean, prior_variance, weight = voices.priors[types[key]]
        n = len(same)
        expected_mean = (same.sum(0) + weight * prior_mean) / (n + weight)
        second = ((same ** 2).sum(0) + weight * (prior_variance + prior_mean ** 2)) / (n + weight)
        assert np.allclose(mean, expected_mean, atol=1e-5)
        assert np.allclose(std, np.sqrt(second - expected_mean ** 2), atol=1e-4)
    plain = ContextWindow(6, None, np.inf)
    for k, row in enumerate(x):
        plain.add(k, float(k), torch.from_numpy(row[:, None]).float())
    assert not np.allclose(plain.release(ended=True)[0][2], released[0][2])  # one context for all: not the same


def test_training_with_voice_typed_contexts_needs_genders_and_analyses_with_them(corpus, tmp_path, example):
    from sercli import analyze
    from sercli.context import voice_context
    from sercli.weights import load_model

    runner = CliRunner()
    common = ["--folds", str(corpus / "folds.csv"), "--fold", "none", "--topology", "egemaps", "--context-norm",
              "--set", "context_utterance=0.5", "--set", "context_voices=true", "--epochs", "2",
              "--average-from", "1", "--device", "cpu"]
    unlabelled = runner.invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", *common,
                                      "--out", str(tmp_path / "none")])
    assert unlabelled.exit_code != 0 and "gender" in unlabelled.stderr and "Traceback" not in unlabelled.stderr
    rows = (corpus / "manifest.csv").read_text().splitlines()
    genders = {"s1": "female", "s2": "male", "s3": "F", "s4": "m"}  # any three training speakers hold both
    labelled = [rows[0] + ",gender"] + [f"{row},{genders[row.split(',')[2]]}" for row in rows[1:]]
    manifest = tmp_path / "gendered.csv"
    manifest.write_text("\n".join(labelled).replace("s1_", str(corpus / "s1_")).replace("s2_", str(corpus / "s2_"))
                        .replace("s3_", str(corpus / "s3_")).replace("s4_", str(corpus / "s4_")) + "\n")
    out = tmp_path / "voices"
    trained = runner.invoke(main, ["train", "--corpus", f"manifest={manifest}", *common, "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    model = load_model(out / "all" / "model.pt", device="cpu")
    assert model.features.context_voices and voice_context(model.meta) is not None
    result = analyze(str(example), model=model)
    assert len(result.segments) == 5
    scored = runner.invoke(main, ["evaluate", "--model", str(out / "all" / "model.pt"), "--corpus",
                                  f"manifest={manifest}", "--folds", str(corpus / "folds.csv"), "--fold", "1",
                                  "--context", "utterance", "--device", "cpu", "-o", str(tmp_path / "clips.json")])
    assert scored.exit_code == 0, scored.output


def test_the_default_analysis_routes_clips_and_films_between_the_shipped_pair(example):
    """sercli analyze without --model: each segment of the 21 s example (five segments, over the
    10 s of speech) is the voice-typed model's; a 4 s clip of it (one segment) the default MLPs'.
    Both models read the same features: openSMILE runs once per segment."""
    import numpy as np

    from sercli import analyze, predict
    from sercli.audio import load_audio
    from sercli.weights import DEFAULT_ANALYSIS_MODEL, load_model

    assert DEFAULT_ANALYSIS_MODEL == "egemaps-mlp|egemaps-mlp-voices"
    film, clip = str(example), load_audio(str(example))[16000 : 5 * 16000]
    routed = [analyze(film, device="cpu"), analyze(clip, device="cpu")]
    assert [r.model for r in routed] == [DEFAULT_ANALYSIS_MODEL] * 2
    alone = [analyze(film, model=load_model("egemaps-mlp-voices", device="cpu")),
             analyze(clip, model=load_model("egemaps-mlp", device="cpu"))]
    for got, want in zip(routed, alone):
        assert len(got.segments) == len(want.segments) > 0
        for s, t in zip(got.segments, want.segments):
            assert max(abs(s.probs[k] - t.probs[k]) for k in s.probs) < 1e-6
    assert len(routed[0].segments) == 5 and len(routed[1].segments) == 1


def test_shipped_voice_typed_model(example):
    from sercli import analyze
    from sercli.context import voice_context
    from sercli.weights import installed_models, load_model, recorded_scores

    path = installed_models()["egemaps-mlp-voices"]
    assert path.with_suffix(".md").is_file()  # its model card
    model = load_model("egemaps-mlp-voices", device="cpu")
    assert model.features.context_voices and model.net.config.members == 5
    voices = voice_context(model.meta)
    assert voices is not None and len(voices.priors) == 2
    # the two types' priors differ where voices do: the mean pitch (semitones from 27.5 Hz) is higher for women
    assert voices.priors[1][0][0] > voices.priors[0][0][0] + 3
    default = installed_models()["egemaps-mlp"]
    assert recorded_scores(path)["programmes"]["ua"] > recorded_scores(default)["programmes"]["ua"]  # for films
    assert recorded_scores(path)["clips"]["ua"] < recorded_scores(default)["clips"]["ua"]  # not for single clips
    result = analyze(str(example), model=model)
    assert len(result.segments) == 5 and result.segments[0].label == "angry"
