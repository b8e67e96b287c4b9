"""Training and evaluation: cached spectrograms, class-weighted training, early stopping, metrics.

Never imported by the inference path.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .audio import SAMPLE_RATE, AudioError, load_audio
from .corpora import CorpusError, Utterance
from .context import ContextStats, normalise_segments
from .features import FeatureConfig, featurise, pitch_tracker
from .model import LABELS, EmotionNet, ModelConfig
from .segment import PitchTracker, Segment, SegmentationConfig, Segmenter, SpeechProbabilities, region_segments
from .weights import atomic_torch_save, bf16_supported


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the paper gives none beyond class weighting, these are ours."""

    epochs: int = 16  # also the length of the cosine learning-rate schedule
    select_from: int = 4  # the first epoch whose model may be selected (earlier ones are underfit)
    patience: int = 5  # epochs without a better validation accuracy before stopping
    batch_size: int = 32
    lr: float = 1e-3  # peak, after a linear warm-up
    warmup_epochs: float = 1.0
    schedule: str = "constant"  # after the warm-up: "constant" or "cosine" (decay to zero at the last epoch)
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    # Weight averaging; the average is what is validated and kept. The network's predictions
    # on unseen speakers swing from epoch to epoch, so a single epoch's weights are a lottery.
    swa_from: int = 4  # uniform average of the end-of-epoch weights from this epoch on; 0: off
    ema: float = 0.0  # or: exponential average per step with this decay (e.g. 0.99); 0: off
    class_weights: bool = True  # loss weighted in inverse proportion to class size (paper)
    oversample: bool = False  # draw batches with equal class shares instead
    time_mask: int = 30  # frames, SpecAugment-style masks during training
    freq_mask: int = 40  # bins
    freq_warp: float = 0.1  # random frequency-axis warp of up to +-10% (vocal tract length)
    time_stretch: float = 0.15  # random tempo change of up to +-15%
    mixup: float = 0.0  # Beta(a, a) mixing of pairs of spectrograms and their labels; 0: off
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, not {self.schedule!r}")
        if self.swa_from and self.ema:
            raise ValueError("choose one weight average: swa_from or ema")


def override(config, settings: dict[str, str]):
    """A copy of a frozen config dataclass with `settings` (field name -> text) applied, each
    value read as the field's type; names the config lacks are left for another config.
    Raises ValueError for a value of the wrong type."""
    chosen = {}
    for name in settings.keys() & {f.name for f in fields(config)}:
        text, current = settings[name], getattr(config, name)
        if isinstance(current, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name} takes true or false, not {text!r}")
            chosen[name] = text.lower() in ("1", "true", "yes")
        else:
            try:
                chosen[name] = type(current)(text)
            except ValueError:
                raise ValueError(f"{name} takes a {type(current).__name__}, not {text!r}") from None
    return replace(config, **chosen)


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


Corruption = Callable[[int, np.ndarray], np.ndarray]  # (utterance index, clean samples) -> heard samples
Clean = dict[str, tuple[np.ndarray, list[tuple[int, int]]]]  # utterance path -> (decoded samples, speech regions)


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
        known = clean.get(utterance.path) if clean is not None else None
        if known is not None:
            audio, regions = known
        else:
            try:
                audio = load_audio(utterance.path)
            except AudioError as exc:
                raise CorpusError(f"{utterance.path}: {exc}") from exc
            vad = vad or SpeechProbabilities()
            regions = speech_regions(audio, vad)
            if keep_clean:
                decoded[utterance.path] = (audio, regions)
        heard = corrupt(i, audio) if corrupt is not None else audio
        for segment in utterance_segments(heard, regions, pitch=pitch):
            pending.append(segment)
            owner.append(i)
            labels.append(LABELS.index(utterance.label))
        if len(pending) >= 64:
            flush()
    flush()
    return spectrograms, n_frames, owner, labels, decoded


def _worker_start() -> None:
    torch.set_num_threads(1)  # the pool's processes share the cores


_pool: tuple[int, object] | None = None  # (workers, ProcessPoolExecutor), kept for the next call


def _executor(workers: int):
    """A pool of `workers` processes, started once and reused: scoring many conditions calls
    build_segments hundreds of times, and each new process would import torch again."""
    global _pool
    if _pool is None or _pool[0] != workers:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _close_pool()
        _pool = (workers, ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_worker_start))
        atexit.register(_close_pool)  # before interpreter teardown, which would leave it half-closed
    return _pool[1]


def _close_pool() -> None:
    global _pool
    if _pool is not None:
        _pool[1].shutdown()
        _pool = None


FEATURISATION = "regions-pitch-per-region"  # in the cache key: segments cut and pitch tracked as in analysis


def build_segments(utterances: list[Utterance], features: FeatureConfig, cache_dir: Path | None,
                   log: Callable[[str], None] = print, corrupt: Corruption | None = None,
                   corrupt_key: str = "", workers: int = 1, clean: Clean | None = None) -> SegmentSet:
    """Decode, segment and featurise every utterance once; cached on disk by content key.

    corrupt: applied to each decoded utterance before featurising (noise for robustness tests);
    corrupt_key must then describe it, since it is part of the cache key. It must pickle when
    workers > 1.
    workers: featurise in this many processes, each taking a contiguous share of the utterances;
    the result is the same as with one.
    clean: a dict the caller keeps between calls: each utterance's decoded samples and segment
    regions are added to it and reused, so scoring several conditions or feature settings decodes
    and runs the VAD once per utterance (memory: the whole corpus's samples)."""
    # The spectrograms themselves: context normalisation comes after (normalise_contexts).
    spectrogram = {k: v for k, v in asdict(features).items() if not k.startswith("context_")}
    # FEATURISATION names the cutting and pitch tracking, so that caches of an older way are not reused.
    described = [spectrogram, [(u.path, u.label) for u in utterances], FEATURISATION] + ([corrupt_key] if corrupt else [])
    key = hashlib.sha256(json.dumps(described).encode())
    cache = cache_dir / f"segments-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SegmentSet(**data)
    started = time.monotonic()
    keep = clean is not None
    workers = max(1, min(workers, len(utterances) // 4))  # at least 4 utterances a process
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
        pool = _executor(workers)
        futures = [pool.submit(_featurise, utterances, first, last, features, corrupt,
                               {u.path: clean[u.path] for u in utterances[first:last] if u.path in clean}
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
                       prior: tuple[np.ndarray, np.ndarray, float] | None = None) -> SegmentSet:
    """Each segment standardised per frequency bin over its context's speech frames: its
    speaker's (by="speaker", as in training) or its own utterance's (by="utterance", as when
    short files are analysed one by one). prior: see ContextStats."""
    if by not in ("speaker", "utterance"):
        raise ValueError(f"context must be speaker or utterance, not {by!r}")
    keys = [u.speaker if by == "speaker" else i for i, u in enumerate(utterances)]
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    groups = torch.tensor([index[key] for key in keys])[data.utterance]
    out = torch.zeros_like(data.spectrograms)
    for group in torch.unique(groups):
        members = torch.nonzero(groups == group).squeeze(1)
        out[members] = normalise_segments(data.spectrograms[members], data.n_frames[members], prior).to(out.dtype)
    return SegmentSet(out, data.n_frames, data.utterance, data.labels)


def _warp(x: torch.Tensor, n_frames: torch.Tensor, config: TrainConfig,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tempo change and frequency-axis warp per spectrogram, by bilinear resampling.

    The frequency warp is piecewise linear (as in VTLP): bins below a knee move by the factor,
    those above are squeezed so that 4 kHz stays at 4 kHz and no empty band appears.
    """
    batch, bins, frames = x.shape
    rate = 1 + (2 * torch.rand(batch, generator=generator) - 1) * config.time_stretch
    alpha = 1 + (2 * torch.rand(batch, generator=generator) - 1) * config.freq_warp
    n = n_frames.float()
    new_n = (n * rate).round().clamp(1, frames)
    t = torch.arange(frames, dtype=torch.float32)
    src_t = torch.where(t < new_n[:, None], t * (n / new_n)[:, None], torch.full((), 2.0 * frames))  # (B, T)
    top = float(bins - 1)
    f = torch.arange(bins, dtype=torch.float32)
    knee = (0.8 * top * torch.clamp(1 / alpha, max=1.0))[:, None]  # (B, 1)
    src_f = torch.where(f <= knee, f * alpha[:, None], top - (top - knee * alpha[:, None]) * (top - f) / (top - knee))
    # The random draws stay on the CPU generator (the same augmentation on every device); the
    # grid is built where the spectrograms are.
    src_t, src_f = src_t.to(x.device), src_f.to(x.device)
    grid = torch.stack([(src_t / (frames - 1) * 2 - 1)[:, None, :].expand(batch, bins, frames),
                        (src_f / top * 2 - 1)[:, :, None].expand(batch, bins, frames)], dim=-1)
    out = nn.functional.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0], new_n.long()


def _augment(x: torch.Tensor, n_frames: torch.Tensor, config: TrainConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp, then one time mask and one frequency mask per spectrogram (zero = the floor)."""
    if config.freq_warp or config.time_stretch:
        x, n_frames = _warp(x, n_frames, config, generator)
    batch, bins, frames = x.shape

    def band(size: int, max_width: int, extent: torch.Tensor | int) -> torch.Tensor:
        """(batch, size) mask of one band per row, 0..max_width wide, starting inside [0, extent - width)."""
        width = torch.floor(torch.rand(batch, generator=generator) * (max_width + 1))
        start = torch.floor(torch.rand(batch, generator=generator)
                            * torch.clamp(torch.as_tensor(extent).float() - width, min=1))
        position = torch.arange(size, dtype=torch.float32)
        return ((position >= start[:, None]) & (position < (start + width)[:, None])).to(x.device)

    if config.time_mask:  # within each spectrogram's own frames
        x = x.masked_fill(band(frames, config.time_mask, n_frames)[:, None, :], 0)
    if config.freq_mask:
        x = x.masked_fill(band(bins, config.freq_mask, bins)[:, :, None], 0)
    return x, n_frames


def _length_batches(order: torch.Tensor, n_frames: torch.Tensor, batch_size: int,
                    generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of similar length (sorted within shuffled chunks of 16 batches), in random order:
    the network cuts each batch to its longest segment, so this saves the work on padding."""
    batches: list[torch.Tensor] = []
    chunk = 16 * batch_size
    for first in range(0, len(order), chunk):
        part = order[first : first + chunk]
        part = part[torch.argsort(n_frames[part], stable=True)]
        batches.extend(part.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


@torch.inference_mode()
def predict_segments(net: EmotionNet, data: SegmentSet, device: torch.device, bf16: bool,
                     batch_size: int = 128) -> torch.Tensor:
    """Posteriors (N, classes) of every segment (computed shortest first, returned in order)."""
    net.eval()
    order = torch.argsort(data.n_frames, stable=True)
    out = torch.zeros(len(order), net.config.n_classes if hasattr(net, "config") else len(LABELS))
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        x = data.spectrograms[index].to(device).float()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out[index] = torch.softmax(net(x, data.n_frames[index]).float(), dim=-1).cpu()
    return out


def accuracies(truth: np.ndarray, predicted: np.ndarray, n_classes: int = len(LABELS)) -> dict:
    """Weighted accuracy (overall), unweighted accuracy (mean per-class recall), confusion matrix."""
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    for t, p in zip(truth, predicted):
        confusion[t, p] += 1
    present = confusion.sum(axis=1) > 0
    recalls = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    return {
        "wa": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "ua": float(recalls.mean()) if recalls.size else 0.0,
        "count": int(confusion.sum()),
        "confusion": confusion.tolist(),  # rows: truth, columns: prediction, order LABELS
    }


def evaluate(posteriors: torch.Tensor, data: SegmentSet) -> dict:
    """Segment-level and utterance-level (mean of its segments' posteriors) accuracies."""
    segment = accuracies(data.labels.numpy(), posteriors.argmax(1).numpy())
    ids, inverse = torch.unique(data.utterance, return_inverse=True)
    sums = torch.zeros(len(ids), posteriors.shape[1]).index_add_(0, inverse, posteriors)
    truth = torch.zeros(len(ids), dtype=torch.long).index_copy_(0, inverse, data.labels)
    return {"utterance": accuracies(truth.numpy(), sums.argmax(1).numpy()), "segment": segment}


def _schedule(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up, then constant or cosine decay to zero at the
    last epoch."""
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, config.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
    return factor


def _running_mean(averaged: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Uniform weight average; integer buffers (batch norm's step counter) keep the latest value.
    torch's default averaging fails on integer buffers on CUDA."""
    if not averaged.is_floating_point():
        return current
    return averaged + (current - averaged) / (count + 1)


def train_model(model_config: ModelConfig, train: SegmentSet, valid: SegmentSet, config: TrainConfig,
                device: torch.device, state_path: Path | None = None,
                log: Callable[[str], None] = print, noisy: torch.Tensor | None = None,
                noisy_share: float = 0.0) -> tuple[EmotionNet, dict]:
    """Train with early stopping on validation utterance accuracy (WA) of the weight average (of
    the network itself when there is none). Resumes from state_path, written after every epoch.
    noisy: spectrograms of a noisy copy of each training segment (same shape as
    train.spectrograms); each step takes a segment's noisy copy with probability noisy_share."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = EmotionNet(model_config).to(device)
    bf16 = bf16_supported(device)
    if device.type == "cpu" and bf16:
        net = net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        # Batches are cut to their longest segment, a multiple of 8 frames: at most 38 shapes,
        # each tuned once.
        torch.backends.cudnn.benchmark = True
    average = None
    if config.ema:
        average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    elif config.swa_from:
        average = AveragedModel(net, avg_fn=_running_mean, use_buffers=True)  # batch-norm statistics too
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(train.labels)
    steps = math.ceil(n / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(config, steps))
    classes = model_config.n_classes
    counts = torch.bincount(train.labels, minlength=classes).float()
    weights = (counts.sum() / (classes * counts.clamp(min=1))) if config.class_weights else torch.ones(classes)
    if config.oversample:
        weights = torch.ones(classes)  # the sampler balances the classes already
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=config.label_smoothing)
    # On a GPU the whole training set lives there (float16, about 1 GB for 4,000 segments), so
    # that a step moves no data and augments in place.
    source = train.spectrograms.to(device) if device.type == "cuda" else train.spectrograms
    if noisy is not None:
        if noisy.shape != train.spectrograms.shape:
            raise ValueError(f"noisy copy of shape {tuple(noisy.shape)} for {tuple(train.spectrograms.shape)}")
        noisy = noisy.to(source.device)
    history: list[dict] = []
    best = {"wa": -1.0, "epoch": -1, "state": None}
    start_epoch = 0
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        if average is not None:
            average.load_state_dict(state["average"])
        generator.set_state(state["generator"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        log(f"resuming at epoch {start_epoch + 1} (best WA {best['wa']:.3f} at epoch {best['epoch'] + 1})")
    for epoch in range(start_epoch, config.epochs):
        if best["epoch"] >= 0 and epoch - best["epoch"] > config.patience:
            log(f"stopping: no better validation accuracy in {config.patience} epochs")
            break
        net.train()
        started = time.monotonic()
        if config.oversample:
            per_sample = (1.0 / counts.clamp(min=1))[train.labels]
            order = torch.multinomial(per_sample, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        total = 0.0
        batches = _length_batches(order, train.n_frames, config.batch_size, generator)
        for index in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                          disable=None):
            rows = index.to(source.device)
            x = source[rows]
            if noisy is not None:
                heard = (torch.rand(len(index), generator=generator) < noisy_share).to(source.device)
                x = torch.where(heard[:, None, None], noisy[rows], x)
            x, n_frames = _augment(x.float(), train.n_frames[index], config, generator)
            y = train.labels[index].to(device)
            if config.mixup:
                share = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
                partner = torch.randperm(len(index), generator=generator)
                x = share * x + (1 - share) * x[partner]
                n_frames = torch.maximum(n_frames, n_frames[partner])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x.to(device), n_frames)
            loss = loss_fn(logits.float(), y)
            if config.mixup:
                loss = share * loss + (1 - share) * loss_fn(logits.float(), y[partner.to(device)])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            if config.ema:
                average.update_parameters(net)
            total += float(loss.detach())
        if config.swa_from and epoch + 1 >= config.swa_from:
            average.update_parameters(net)
        selected = average.module if average is not None and int(average.n_averaged) > 0 else net
        scores = evaluate(predict_segments(selected, valid, device, bf16), valid)
        wa, ua = scores["utterance"]["wa"], scores["utterance"]["ua"]
        seconds = time.monotonic() - started
        history.append({"epoch": epoch + 1, "loss": total / len(batches), "valid_wa": wa, "valid_ua": ua,
                        "seconds": seconds})
        if wa > best["wa"] and (epoch + 1 >= config.select_from or epoch + 1 == config.epochs):
            best = {"wa": wa, "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in selected.state_dict().items()}}
        left = (config.epochs - epoch - 1) * sum(h["seconds"] for h in history) / len(history)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / len(batches):.3f}, valid WA {wa:.3f} UA {ua:.3f} "
            f"({seconds:.0f} s, at most {left / 60:.0f} min left){' *' if best['epoch'] == epoch else ''}")
        if state_path is not None:
            atomic_torch_save({"net": net.state_dict(), "optimiser": optimiser.state_dict(),
                               "scheduler": scheduler.state_dict(),
                               "average": average.state_dict() if average is not None else None,
                               "generator": generator.get_state(), "history": history, "best": best,
                               "epoch": epoch}, state_path)
    result = EmotionNet(model_config)
    result.load_state_dict(best["state"])
    return result.to(device), {"history": history, "best_epoch": best["epoch"] + 1,
                               "best_valid_wa": best["wa"], "bf16": bf16}
