"""Context normalisation: each frequency bin of a segment standardised over the speech around it.

A context is the speech a segment is compared with: in analysis its own file within
`FeatureConfig.context_window_s` (streamed: ContextWindow), or all inputs of a run; in training
and evaluation its speaker's speech, or its own utterance's. This module owns the statistics
(ContextStats), the checkpoint's prior over them (context_prior) and the streaming window that
releases a segment once the speech around it is featurised (ContextWindow); analysis, the Ray
file task, training and evaluation all standardise through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import numpy as np
import torch

from .audio import FRAMES_PER_S
from .features import FeatureConfig

CONTEXT_PRIOR_S = 10.0  # weight of the training speech's moments in a context's, in seconds of speech
# A routed pair of models (sercli.weights.ROUTE_SEPARATOR, CLIPS|FILMS): FILMS scores a segment
# whose context holds at least this much speech, where the context's own moments outweigh the
# prior's; CLIPS scores the rest (a clip analysed alone, a short file).
ROUTE_SPEECH_S = CONTEXT_PRIOR_S


def routes_to_films(columns, features: FeatureConfig):
    """Whether a routed pair's second model scores a segment whose context holds `columns`
    columns of speech (a number or an array; see FeatureConfig.context_rate) in `features`."""
    return np.asarray(columns) >= ROUTE_SPEECH_S * features.context_rate - 1e-9


def context_prior(meta: dict, seconds: float = CONTEXT_PRIOR_S) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A checkpoint's prior for ContextStats (its training speech's moments, weighted as
    `seconds` of speech in the columns its features count: FeatureConfig.context_rate, 100
    frames a second for spectrograms), or None where it has none or seconds is 0."""
    moments = meta.get("context_prior")
    if not moments or seconds <= 0:
        return None
    rate = FeatureConfig(**meta["features"]).context_rate if "features" in meta else float(FRAMES_PER_S)
    return np.asarray(moments["mean"]), np.asarray(moments["variance"]), seconds * rate  # columns


@dataclass(frozen=True)
class Voices:
    """Voice-typed contexts (FeatureConfig.context_voices): a segment is standardised over the
    segments of its context that sound like the same type of voice (VOICES: male, female), with
    that type's prior, not over every voice of the context.

    A film's minute holds several voices, and a clip analysed alone leans on the training
    speech's moments: pooled over men and women, both are a poor stand-in for the speaker's own
    speech, which the model was trained to be standardised by. The type is a logistic regression
    on the segment's raw features (their mean over its frames), trained on the training speakers'
    segments with the corpora's gender labels; each type's prior is its training speakers'
    moments. Measured in train/RESULTS.md, "The default model: egemaps-mlp, and three steps after
    it" (shipped as egemaps-mlp-voices, for films)."""

    mean: np.ndarray  # (F,) the classifier's input standardisation: the training speech's moments
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F,) logistic regression: female where w . (x - mean) / scale + bias > 0
    bias: float
    priors: tuple  # per type, (mean (F,), variance (F,), columns): what ContextStats leans on

    def of(self, x: np.ndarray) -> np.ndarray:
        """The voice type (index into VOICES) of each row of x (N, F), a segment's mean features."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return (z @ self.weights + self.bias > 0).astype(np.int64)

    def of_segment(self, spectrogram: np.ndarray) -> int:
        """The voice type of one segment from its valid columns (F, n)."""
        return int(self.of(np.asarray(spectrogram, dtype=np.float64).mean(axis=1)[None])[0])

    def to_meta(self) -> dict:
        """The checkpoint's meta["context_voices"] (the priors without their weight, as context_prior)."""
        return {"classifier": {"mean": self.mean.tolist(), "scale": self.scale.tolist(),
                               "weights": self.weights.tolist(), "bias": float(self.bias)},
                "priors": [{"mean": np.asarray(m).tolist(), "variance": np.asarray(v).tolist()}
                           for m, v, _ in self.priors]}


def voice_context(meta: dict, seconds: float = CONTEXT_PRIOR_S) -> Voices | None:
    """A checkpoint's Voices, its priors weighted as `seconds` of speech (see context_prior), or
    None where it has none (every checkpoint not trained with FeatureConfig.context_voices)."""
    stored = meta.get("context_voices")
    if not stored:
        return None
    columns = max(seconds, 0.0) * FeatureConfig(**meta["features"]).context_rate
    classifier = stored["classifier"]
    return Voices(np.asarray(classifier["mean"]), np.asarray(classifier["scale"]), np.asarray(classifier["weights"]),
                  float(classifier["bias"]),
                  tuple((np.asarray(p["mean"]), np.asarray(p["variance"]), columns) for p in stored["priors"]))


def segment_means(spectrograms: torch.Tensor, n_frames: torch.Tensor) -> np.ndarray:
    """Each segment's mean over its valid columns, (N, F) float64, from segments (N, F, T) whose
    valid columns are the first n_frames: what Voices types a segment by."""
    valid = (torch.arange(spectrograms.shape[2])[None, :] < n_frames[:, None]).double()
    total = (spectrograms.double() * valid[:, None, :]).sum(dim=2)
    return (total / n_frames.double().clamp(min=1)[:, None]).numpy()


def fit_voices(x: np.ndarray, female: np.ndarray, prior_columns: float, l2: float = 1e-3) -> Voices:
    """Voices from training segments' mean features x (N, F) and whether each one's speaker is a
    woman (N,): a logistic regression (L2-penalised, fitted by L-BFGS on standardised inputs) and
    each type's moments, weighted as prior_columns."""
    x = np.asarray(x, dtype=np.float64)
    female = np.asarray(female, dtype=bool)
    if female.all() or not female.any():
        raise ValueError("voice-typed contexts need training speech of both female and male voices")
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    z = torch.from_numpy((x - mean) / scale)
    target = torch.from_numpy(female.astype(np.float64))
    weights = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ weights + bias, target) + l2 * weights.square().sum()
        value.backward()
        return value

    optimiser.step(loss)
    priors = tuple((x[rows].mean(axis=0), x[rows].var(axis=0), prior_columns) for rows in (~female, female))
    return Voices(mean, scale, weights.detach().numpy(), float(bias.detach()), priors)


class ContextStats:
    """Per-bin first and second moments of the speech frames of a context (a speaker, a file, or
    the stretch of a file around a segment), from which its segments are standardised.

    prior: (mean (F,), variance (F,), frames) of the training speech; it counts as that many
    frames of speech with those moments, so a context with little speech leans on the training
    population instead of on a few noisy frames. None: the context's own moments alone.
    """

    def __init__(self, n_bins: int, prior: tuple[np.ndarray, np.ndarray, float] | None = None) -> None:
        self.n_bins = n_bins
        self.prior = prior
        self.starts: list[float] = []
        # Running [frames, sum, sum of squares] per bin after each segment, row 0 before any: one
        # array grown by doubling, since thousands of small arrays alive for the whole of a long
        # file pinned the heap between the large short-lived ones and memory grew with length.
        self.cumulative = np.zeros((64, 3, n_bins))

    @property
    def frames(self) -> float:
        return float(self.cumulative[len(self.starts), 0, 0])

    def add(self, start_s: float, spectrogram: np.ndarray) -> None:
        """A segment's valid frames, (F, n), in start order."""
        n = len(self.starts)
        if n + 1 == len(self.cumulative):
            self.cumulative = np.concatenate([self.cumulative, np.zeros_like(self.cumulative)])
        x = spectrogram.astype(np.float64)
        self.cumulative[n + 1, 0] = self.cumulative[n, 0] + x.shape[1]
        self.cumulative[n + 1, 1] = self.cumulative[n, 1] + x.sum(axis=1)
        self.cumulative[n + 1, 2] = self.cumulative[n, 2] + np.square(x).sum(axis=1)
        self.starts.append(start_s)

    def forget_before(self, start_s: float) -> None:
        """Drop what only segments starting before start_s need: moments(first_s, ...) with
        first_s >= start_s stay exact; whole-context moments() and `frames` then cover only the
        segments kept. A file's sliding window uses it so that memory stays flat however long
        the file is; rows are moved within the array, which keeps its size."""
        drop = int(np.searchsorted(self.starts, start_s, "left"))
        if drop < max(64, len(self.starts) // 2):  # move rows rarely: amortised over many adds
            return
        kept = len(self.starts) - drop
        self.cumulative[: kept + 1] = self.cumulative[drop : drop + kept + 1].copy()
        del self.starts[:drop]

    def moments(self, first_s: float = -np.inf, last_s: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) per bin over the segments starting within [first_s, last_s]."""
        lo, hi = self._rows(first_s, last_s)
        return moments_with_prior(*(self.cumulative[hi] - self.cumulative[lo]), self.prior)

    def columns(self, first_s: float = -np.inf, last_s: float = np.inf) -> float:
        """The columns of speech of the segments starting within [first_s, last_s], the prior's not counted."""
        lo, hi = self._rows(first_s, last_s)
        return float(self.cumulative[hi, 0, 0] - self.cumulative[lo, 0, 0])

    def _rows(self, first_s: float, last_s: float) -> tuple[int, int]:
        return int(np.searchsorted(self.starts, first_s, "left")), int(np.searchsorted(self.starts, last_s, "right"))


def moments_with_prior(count, total: np.ndarray, squares: np.ndarray,
                       prior: tuple[np.ndarray, np.ndarray, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per bin of a context's speech frames, from their count, per-bin sum and sum of
    squares, with the prior's frames added (see ContextStats); std at least 1e-3."""
    if prior is not None:
        mean, variance, frames = prior
        count, total, squares = count + frames, total + frames * mean, squares + frames * (variance + mean ** 2)
    count = np.maximum(count, 1.0)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean, np.maximum(std, 1e-3)


def standardise_frames(x: torch.Tensor, n_frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                       in_place: bool = False) -> torch.Tensor:
    """(B, F, T) spectrograms minus mean, over std (each (B, F) or (F,)), zero past each end.
    in_place: overwrite x (float) rather than allocate a result."""
    if mean.dim() == 1:
        mean, std = mean[None], std[None]
    valid = torch.arange(x.shape[2], device=x.device)[None, :] < n_frames.to(x.device)[:, None]
    if not in_place:
        x = x.clone()
    return x.sub_(mean[:, :, None]).div_(std[:, :, None]).mul_(valid[:, None, :])


class ContextWindow:
    """The segments of one context, held featurised until the speech around them is featurised
    too, then released with the per-bin moments that standardise them.

    half_window_s: a segment is compared with the segments starting within this many seconds of
    its own start (analysis of a file: half of context_window_s); inf: with the whole context (a
    speaker, an utterance, or every input of a run), released when the context has ended.
    Segments are added in start order; statistics no window reaches any more are dropped, so a
    long file's memory stays flat. voices: keep one context per voice type (Voices), each
    segment standardised over its own type's, with that type's prior (`prior` is then unused)."""

    def __init__(self, n_bins: int, prior: tuple[np.ndarray, np.ndarray, float] | None = None,
                 half_window_s: float = np.inf, voices: Voices | None = None) -> None:
        self.voices = voices
        self.stats_by_voice = ([ContextStats(n_bins, p) for p in voices.priors] if voices is not None
                               else [ContextStats(n_bins, prior)])
        self.half_window_s = half_window_s
        self.held: list[tuple[Hashable, float, torch.Tensor, int]] = []  # (key, start s, valid frames (F, n), type)

    def add(self, key: Hashable, start_s: float, spectrogram: torch.Tensor) -> None:
        """A featurised segment: its valid frames (F, n), which are held (not copied) until released."""
        windowed = not np.isinf(self.half_window_s)
        x = spectrogram.float().cpu().numpy()
        voice = self.voices.of_segment(x) if self.voices is not None else 0
        self.stats_by_voice[voice].add(start_s if windowed else 0.0, x)
        self.held.append((key, start_s, spectrogram, voice))

    def release(self, featurised_to_s: float = -np.inf, ended: bool = False, with_columns: bool = False
                ) -> list[tuple]:
        """(key, valid frames, mean (F,), std (F,)) of the held segments whose window is complete:
        every segment starting up to half a window after theirs is featurised (featurised_to_s:
        the start of the latest featurised segment), or the context has ended. In start order.
        with_columns: each tuple ends with the columns of speech in the segment's window, every
        voice type's (what routes_to_films decides by)."""
        ready, kept = [], []
        half = self.half_window_s
        for key, start, x, voice in self.held:
            if ended or start + half < featurised_to_s:
                stats = self.stats_by_voice[voice]
                span = (start - half, start + half) if not np.isinf(half) else (-np.inf, np.inf)
                mean, std = stats.moments(*span)
                if with_columns:
                    ready.append((key, x, mean, std, sum(s.columns(*span) for s in self.stats_by_voice)))
                else:
                    ready.append((key, x, mean, std))
            else:
                kept.append((key, start, x, voice))
        self.held = kept
        if kept and not np.isinf(half):  # held in start order: no window reaches further back
            for stats in self.stats_by_voice:
                stats.forget_before(kept[0][1] - half)
        return ready

    def discard(self) -> list[torch.Tensor]:
        """Drop the held segments (their file failed); returns their spectrograms."""
        dropped = [x for _, _, x, _ in self.held]
        self.held = []
        return dropped


def normalise_segments(spectrograms: torch.Tensor, n_frames: torch.Tensor,
                       prior: tuple[np.ndarray, np.ndarray, float] | None, starts: list[float] | None = None,
                       half_window_s: float = np.inf, voices: Voices | None = None) -> torch.Tensor:
    """Segments (B, F, T) of one whole context, standardised over its speech through a
    ContextWindow: each over the segments starting within half_window_s of its own start
    (`starts`, seconds, in order), or all over all of them (no starts). prior: see ContextStats;
    voices: each over its own voice type's segments (see Voices)."""
    window = ContextWindow(spectrograms.shape[1], prior, half_window_s, voices)
    for k, (x, n) in enumerate(zip(spectrograms, n_frames)):
        window.add(k, starts[k] if starts is not None else 0.0, x[:, : int(n)])
    released = window.release(ended=True)
    mean = torch.from_numpy(np.stack([m for _, _, m, _ in released])).float().to(spectrograms.device)
    std = torch.from_numpy(np.stack([s for _, _, _, s in released])).float().to(spectrograms.device)
    return standardise_frames(spectrograms.float(), n_frames, mean, std)


def group_sums(spectrograms: torch.Tensor, n_frames: torch.Tensor, groups: torch.Tensor, n_groups: int,
               chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each group's speech frames as (count (G,), per-bin sum (G, F), per-bin sum of squares
    (G, F)), float64, from segments (N, F, T) whose valid frames are the first n_frames and whose
    group is `groups` (N,): what ContextStats holds, for many contexts at once."""
    bins, frames = spectrograms.shape[1], spectrograms.shape[2]
    count = torch.zeros(n_groups, dtype=torch.float64)
    total = torch.zeros(n_groups, bins, dtype=torch.float64)
    squares = torch.zeros(n_groups, bins, dtype=torch.float64)
    for first in range(0, len(n_frames), chunk):
        x = spectrograms[first : first + chunk].double()
        n, g = n_frames[first : first + chunk], groups[first : first + chunk]
        x = x * (torch.arange(frames)[None, :] < n[:, None])[:, None, :]
        count.index_add_(0, g, n.double())
        total.index_add_(0, g, x.sum(dim=2))
        squares.index_add_(0, g, x.square().sum(dim=2))
    return count, total, squares

