"""Labelled speech as the network sees it: every utterance decoded, cut into segments as analysis
cuts a file, featurised (in a FeaturisingPool of processes) and cached on disk; then split by
speaker and normalised per context. Never imported by the inference path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .audio import SAMPLE_RATE, AudioError, load_audio, resample
from .context import ContextStats, Voices, normalise_segments
from .corpora import CorpusError, Split, Utterance
from .features import FeatureConfig, featurise, pitch_tracker
from .model import LABELS
from .segment import PitchTracker, Segment, SegmentationConfig, Segmenter, SpeechProbabilities, region_segments
from .weights import atomic_torch_save


@dataclass
class SegmentSet:
    """Spectrograms of all segments of a list of utterances, with the utterance each came from."""

    spectrograms: torch.Tensor  # (N, F, T) float16
    n_frames: torch.Tensor  # (N,)
    utterance: torch.Tensor  # (N,) index into the utterance list
    labels: torch.Tensor  # (N,) class index

    @property
    def n_utterances(self) -> int:
        return int(torch.unique(self.utterance).numel())

    def subset(self, mask: torch.Tensor) -> "SegmentSet":
        return SegmentSet(self.spectrograms[mask], self.n_frames[mask], self.utterance[mask], self.labels[mask])

    def binary(self, negative: str, positive: str) -> "SegmentSet":
        """The segments of two classes, relabelled 0 (negative) and 1 (positive)."""
        a, b = LABELS.index(negative), LABELS.index(positive)
        part = self.subset((self.labels == a) | (self.labels == b))
        part.labels = (part.labels == b).long()
        return part


def speech_regions(samples: np.ndarray, vad: SpeechProbabilities) -> list[tuple[int, int]]:
    """Sample ranges of the speech regions that analysis finds in an utterance (the same speech
    detection and padding, sercli.segment.Segmenter); an utterance where it finds none is taken
    whole, so that no labelled utterance goes unscored."""
    segmenter = Segmenter(SegmentationConfig(), vad, record_regions=True)
    segmenter.feed(np.asarray(samples, dtype=np.float32))
    segmenter.finish()
    return segmenter.regions or ([(0, len(samples))] if len(samples) else [])


def utterance_segments(samples: np.ndarray, regions: list[tuple[int, int]], max_s: float = 3.0,
                       pitch: PitchTracker | None = None) -> list[Segment]:
    """The segments of one utterance, cut as analysis cuts a file (sercli.segment.region_segments):
    each region (speech_regions of its clean samples, so that a clean and a noisy test see the
    same segments) in near-equal parts of at most max_s, with its pitch tracked per region for
    denoising features. samples: the utterance as it is to be featurised (clean, or with noise)."""
    return [segment for a, b in regions
            for segment in region_segments(samples[a:b], a, round(max_s * SAMPLE_RATE), pitch)]


def pair_label(first: str, second: str, start: float, end: float, seam: float) -> str:
    """The label of a pair copy's segment [start, end) (samples) that may straddle the seam
    between its two utterances: that of the one it overlaps more, except that an emotion heard
    for at least a third of the segment outweighs a neutral rest (as in CopyPaste, Pappagari et
    al. 2021: emotional speech next to neutral speech stays emotional)."""
    if first == second:
        return first
    length = max(end - start, 1.0)
    heard = {first: max(0.0, min(end, seam) - start) / length, second: max(0.0, end - max(start, seam)) / length}
    if "neutral" in heard:
        emotion = second if first == "neutral" else first
        if heard[emotion] >= 1 / 3:
            return emotion
    return first if heard[first] >= heard[second] else second


Corruption = Callable[[int, np.ndarray], np.ndarray]  # (utterance index, clean samples) -> heard samples
Clean = dict[str, tuple[np.ndarray, list[tuple[int, int]]]]  # Utterance.key -> (decoded samples, speech regions)


def _featurise(utterances: list[Utterance], first: int, last: int, features: FeatureConfig,
               corrupt: Corruption | None, clean: Clean | None, keep_clean: bool) -> tuple:
    """Utterances [first, last): their segments' spectrograms (float16), frame counts, owners
    (indices into `utterances`) and labels, plus the newly decoded (samples, regions) when
    keep_clean. Runs in the caller's process or in a pool worker."""
    vad = None
    pitch = pitch_tracker(features)
    spectrograms, n_frames, owner, labels = [], [], [], []
    decoded: Clean = {}
    pending: list[Segment] = []

    def flush() -> None:
        if pending:
            x, n = featurise(pending, features)
            spectrograms.append(x.half())
            n_frames.extend(n.tolist())
            pending.clear()

    for i in range(first, last):
        utterance = utterances[i]
        known = clean.get(utterance.key) if clean is not None and utterance.then is None else None
        seam = None  # a pair copy's first sample of its second utterance
        if known is not None:
            audio, regions = known
        else:
            try:
                audio = load_audio(utterance.path)
                if utterance.speed != 1:  # played faster or slower: read as if sampled at speed x 16 kHz
                    audio = resample(audio, round(SAMPLE_RATE * utterance.speed))
                if utterance.channel:  # through a codec or a room, before the speech detector hears it
                    from .channels import apply_channel

                    audio = apply_channel(audio, utterance.channel, utterance.path)
            except AudioError as exc:
                raise CorpusError(f"{utterance.path}: {exc}") from exc
            if utterance.then is not None:  # the speaker's next utterance right after, pause and all
                try:
                    after = load_audio(utterance.then[0])
                except AudioError as exc:
                    raise CorpusError(f"{utterance.then[0]}: {exc}") from exc
                seam = len(audio)
                audio = np.concatenate([audio, after])
            vad = vad or SpeechProbabilities()
            regions = speech_regions(audio, vad)
            if keep_clean and seam is None:
                decoded[utterance.key] = (audio, regions)
        heard = corrupt(i, audio) if corrupt is not None else audio
        for segment in utterance_segments(heard, regions, pitch=pitch):
            pending.append(segment)
            owner.append(i)
            label = utterance.label
            if seam is not None:
                label = pair_label(utterance.label, utterance.then[1], segment.start_s * SAMPLE_RATE,
                                   segment.end_s * SAMPLE_RATE, seam)
            labels.append(LABELS.index(label))
        if len(pending) >= 64:
            flush()
    flush()
    return spectrograms, n_frames, owner, labels, decoded


def _worker_start() -> None:
    torch.set_num_threads(1)  # the pool's processes share the cores


class FeaturisingPool:
    """Processes that decode and featurise utterances for build_segments, as a context manager:
    started on first use, reused by every build_segments call given it (scoring many conditions
    calls it hundreds of times, and each new process would import torch again), shut down when
    the `with` block ends."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor = None

    def __enter__(self) -> "FeaturisingPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, *args):
        """_featurise(*args) in a worker: a Future."""
        if self._executor is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_worker_start)
        return self._executor.submit(_featurise, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None


FEATURISATION = "regions-pitch-per-region"  # in the cache key: segments cut and pitch tracked as in analysis
FUNCTIONALS_INPUT = "pcm16-clipped"  # in an eGeMAPS cache's key: peaks past full scale clipped, no longer wrapped


def build_segments(utterances: list[Utterance], features: FeatureConfig, cache_dir: Path | None,
                   log: Callable[[str], None] = print, corrupt: Corruption | None = None,
                   corrupt_key: str = "", workers: int = 1, clean: Clean | None = None,
                   pool: FeaturisingPool | None = None) -> SegmentSet:
    """Decode, segment and featurise every utterance once; cached on disk by content key.

    corrupt: applied to each decoded utterance before featurising (noise for robustness tests);
    corrupt_key must then describe it, since it is part of the cache key. It must pickle when
    workers > 1.
    workers: featurise in this many processes, each taking a contiguous share of the utterances;
    the result is the same as with one. pool: a FeaturisingPool to run them in (its workers,
    started once for many calls); without one, a pool lives for this call only.
    clean: a dict the caller keeps between calls: each utterance's decoded samples and segment
    regions are added to it and reused, so scoring several conditions or feature settings decodes
    and runs the VAD once per utterance (memory: the whole corpus's samples)."""
    # The spectrograms themselves: context normalisation comes after (normalise_contexts).
    spectrogram = {k: v for k, v in asdict(features).items() if not k.startswith("context_")}
    if not features.compress_tails:  # keys from before the setting stay as they were
        del spectrogram["compress_tails"]
    # FEATURISATION names the cutting and pitch tracking, so that caches of an older way are not reused.
    heard = [(u.path, u.label) + ((u.speed,) if u.speed != 1 else ()) + ((u.channel,) if u.channel else ())
             + (tuple(u.then) if u.then is not None else ()) for u in utterances]
    described = [spectrogram, heard, FEATURISATION] + ([corrupt_key] if corrupt else [])
    if features.kind == "egemaps":
        described.append(FUNCTIONALS_INPUT)
    if any(u.channel for u in utterances):  # how channel copies are made, so that a change rebuilds them
        from .channels import CHANNEL_COPIES

        described.append(CHANNEL_COPIES)
    key = hashlib.sha256(json.dumps(described).encode())
    cache = cache_dir / f"segments-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SegmentSet(**data)
    started = time.monotonic()
    keep = clean is not None
    workers = max(1, min(pool.workers if pool is not None else workers, len(utterances) // 4))  # >= 4 utterances each
    edges = np.linspace(0, len(utterances), max(4 * workers, len(utterances) // 250) + 1).round().astype(int)
    shares = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    last_log = started

    def progress(done: int) -> None:  # a line every 30 s or so on long builds
        nonlocal last_log
        if done < len(utterances) and time.monotonic() - last_log > 30:
            log(f"features: {done}/{len(utterances)} utterances, {time.monotonic() - started:.0f} s")
            last_log = time.monotonic()

    parts = []
    if workers == 1:
        for first, last in shares:
            parts.append(_featurise(utterances, first, last, features, corrupt, clean, keep))
            progress(last)
    else:
        with contextlib.ExitStack() as own:
            if pool is None:
                pool = own.enter_context(FeaturisingPool(workers))
            futures = [pool.submit(utterances, first, last, features, corrupt,
                                   {u.key: clean[u.key] for u in utterances[first:last] if u.key in clean}
                                   if keep else None, keep) for first, last in shares]
            for (first, last), future in zip(shares, futures):
                parts.append(future.result())  # in order; the log lags a little behind the pool
                progress(last)
    spectrograms, n_frames, owner, labels = [], [], [], []
    for part_spectrograms, part_frames, part_owner, part_labels, decoded in parts:
        spectrograms += part_spectrograms
        n_frames += part_frames
        owner += part_owner
        labels += part_labels
        if keep:
            clean.update(decoded)
    if not spectrograms:
        raise CorpusError("no utterances to featurise")
    result = SegmentSet(torch.cat(spectrograms), torch.tensor(n_frames), torch.tensor(owner), torch.tensor(labels))
    log(f"features: {len(utterances)} utterances, {len(labels)} segments, {time.monotonic() - started:.0f} s"
        + (f" ({workers} processes)" if workers > 1 else ""))
    if cache is not None:
        atomic_torch_save(asdict(result), cache)
    return result


def population_moments(data: SegmentSet, members: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-bin mean and variance over every valid frame of a set (or of its segments `members`,
    a boolean mask), and its frame count: the prior that ContextStats leans on (stored in a
    context-normalised model's checkpoint)."""
    stats = ContextStats(data.spectrograms.shape[1])
    chosen = range(len(data.labels)) if members is None else torch.nonzero(members).squeeze(1).tolist()
    for i in chosen:
        stats.add(0.0, data.spectrograms[i, :, : int(data.n_frames[i])].float().numpy())
    mean, std = stats.moments()
    return mean, std ** 2, stats.frames


def normalise_contexts(data: SegmentSet, utterances: list[Utterance], by: str = "speaker",
                       prior: tuple[np.ndarray, np.ndarray, float] | None = None,
                       voices: Voices | None = None) -> SegmentSet:
    """Each segment standardised per frequency bin over its context's speech frames: its
    speaker's (by="speaker", as in training) or its own utterance's (by="utterance", as when
    short files are analysed one by one). prior: see ContextStats; voices: within a context, over
    the segments of the segment's own voice type, with its prior (as analysis does, see Voices)."""
    groups = _context_groups(data, utterances, by)
    out = torch.zeros_like(data.spectrograms)
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).squeeze(1)
        out[members] = normalise_segments(data.spectrograms[members], data.n_frames[members], prior,
                                          voices=voices).to(out.dtype)
    return SegmentSet(out, data.n_frames, data.utterance, data.labels)


def _context_groups(data: SegmentSet, utterances: list[Utterance], by: str) -> torch.Tensor:
    """Each segment's context (see normalise_contexts) as a group number."""
    if by not in ("speaker", "utterance"):
        raise ValueError(f"context must be speaker or utterance, not {by!r}")
    keys = [u.talker if by == "speaker" else i for i, u in enumerate(utterances)]
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    return torch.tensor([index[key] for key in keys], dtype=torch.long)[data.utterance]


def context_columns(data: SegmentSet, utterances: list[Utterance], by: str = "speaker") -> torch.Tensor:
    """The columns of speech (valid frames; one per segment for functionals) in each segment's
    context, by="speaker" or "utterance" as normalise_contexts groups them: what a routed pair
    of models decides by (sercli.context.routes_to_films)."""
    groups = _context_groups(data, utterances, by)
    totals = torch.zeros(int(groups.max()) + 1 if len(groups) else 0, dtype=torch.float64)
    totals.index_add_(0, groups, data.n_frames.double())
    return totals[groups]


def split_sets(data: SegmentSet, speakers: np.ndarray, split: Split,
               copies: np.ndarray | None = None) -> tuple[SegmentSet, SegmentSet, SegmentSet]:
    """The training, validation and test segments of a split; `speakers` is each utterance's.
    copies: which utterances are training copies (Utterance.perturbed), which train
    when their speaker does and are left out of validation and test."""
    assert not (split.valid & split.test), "a speaker in validation and test"
    role = np.select([np.isin(speakers, sorted(split.test)), np.isin(speakers, sorted(split.valid))], [2, 1], 0)
    if copies is not None:
        role[copies & (role > 0)] = 3
    role = torch.from_numpy(role)[data.utterance]
    return data.subset(role == 0), data.subset(role == 1), data.subset(role == 2)
