"""Segmentation rules: never above the maximum, near-equal splits, boundaries, nothing on silence."""

from __future__ import annotations

import numpy as np
import pytest

from sercli.audio import load_audio
from sercli.segment import SegmentationConfig, Segmenter, segment_audio, split_evenly

from conftest import tone

# Where the example's four utterances are (seconds): 1 s of silence, then each clip.
UTTERANCES = [(1.0, 5.404), (6.404, 10.708), (11.708, 15.77), (16.77, 20.54)]


@pytest.fixture(scope="module")
def example_audio(example):
    return load_audio(str(example))


@pytest.mark.parametrize("length,limit,parts", [(100, 100, 1), (101, 100, 2), (300, 100, 3), (301, 100, 4),
                                                (48001, 48000, 2), (7, 3, 3)])
def test_split_evenly(length, limit, parts):
    pieces = split_evenly(10, 10 + length, limit)
    assert len(pieces) == parts  # the fewest parts
    assert pieces[0][0] == 10 and pieces[-1][1] == 10 + length  # covers it exactly
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous
    sizes = [b - a for a, b in pieces]
    assert max(sizes) <= limit and max(sizes) - min(sizes) <= 1  # near-equal


def test_split_empty():
    assert split_evenly(5, 5, 10) == []


def test_example_segments(example_audio):
    segments = segment_audio(example_audio)
    assert all(s.end_s - s.start_s <= 3.0 + 1e-9 for s in segments)
    # Every segment lies inside one utterance (with the VAD's small padding) ...
    for s in segments:
        assert any(a - 0.3 <= s.start_s and s.end_s <= b + 0.3 for a, b in UTTERANCES), (s.start_s, s.end_s)
    # ... and every utterance is covered by at least one segment.
    for a, b in UTTERANCES:
        assert any(a - 0.3 <= s.start_s < b for s in segments)
    # The leading second of silence is never labelled.
    assert min(s.start_s for s in segments) > 0.9
    for s in segments:
        assert len(s.samples) == round(s.end_s * 16000) - round(s.start_s * 16000)


def test_long_region_is_split_into_equal_parts(example_audio):
    """The 4.06 s neutral utterance becomes two halves of about 2 s, not 3 s + 1 s."""
    segments = [s for s in segment_audio(example_audio) if 11.5 < s.start_s < 16.5]
    assert len(segments) == 2
    first, second = segments
    assert first.end_s == second.start_s
    assert abs((first.end_s - first.start_s) - (second.end_s - second.start_s)) < 0.01


def test_max_segment_option(example_audio):
    segments = segment_audio(example_audio, SegmentationConfig(max_segment_s=1.0))
    assert segments and all(s.end_s - s.start_s <= 1.0 + 1e-9 for s in segments)


def test_chunking_does_not_change_segments(example_audio):
    whole = segment_audio(example_audio)
    segmenter = Segmenter(SegmentationConfig())
    pieces = []
    for start in range(0, len(example_audio), 7777):  # odd chunk size, not a multiple of the VAD frame
        pieces += segmenter.feed(example_audio[start : start + 7777])
    pieces += segmenter.finish()
    assert [(s.start_s, s.end_s) for s in pieces] == [(s.start_s, s.end_s) for s in whole]
    for a, b in zip(pieces, whole):
        np.testing.assert_array_equal(a.samples, b.samples)


def test_silence_noise_and_tones_get_no_segments():
    rng = np.random.default_rng(0)
    assert segment_audio(np.zeros(16000 * 5, dtype=np.float32)) == []
    assert segment_audio((0.05 * rng.standard_normal(16000 * 5)).astype(np.float32)) == []
    assert segment_audio(tone(5.0, 440.0)) == []
    assert segment_audio(np.zeros(0, dtype=np.float32)) == []


def test_fixed_windows(example_audio):
    segments = segment_audio(example_audio, SegmentationConfig(mode="fixed"))
    starts = [s.start_s for s in segments]
    assert all(abs(start / 3.0 - round(start / 3.0)) < 1e-9 for start in starts)  # on the 3 s grid
    assert all(s.end_s - s.start_s <= 3.0 + 1e-9 for s in segments)
    assert all(a.end_s <= b.start_s for a, b in zip(segments, segments[1:]))  # no overlap
    # 21.5 s: windows at 0, 3, ..., 21; the first (0-3 s) has speech from 2 s on, so it is kept.
    assert 0.0 in starts and len(segments) >= 6
    padded = np.concatenate([example_audio, np.zeros(16000 * 9, dtype=np.float32)])
    tail = segment_audio(padded, SegmentationConfig(mode="fixed"))
    assert max(s.start_s for s in tail) < 22.0  # windows of pure silence are not labelled


def test_memory_stays_bounded_on_long_input(example_audio):
    """An hour of speech and silence passes through holding at most about two minutes."""
    segmenter = Segmenter(SegmentationConfig())
    chunk = np.tile(example_audio, 2)[: 30 * 16000]
    most = 0
    count = 0
    for _ in range(20):  # 10 minutes, in 30 s chunks
        count += len(segmenter.feed(chunk))
        most = max(most, sum(c.size for c in segmenter._chunks))
    count += len(segmenter.finish())
    assert count > 100
    assert most <= 2 * 30 * 16000 + 16000


def test_bad_config():
    with pytest.raises(ValueError):
        SegmentationConfig(mode="words")
    with pytest.raises(ValueError):
        SegmentationConfig(max_segment_s=0.0)


def test_voice_activity_model_leaves_torch_its_threads():
    import threading

    import torch

    from sercli.segment import SpeechProbabilities

    before = torch.get_num_threads()
    SpeechProbabilities()  # onnxruntime's start-up resets OpenMP's thread count process-wide
    assert torch.get_num_threads() == before
    worker = threading.Thread(target=SpeechProbabilities)  # as the pipeline's decoding thread does
    worker.start()
    worker.join()
    assert torch.get_num_threads() == before


def test_a_second_voice_activity_thread_gives_the_same_probabilities(example_audio):
    from sercli.segment import SpeechProbabilities

    one, two = SpeechProbabilities(1), SpeechProbabilities(2)
    assert [v._session.get_session_options().intra_op_num_threads for v in (one, two)] == [1, 2]
    chunks = [example_audio[i : i + 70_000] for i in range(0, example_audio.size, 70_000)]
    first = np.concatenate([one.feed(c) for c in chunks] + [one.feed(np.zeros(0, np.float32), final=True)])
    second = np.concatenate([two.feed(c) for c in chunks] + [two.feed(np.zeros(0, np.float32), final=True)])
    assert first.size == example_audio.size // 512 + 1 and first.max() > 0.9  # the example holds speech
    np.testing.assert_array_equal(first, second)


def test_speech_detection_gets_a_second_thread_only_beside_a_gpu(monkeypatch):
    from types import SimpleNamespace

    import torch

    from sercli import predict

    cpu, gpu = (SimpleNamespace(device=torch.device(kind)) for kind in ("cpu", "cuda"))
    monkeypatch.setattr(predict.os, "cpu_count", lambda: 16)
    assert predict._vad_threads([gpu]) == 2
    assert predict._vad_threads([gpu, cpu]) == 1
    assert predict._vad_threads([cpu]) == 1
    monkeypatch.setattr(predict.os, "cpu_count", lambda: 2)
    assert predict._vad_threads([gpu]) == 1
