"""The training loop: class-weighted, augmented, length-batched steps with weight averaging and
early stopping on validation accuracy, resumable after every epoch. The data comes from
sercli.dataset, the scores from sercli.metrics. Never imported by the inference path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from .audio import FRAMES_PER_S
from .context import Voices, group_sums, moments_with_prior, segment_means
from .dataset import SegmentSet
from .metrics import evaluate, group_mean_ua
from .model import FUNCTIONALS, EmotionNet, ModelConfig, build_net, posteriors
from .weights import atomic_torch_save, bf16_supported


BALANCES = ("class", "speaker", "corpus")  # TrainConfig.balance


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
    # What weighs the same: "class", each class (the paper); "speaker", each speaker's each
    # class; or "corpus", each corpus's each class; in the loss (or the oversampling) and in
    # choosing the epoch to keep, which is then the one whose mean UA over the validation
    # speakers (or corpora) is best. Our corpora give one speaker 360 utterances and another 28.
    balance: str = "class"
    # How far towards that balance, for "speaker" and "corpus": a segment weighs
    # 1 / |its class|^(1 - s) / |its cell|^s, so 1 balances the cells, 0 only the classes
    # (selection stays on the groups' mean UA).
    balance_strength: float = 1.0
    time_mask: int = 30  # frames, SpecAugment-style masks during training
    freq_mask: int = 40  # bins
    freq_warp: float = 0.1  # random frequency-axis warp of up to +-10% (vocal tract length)
    time_stretch: float = 0.15  # random tempo change of up to +-15%
    mixup: float = 0.0  # Beta(a, a) mixing of pairs of spectrograms and their labels; 0: off
    # Context mix: the share of steps' segments standardised, instead of over their speaker's
    # speech, over their own utterance's with the prior (as a clip analysed alone), or over a
    # scene's: their speaker's and another training speaker's speech mixed (as in a film, where
    # the context window holds several voices). Needs speaker-context features; 0: off.
    context_utterance: float = 0.0
    context_pair: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, not {self.schedule!r}")
        if self.swa_from and self.ema:
            raise ValueError("choose one weight average: swa_from or ema")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, not {self.balance!r}")
        if not 0 <= self.balance_strength <= 1:
            raise ValueError(f"balance_strength must be in [0, 1], not {self.balance_strength:g}")
        if min(self.context_utterance, self.context_pair) < 0 or self.context_utterance + self.context_pair > 1:
            raise ValueError("context_utterance and context_pair are shares: each at least 0, together at most 1")


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


SCENE_S = 30.0  # a scene context's speech, before the prior is added to it
SCENE_OWN_SHARE = (0.3, 0.7)  # the segment's own speaker's share of a scene context: uniform in this range

Sums = tuple[np.ndarray, np.ndarray, np.ndarray]  # sercli.context.group_sums: count, sum, sum of squares


@dataclass
class ContextMix:
    """The other contexts a training segment can be standardised over (TrainConfig.context_utterance
    and context_pair): the raw per-bin moments of each training speaker and utterance, clean and,
    with noise augmentation, noisy, and the prior that analysis adds. Segments arrive standardised
    over their speaker's speech; one shown another context is moved to it exactly, since both are
    per-bin affine maps of the same log spectrogram: (x - m)/s = (x_speaker * s_speaker +
    m_speaker - m)/s."""

    speaker: torch.Tensor  # (N,) each training segment's speaker, 0..S-1
    utterance: torch.Tensor  # (N,) each training segment's utterance, 0..U-1
    speakers: Sums  # (S,), (S, F), (S, F)
    utterances: Sums  # (U,), (U, F), (U, F)
    noisy_speakers: Sums | None
    noisy_utterances: Sums | None
    prior: tuple[np.ndarray, np.ndarray, float]  # the checkpoint's context prior: mean, variance, frames
    scene_columns: float  # a scene's SCENE_S of speech in the features' columns (FeatureConfig.context_rate)
    voices: Voices | None = None  # voice-typed contexts: an utterance's context is its segments of one type
    voice: torch.Tensor | None = None  # (N,) with voices, each training segment's type (index into its priors)

    @classmethod
    def build(cls, raw: SegmentSet, speakers: torch.Tensor, prior: tuple[np.ndarray, np.ndarray, float],
              noisy_raw: torch.Tensor | None = None, rate: float = FRAMES_PER_S,
              voices: Voices | None = None) -> "ContextMix":
        """raw: the training segments before context normalisation; speakers: each utterance's
        speaker id, indexed like raw.utterance; noisy_raw: their noisy copy, before normalisation;
        rate: the features' context_rate (columns per second of speech); voices: type each
        segment, as analysis does, and standardise it as a clip over its utterance's segments
        of its own type, with that type's prior."""
        _, utterance = torch.unique(raw.utterance, return_inverse=True)
        voice = None
        if voices is not None:
            voice = torch.from_numpy(voices.of(segment_means(raw.spectrograms, raw.n_frames)))
            _, utterance = torch.unique(utterance * len(voices.priors) + voice, return_inverse=True)
        _, speaker = torch.unique(speakers[raw.utterance], return_inverse=True)
        n_speakers, n_utterances = int(speaker.max()) + 1, int(utterance.max()) + 1

        def sums(x: torch.Tensor) -> tuple[Sums, Sums]:
            return tuple(tuple(part.numpy() for part in group_sums(x, raw.n_frames, groups, n))
                         for groups, n in ((speaker, n_speakers), (utterance, n_utterances)))

        clean = sums(raw.spectrograms)
        noisy = sums(noisy_raw) if noisy_raw is not None else (None, None)
        return cls(speaker, utterance, clean[0], clean[1], noisy[0], noisy[1], prior, SCENE_S * rate, voices, voice)

    def apply(self, x: torch.Tensor, index: torch.Tensor, n_frames: torch.Tensor, heard: torch.Tensor | None,
              config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """The batch x (B, F, T; segments `index`, standardised over their speaker's clean or,
        where `heard`, noisy speech) with a context_utterance share moved to their utterance's
        context and a context_pair share to a scene's; the rest as it is."""
        batch = len(index)
        draw = torch.rand(batch, generator=generator)
        n_speakers = len(self.speakers[0])
        partner = torch.randint(0, max(n_speakers - 1, 1), (batch,), generator=generator)
        low, high = SCENE_OWN_SHARE
        own_share = (low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64))[:, None].numpy()
        to_utterance = (draw < config.context_utterance).numpy()[:, None]
        to_scene = ((draw >= config.context_utterance)
                    & (draw < config.context_utterance + config.context_pair)).numpy()[:, None]
        if not (to_utterance | to_scene).any():
            return x
        speaker, utterance = self.speaker[index], self.utterance[index]
        partner = (partner + (partner >= speaker).long() if n_speakers > 1 else speaker).numpy()
        noisy_rows = heard.numpy() if heard is not None else None

        def chosen(clean: Sums, noisy: Sums | None, rows: np.ndarray) -> Sums:
            if noisy_rows is None or noisy is None:
                return tuple(part[rows] for part in clean)
            return tuple(np.where(noisy_rows.reshape(-1, *[1] * (c.ndim - 1)), n[rows], c[rows])
                         for c, n in zip(clean, noisy))

        def moments(count: np.ndarray, total: np.ndarray, squares: np.ndarray, prior) -> tuple[np.ndarray, np.ndarray]:
            return moments_with_prior(count[:, None], total, squares, prior)  # count per context, not per bin

        own = chosen(self.speakers, self.noisy_speakers, speaker.numpy())
        mean_speaker, std_speaker = moments(*own, None)
        clip_prior = self.prior
        if self.voices is not None:  # each segment's own type's prior
            types = self.voice[index].numpy()
            means, variances, columns = zip(*self.voices.priors)
            clip_prior = np.stack(means)[types], np.stack(variances)[types], columns[0]
        mean_utterance, std_utterance = moments(*chosen(self.utterances, self.noisy_utterances, utterance.numpy()),
                                                clip_prior)
        other = chosen(self.speakers, self.noisy_speakers, partner)
        per_frame = [(total / np.maximum(count, 1)[:, None], squares / np.maximum(count, 1)[:, None])
                     for count, total, squares in (own, other)]
        mixed = [(own_share * a + (1 - own_share) * b) * self.scene_columns for a, b in zip(*per_frame)]
        mean_scene, std_scene = moments(np.full(batch, self.scene_columns), *mixed, self.prior)
        mean = np.where(to_utterance, mean_utterance, np.where(to_scene, mean_scene, mean_speaker))
        std = np.where(to_utterance, std_utterance, np.where(to_scene, std_scene, std_speaker))
        scale = torch.from_numpy(std_speaker / std).float().to(x.device)
        shift = torch.from_numpy((mean_speaker - mean) / std).float().to(x.device)
        valid = (torch.arange(x.shape[2])[None, :] < n_frames[:, None]).to(x.device)
        return x * scale[:, :, None] + shift[:, :, None] * valid[:, None, :]


def _length_batches(order: torch.Tensor, n_frames: torch.Tensor, batch_size: int,
                    generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of similar length (sorted within shuffled chunks of 16 batches), in random order:
    the network cuts each batch to its longest segment, so this saves the work on padding.
    A lone segment left over at the end joins the batch before it: batch norm cannot train on a
    batch of one."""
    batches: list[torch.Tensor] = []
    chunk = 16 * batch_size
    for first in range(0, len(order), chunk):
        part = order[first : first + chunk]
        part = part[torch.argsort(n_frames[part], stable=True)]
        batches.extend(part.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # only the last batch can fall short
        batches[-2:] = [torch.cat(batches[-2:])]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


@torch.inference_mode()
def predict_segments(net: EmotionNet, data: SegmentSet, device: torch.device, bf16: bool,
                     batch_size: int = 128) -> torch.Tensor:
    """Posteriors (N, classes) of every segment (computed shortest first, returned in order)."""
    net.eval()
    order = torch.argsort(data.n_frames, stable=True)
    out = torch.zeros(len(order), net.n_classes)
    for first in range(0, len(order), batch_size):
        index = order[first : first + batch_size]
        out[index] = posteriors(net, data.spectrograms[index].to(device).float(), data.n_frames[index], bf16)
    return out


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
                noisy_share: float = 0.0, groups: torch.Tensor | None = None,
                mix: ContextMix | None = None) -> tuple[EmotionNet, dict]:
    """Train with early stopping on validation utterance accuracy (WA) of the weight average (of
    the network itself when there is none). Resumes from state_path, written after every epoch.
    noisy: spectrograms of a noisy copy of each training segment (same shape as
    train.spectrograms); each step takes a segment's noisy copy with probability noisy_share.
    groups: each utterance's speaker (or corpus) as an integer id, indexed like
    SegmentSet.utterance, which config.balance = "speaker" ("corpus") needs: then selection is on
    the mean UA over the validation speakers (corpora).
    mix: the training segments' other contexts, which config.context_utterance and context_pair
    need (ContextMix; train's segments then are standardised over their speaker's speech).
    On a GPU, `sercli train` also sets torch.backends.cudnn.benchmark (batches come in at most 38
    shapes, each tuned once); a Python caller may too, for speed: the results do not depend on it."""
    by_group = config.balance != "class"
    if by_group and groups is None:
        raise ValueError(f"balance={config.balance!r} needs each utterance's {config.balance}")
    if (config.context_utterance or config.context_pair) and mix is None:
        raise ValueError("context_utterance and context_pair need the training speech's contexts (mix)")
    torch.manual_seed(config.seed)
    run = _Training(model_config, train, config, device, noisy, noisy_share,
                    groups[train.utterance] if by_group else None,
                    mix if config.context_utterance or config.context_pair else None)
    history: list[dict] = []
    best = {"wa": -1.0, "epoch": -1, "state": None}
    start_epoch = 0
    if state_path is not None and state_path.is_file():
        history, best, start_epoch = run.resume(state_path)
        log(f"resuming at epoch {start_epoch + 1} (best WA {best['wa']:.3f} at epoch {best['epoch'] + 1})")
    for epoch in range(start_epoch, config.epochs):
        if best["epoch"] >= 0 and epoch - best["epoch"] > config.patience:
            log(f"stopping: no better validation accuracy in {config.patience} epochs")
            break
        started = time.monotonic()
        loss = run.epoch(epoch)
        selected = run.selected()
        predicted = predict_segments(selected, valid, device, run.bf16)
        scores = evaluate(predicted, valid)
        wa, ua = scores["utterance"]["wa"], scores["utterance"]["ua"]
        seconds = time.monotonic() - started
        history.append({"epoch": epoch + 1, "loss": loss, "valid_wa": wa, "valid_ua": ua, "seconds": seconds})
        score = wa  # what selects the epoch kept ("wa" in the saved state, whatever it is)
        if by_group:
            score = history[-1]["valid_group_ua"] = group_mean_ua(predicted, valid, groups[valid.utterance])
        if score > best["wa"] and (epoch + 1 >= config.select_from or epoch + 1 == config.epochs):
            best = {"wa": score, "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in selected.state_dict().items()}}
        left = (config.epochs - epoch - 1) * sum(h["seconds"] for h in history) / len(history)
        log(f"epoch {epoch + 1}/{config.epochs}: loss {loss:.3f}, valid WA {wa:.3f} UA {ua:.3f}"
            + (f" {config.balance}-mean UA {score:.3f}" if by_group else "")
            + f" ({seconds:.0f} s, at most {left / 60:.0f} min left){' *' if best['epoch'] == epoch else ''}")
        if state_path is not None:
            run.save(state_path, history, best, epoch)
    result = build_net(model_config)
    result.load_state_dict(best["state"])
    kept = next(h for h in history if h["epoch"] == best["epoch"] + 1)
    # best_valid_wa: the kept epoch's validation WA, whatever selected it (best_score)
    return result.to(device), {"history": history, "best_epoch": best["epoch"] + 1,
                               "best_valid_wa": kept["valid_wa"], "best_score": best["wa"], "bf16": run.bf16}


class _Training:
    """One network's training state: the network, its weight average, optimiser, schedule, loss
    and random generator, and the training data where the steps read it."""

    def __init__(self, model_config: ModelConfig, train: SegmentSet, config: TrainConfig, device: torch.device,
                 noisy: torch.Tensor | None, noisy_share: float, groups: torch.Tensor | None = None,
                 mix: ContextMix | None = None) -> None:
        self.train, self.config, self.device, self.noisy_share = train, config, device, noisy_share
        self.mix = mix
        self.generator = torch.Generator().manual_seed(config.seed)
        self.net = build_net(model_config).to(device)
        self.augments = model_config.topology != FUNCTIONALS  # masks and warps act on spectrograms
        self.bf16 = bf16_supported(device)
        if device.type == "cpu" and self.bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.average = None
        if config.ema:
            self.average = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        elif config.swa_from:  # batch-norm statistics averaged too
            self.average = AveragedModel(self.net, avg_fn=_running_mean, use_buffers=True)
        self.optimiser = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps = math.ceil(len(train.labels) / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimiser, _schedule(config, steps))
        classes = model_config.n_classes
        self.counts = torch.bincount(train.labels, minlength=classes).float()
        # What a segment weighs: 1 / the size of its cell, a class or a speaker's (corpus's) class.
        cell = train.labels if groups is None else groups.long() * classes + train.labels
        self.cell_weight = (1.0 / torch.bincount(cell).float())[cell]
        if groups is not None and config.balance_strength < 1:
            by_class = (1.0 / torch.bincount(train.labels).float())[train.labels]
            self.cell_weight = self.cell_weight ** config.balance_strength * by_class ** (1 - config.balance_strength)
        self.sample_weight = None  # per segment, in the loss: set when balancing speakers or corpora
        weights = (self.counts.sum() / (classes * self.counts.clamp(min=1))) if config.class_weights \
            else torch.ones(classes)
        if config.oversample or groups is not None:
            weights = torch.ones(classes)  # the sampler or the per-segment weights balance the classes already
        if groups is not None and not config.oversample:
            self.sample_weight = (self.cell_weight / self.cell_weight.mean()).to(device)
        self.loss_fn = nn.CrossEntropyLoss(weight=weights.to(device), label_smoothing=config.label_smoothing,
                                           reduction="mean" if self.sample_weight is None else "none")
        # On a GPU the whole training set lives there (float16, about 1 GB for 4,000 segments), so
        # that a step moves no data and augments in place.
        self.source = train.spectrograms.to(device) if device.type == "cuda" else train.spectrograms
        self.noisy = None
        if noisy is not None:
            if noisy.shape != train.spectrograms.shape:
                raise ValueError(f"noisy copy of shape {tuple(noisy.shape)} for {tuple(train.spectrograms.shape)}")
            self.noisy = noisy.to(self.source.device)

    def epoch(self, epoch: int) -> float:
        """One pass over the training set (in length batches); the mean loss."""
        config, generator, n = self.config, self.generator, len(self.train.labels)
        self.net.train()
        if config.oversample:
            order = torch.multinomial(self.cell_weight, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        total = 0.0
        batches = _length_batches(order, self.train.n_frames, config.batch_size, generator)
        for index in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False,
                          disable=None):
            total += self.step(index)
        if config.swa_from and epoch + 1 >= config.swa_from:
            self.average.update_parameters(self.net)
        return total / len(batches)

    def step(self, index: torch.Tensor) -> float:
        """One optimiser step on the segments `index`: noisy copies, other contexts, augmentation, mixup; the loss."""
        config, generator, device = self.config, self.generator, self.device
        rows = index.to(self.source.device)
        x, heard = self.source[rows], None
        if self.noisy is not None:
            heard = torch.rand(len(index), generator=generator) < self.noisy_share
            x = torch.where(heard.to(self.source.device)[:, None, None], self.noisy[rows], x)
        x = x.float()
        if self.mix is not None:
            x = self.mix.apply(x, index, self.train.n_frames[index], heard, config, generator)
        n_frames = self.train.n_frames[index]
        if self.augments:
            x, n_frames = _augment(x, n_frames, config, generator)
        y = self.train.labels[index].to(device)
        if config.mixup:
            share = float(torch.distributions.Beta(config.mixup, config.mixup).sample())
            partner = torch.randperm(len(index), generator=generator)
            x = share * x + (1 - share) * x[partner]
            n_frames = torch.maximum(n_frames, n_frames[partner])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(x.to(device), n_frames)
        loss = self._loss(logits.float(), y, index)
        if config.mixup:
            loss = share * loss + (1 - share) * self._loss(logits.float(), y[partner.to(device)], index[partner])
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.optimiser.step()
        self.scheduler.step()
        if config.ema:
            self.average.update_parameters(self.net)
        return float(loss.detach())

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The batch's weighted mean cross-entropy: each segment by its class's weight, or by its own."""
        if self.sample_weight is None:
            return self.loss_fn(logits, y)
        weights = self.sample_weight[index.to(self.device)]
        return (self.loss_fn(logits, y) * weights).sum() / weights.sum()

    def selected(self) -> nn.Module:
        """What is validated and kept: the weight average once it holds any, else the network."""
        return self.average.module if self.average is not None and int(self.average.n_averaged) > 0 else self.net

    def resume(self, state_path: Path) -> tuple[list, dict, int]:
        state = torch.load(state_path, weights_only=True)
        self.net.load_state_dict(state["net"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.generator.set_state(state["generator"])
        return state["history"], state["best"], state["epoch"] + 1

    def save(self, state_path: Path, history: list, best: dict, epoch: int) -> None:
        atomic_torch_save({"net": self.net.state_dict(), "optimiser": self.optimiser.state_dict(),
                           "scheduler": self.scheduler.state_dict(),
                           "average": self.average.state_dict() if self.average is not None else None,
                           "generator": self.generator.get_state(), "history": history, "best": best,
                           "epoch": epoch}, state_path)
