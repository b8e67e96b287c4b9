"""One featurisation path: training/evaluation and analysis turn the same audio into the same
network inputs (segments cut alike, pitch tracked per speech region, the same context window)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sercli.corpora import Utterance
from sercli.features import FeatureConfig
from sercli.model import EmotionNet, ModelConfig
from sercli.predict import Pipeline
from sercli.weights import load_model, save_checkpoint

TOLERANCE = 2e-3  # training holds its spectrograms in float16 (relative step 5e-4), analysis in float32


def _inputs_seen(model) -> list[tuple[np.ndarray, int]]:
    """Record every (spectrogram, valid frames) the model is given from now on."""
    seen = []
    original = model.posteriors

    def record(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        seen.extend((row.float().cpu().numpy().copy(), int(k)) for row, k in zip(x, n))  # x may be a reused buffer
        return original(x, n)

    model.posteriors = record
    return seen


@pytest.mark.parametrize("features", [FeatureConfig(), FeatureConfig(denoise=True),
                                      FeatureConfig(denoise=True, context_norm=True)],
                         ids=["plain", "denoise", "denoise-context"])
def test_training_and_analysis_give_the_same_spectrograms(features, example, tmp_path):
    from sercli.context import context_prior
    from sercli.dataset import build_segments, normalise_contexts

    torch.manual_seed(0)
    config = ModelConfig(lstm_hidden=8, dense=8)
    prior = {"mean": np.linspace(0.5, 1.5, features.n_bins).tolist(), "variance": np.full(features.n_bins, 4.0).tolist()}
    save_checkpoint(tmp_path / "m.pt", config, EmotionNet(config).state_dict(), features,
                    {"name": "m", "context_prior": prior})
    model = load_model(tmp_path / "m.pt", device="cpu", precision="fp32")

    # Training and evaluation: the file as one labelled utterance; its context is itself, which
    # is what analysis compares a segment with in a file shorter than the context window.
    utterance = Utterance(str(example), "neutral", "s1", "toy")
    data = build_segments([utterance], features, None, log=lambda _: None)
    if features.context_norm:
        data = normalise_contexts(data, [utterance], "utterance", context_prior(model.meta))
    trained = [(x.float().numpy(), int(n)) for x, n in zip(data.spectrograms, data.n_frames)]

    seen = _inputs_seen(model)
    (result,) = Pipeline(model, batch_size=2).run([str(example)])
    assert len(result.segments) == len(trained) == len(seen) == 5
    assert sorted(n for _, n in seen) == sorted(n for _, n in trained)
    unmatched = list(range(len(seen)))
    for x, n in trained:  # analysis scores shortest first: pair each training input with its twin
        k = min((k for k in unmatched if seen[k][1] == n), key=lambda k: np.abs(seen[k][0] - x).max())
        np.testing.assert_allclose(seen[k][0], x, rtol=TOLERANCE, atol=TOLERANCE)
        unmatched.remove(k)
    if features.denoise:  # the pitch really drove it: the denoised inputs differ from plain ones
        plain = build_segments([utterance], FeatureConfig(), None, log=lambda _: None)
        assert np.abs(plain.spectrograms.float().numpy() - data.spectrograms.float().numpy()).max() > 0.5


def test_the_ray_file_task_streams_parts_with_the_pipelines_inputs(example, tmp_path, run_ffmpeg, monkeypatch):
    """The Ray task (called here as the plain generator it is) yields a long file in parts as it
    is decoded, holding no more than a context window of segments, and its spectrograms are what
    the local pipeline feeds the same context-normalised model."""
    from dataclasses import asdict

    import sercli.context
    from sercli.cluster import _featurise
    from sercli.context import context_prior
    from sercli.segment import SegmentationConfig

    long_file = tmp_path / "long.wav"  # the example four times: 86 s, 20 segments
    run_ffmpeg("-stream_loop", "3", "-i", str(example), "-ar", "16000", "-ac", "1", str(long_file))
    torch.manual_seed(0)
    config = ModelConfig(lstm_hidden=8, dense=8)
    features = FeatureConfig(context_norm=True, context_window_s=8.0)
    prior = {"mean": np.full(features.n_bins, 1.0).tolist(), "variance": np.full(features.n_bins, 4.0).tolist()}
    save_checkpoint(tmp_path / "m.pt", config, EmotionNet(config).state_dict(), features,
                    {"name": "m", "context_prior": prior})
    model = load_model(tmp_path / "m.pt", device="cpu", precision="fp32")

    most_held = 0
    add = sercli.context.ContextWindow.add

    def counting_add(self, *args):
        nonlocal most_held
        add(self, *args)
        most_held = max(most_held, len(self.held))

    monkeypatch.setattr(sercli.context.ContextWindow, "add", counting_add)
    items = list(_featurise(str(long_file), asdict(SegmentationConfig()), asdict(features), 0,
                            context_prior(model.meta), 3))
    *parts, end = items
    assert end["duration_s"] == pytest.approx(86.2, abs=0.2) and "error" not in end
    metas, arrays = parts[0::2], parts[1::2]
    assert len(metas) >= 6 and all(len(m["times"]) == len(a) <= 3 for m, a in zip(metas, arrays))
    times = [t for m in metas for t in m["times"]]
    assert len(times) == 20 and times == sorted(times)
    assert most_held <= 8  # about 8 s of speech around a segment, never the whole file

    seen = _inputs_seen(model)
    (result,) = Pipeline(model, batch_size=4).run([str(long_file)])
    assert [(s.start_s, s.end_s) for s in result.segments] == [(round(a, 3), round(b, 3)) for a, b in times]
    streamed = [(x.astype(np.float32), n) for m, a in zip(metas, arrays) for x, n in zip(a, m["n_frames"])]
    unmatched = list(range(len(seen)))
    for x, n in streamed:
        k = min((k for k in unmatched if seen[k][1] == n), key=lambda k: np.abs(seen[k][0] - x).max())
        np.testing.assert_allclose(seen[k][0], x, rtol=TOLERANCE, atol=TOLERANCE)
        unmatched.remove(k)


def test_evaluating_each_clip_alone_is_analysing_each_clip(corpus, tmp_path):
    """`sercli evaluate --context utterance` scores every segment of every clip as `sercli
    analyze clip.wav` does: the same segments, the same context (the clip), the same posteriors."""
    from sercli.corpora import read_manifest
    from sercli.evaluation import run_evaluation

    torch.manual_seed(0)
    config = ModelConfig(lstm_hidden=8, dense=8)
    features = FeatureConfig(context_norm=True)
    prior = {"mean": np.full(features.n_bins, 1.0).tolist(), "variance": np.full(features.n_bins, 4.0).tolist()}
    save_checkpoint(tmp_path / "m.pt", config, EmotionNet(config).state_dict(), features,
                    {"name": "m", "context_prior": prior})
    utterances = read_manifest(corpus / "manifest.csv")
    scored: dict = {}
    results = run_evaluation(utterances, [], str(tmp_path / "m.pt"), "cpu", "fp32", None, log=lambda _: None,
                             context="utterance", scored_segments=scored)
    assert results["context"] == "utterance"
    ((posteriors, owner, *_),) = scored.values()
    model = load_model(tmp_path / "m.pt", device="cpu", precision="fp32")
    analysed = list(Pipeline(model).run([u.path for u in utterances]))
    for i, result in enumerate(analysed):
        mine = posteriors[owner == i].numpy()
        assert len(result.segments) == len(mine) > 0
        got = np.array([[s.probs[label] for label in model.labels] for s in result.segments])
        np.testing.assert_allclose(got, mine, atol=1e-2)  # float16 held spectrograms; posteriors rounded to 4 places


def test_evaluating_a_routed_pair_routes_as_analysis_does(corpus, tmp_path, monkeypatch):
    """evaluate --model 'A|B': each segment scored by B where its context (its clip, or its
    speaker's speech) holds ROUTE_SPEECH_S of speech or more, else by A; each clip alone as
    `sercli analyze clip.wav -m 'A|B'` scores it."""
    from sercli import context
    from sercli.corpora import read_manifest
    from sercli.evaluation import run_evaluation

    features = FeatureConfig(context_norm=True)
    prior = {"mean": np.full(features.n_bins, 1.0).tolist(), "variance": np.full(features.n_bins, 4.0).tolist()}
    config = ModelConfig(lstm_hidden=8, dense=8)
    for seed, name in enumerate(("a", "b")):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"{name}.pt", config, EmotionNet(config).state_dict(), features,
                        {"name": name, "context_prior": prior})
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    utterances = read_manifest(corpus / "manifest.csv")
    speech = []  # the most frames of speech a clip holds
    for route_s in (10.0, 5.0):  # the clips hold 3-4.4 s of speech, the speakers 4-8 s
        monkeypatch.setattr(context, "ROUTE_SPEECH_S", route_s)
        for view in ("utterance", "speaker"):
            scored: dict = {}
            run_evaluation(utterances, [], f"{a}|{b}", "cpu", "fp32", None, log=lambda _: None, context=view,
                           scored_segments=scored)
            alone = {name: scored[name, "clean", "all", view, 10.0] for name in (a, b)}
            routed, owner, _, columns = scored[f"{a}|{b}", "clean", "all", view, 10.0]
            films = columns >= route_s * 100
            assert films.any() == (view == "speaker" and route_s == 5.0) and not films.all()  # speakers: both
            torch.testing.assert_close(routed, torch.where(films[:, None], alone[b][0], alone[a][0]))
            if view == "utterance":
                speech.append(float(columns.max()))
                pair = [load_model(path, device="cpu", precision="fp32") for path in (a, b)]
                for i, result in enumerate(Pipeline(pair, route=True).run([u.path for u in utterances])):
                    got = np.array([[s.probs[label] for label in pair[0].labels] for s in result.segments])
                    np.testing.assert_allclose(got, routed[owner == i].numpy(), atol=1e-2)
    assert max(speech) < 500  # so the clips alone never reach even the 5 s
