"""Training and evaluation: cached spectrograms, class-weighted training, early stopping, metrics.

Never imported by the inference path.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .audio import AudioError, load_audio
from .corpora import CorpusError, Utterance
from .features import FeatureConfig, log_spectrograms
from .model import LABELS, EmotionNet, ModelConfig
from .segment import SegmentationConfig, SpeechProbabilities, segment_audio, split_evenly
from .weights import atomic_torch_save, bf16_supported


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the paper gives none beyond class weighting, these are ours."""

    epochs: int = 30
    patience: int = 8  # epochs without a better validation accuracy before stopping
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    class_weights: bool = True  # loss weighted in inverse proportion to class size (paper)
    oversample: bool = False  # draw batches with equal class shares instead
    time_mask: int = 30  # frames, SpecAugment-style masks during training
    freq_mask: int = 40  # bins
    seed: int = 0


@dataclass
class SegmentSet:
    """Spectrograms of all segments of a list of utterances, with the utterance each came from."""

    spectrograms: torch.Tensor  # (N, F, T) float16
    n_frames: torch.Tensor  # (N,)
    utterance: torch.Tensor  # (N,) index into the utterance list
    labels: torch.Tensor  # (N,) class index

    def subset(self, mask: torch.Tensor) -> "SegmentSet":
        return SegmentSet(self.spectrograms[mask], self.n_frames[mask], self.utterance[mask], self.labels[mask])


def utterance_segments(samples: np.ndarray, vad: SpeechProbabilities, max_s: float = 3.0) -> list[np.ndarray]:
    """The paper's sub-sentence split, applied to the speech the VAD finds (as at inference);
    an utterance where it finds none is split whole."""
    segments = [s.samples for s in segment_audio(samples, SegmentationConfig(max_segment_s=max_s), vad)]
    if segments:
        return segments
    return [samples[a:b] for a, b in split_evenly(0, len(samples), int(max_s * 16000))]


def build_segments(utterances: list[Utterance], features: FeatureConfig, cache_dir: Path | None,
                   log: Callable[[str], None] = print) -> SegmentSet:
    """Decode, segment and featurise every utterance once; cached on disk by content key."""
    key = hashlib.sha256(json.dumps([asdict(features), [(u.path, u.label) for u in utterances]]).encode())
    cache = cache_dir / f"segments-{key.hexdigest()[:16]}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        return SegmentSet(**data)
    vad = SpeechProbabilities()
    spectrograms, n_frames, owner, labels = [], [], [], []
    pending: list[np.ndarray] = []
    started = time.monotonic()

    def flush() -> None:
        if pending:
            spectrograms.append(log_spectrograms(pending, features).half())
            n_frames.extend(features.frames_for(len(p)) for p in pending)
            pending.clear()

    for i, utterance in enumerate(utterances):
        try:
            audio = load_audio(utterance.path)
        except AudioError as exc:
            raise CorpusError(f"{utterance.path}: {exc}") from exc
        for samples in utterance_segments(audio, vad):
            pending.append(samples)
            owner.append(i)
            labels.append(LABELS.index(utterance.label))
        if len(pending) >= 64:
            flush()
        if (i + 1) % 500 == 0:
            log(f"features: {i + 1}/{len(utterances)} utterances, {time.monotonic() - started:.0f} s")
    flush()
    result = SegmentSet(torch.cat(spectrograms), torch.tensor(n_frames), torch.tensor(owner), torch.tensor(labels))
    if cache is not None:
        atomic_torch_save(asdict(result), cache)
    return result


def _augment(x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """One time mask and one frequency mask per spectrogram (zero = the floor)."""
    batch, bins, frames = x.shape
    x = x.clone()
    for i in range(batch):
        if config.time_mask:
            width = int(torch.randint(0, config.time_mask + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, frames - width), (1,), generator=generator))
            x[i, :, start : start + width] = 0
        if config.freq_mask:
            width = int(torch.randint(0, config.freq_mask + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, bins - width), (1,), generator=generator))
            x[i, start : start + width, :] = 0
    return x


@torch.inference_mode()
def predict_segments(net: EmotionNet, data: SegmentSet, device: torch.device, bf16: bool,
                     batch_size: int = 128) -> torch.Tensor:
    """Posteriors (N, classes) of every segment."""
    net.eval()
    out = []
    for first in range(0, len(data.labels), batch_size):
        x = data.spectrograms[first : first + batch_size].to(device).float()
        n = data.n_frames[first : first + batch_size]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(torch.softmax(net(x, n).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(LABELS))


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


def train_model(model_config: ModelConfig, train: SegmentSet, valid: SegmentSet, config: TrainConfig,
                device: torch.device, state_path: Path | None = None,
                log: Callable[[str], None] = print) -> tuple[EmotionNet, dict]:
    """Train with early stopping on validation utterance accuracy (WA). Resumes from state_path."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = EmotionNet(model_config).to(device)
    bf16 = bf16_supported(device)
    if device.type == "cpu" and bf16:
        net = net.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    counts = torch.bincount(train.labels, minlength=len(LABELS)).float()
    weights = (counts.sum() / (len(LABELS) * counts.clamp(min=1))) if config.class_weights else torch.ones(len(LABELS))
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(device))
    history: list[dict] = []
    best = {"wa": -1.0, "epoch": -1, "state": None}
    start_epoch = 0
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        log(f"resuming at epoch {start_epoch + 1} (best WA {best['wa']:.3f} at epoch {best['epoch'] + 1})")
    n = len(train.labels)
    for epoch in range(start_epoch, config.epochs):
        if epoch - best["epoch"] > config.patience and best["epoch"] >= 0:
            break
        net.train()
        started = time.monotonic()
        if config.oversample:
            per_sample = (1.0 / counts.clamp(min=1))[train.labels]
            order = torch.multinomial(per_sample, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        total = 0.0
        steps = math.ceil(n / config.batch_size)
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = _augment(train.spectrograms[index].float(), config, generator).to(device)
            y = train.labels[index].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x, train.n_frames[index])
            loss = loss_fn(logits.float(), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        scores = evaluate(predict_segments(net, valid, device, bf16), valid)
        wa, ua = scores["utterance"]["wa"], scores["utterance"]["ua"]
        history.append({"epoch": epoch + 1, "loss": total / steps, "valid_wa": wa, "valid_ua": ua,
                        "seconds": time.monotonic() - started})
        if wa > best["wa"]:
            best = {"wa": wa, "epoch": epoch, "state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}}
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / steps:.3f}, valid WA {wa:.3f} UA {ua:.3f} "
            f"({time.monotonic() - started:.0f} s){' *' if best['epoch'] == epoch else ''}")
        if state_path is not None:
            atomic_torch_save({"net": net.state_dict(), "optimiser": optimiser.state_dict(),
                               "generator": generator.get_state(), "history": history, "best": best,
                               "epoch": epoch}, state_path)
    net.load_state_dict(best["state"])
    net.to(memory_format=torch.contiguous_format)
    return net, {"history": history, "best_epoch": best["epoch"] + 1, "best_valid_wa": best["wa"], "bf16": bf16}
