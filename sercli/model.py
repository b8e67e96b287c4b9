"""The networks of the paper: 3 conv layers + BiLSTM (Figure 1) and the 5-conv CNN."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .features import BAND_HZ  # the one constant the network shares with its input

LABELS = ("angry", "happy", "neutral", "sad")

# (filters, frequency extent in bins, time extent in frames) per conv layer; each is followed
# by ReLU and 2:1 max pooling in both axes. The first three are Figure 1's.
CONV3 = ((16, 12, 16), (24, 8, 12), (32, 5, 7))
CONV5 = CONV3 + ((48, 3, 5), (64, 3, 3))
FUNCTIONALS = "egemaps"  # not a spectrogram network: an MLP on a segment's eGeMAPS functionals (sercli.functionals)
TOPOLOGIES = ("cnn-lstm", "cnn5", FUNCTIONALS)
RETIRED_KEYS = ("window_ms",)  # in the configs of earlier checkpoints; no network read it (the features have it)


@dataclass(frozen=True)
class ModelConfig:
    """One network; defaults are Figure 1's CNN-LSTM on the 10 Hz grid with a 40 ms window."""

    topology: str = "cnn-lstm"  # "cnn-lstm" (3 conv + BiLSTM), "cnn5" (5 conv, no LSTM) or "egemaps" (an MLP)
    grid_hz: int = 10  # 10 Hz grid: 400 frequency bins; 20 Hz: 200
    n_frames: int = 300  # input length, 3 s at 10 ms
    n_classes: int = len(LABELS)
    lstm_hidden: int = 128  # per direction (paper: 128x2)
    dense: int = 64  # paper: dense 64
    dropout: float = 0.5  # before the output layer
    lstm_dropout: float = 0.5  # on the LSTM's input features (training only); not in the paper
    summary: str = "mean"  # "mean": mean LSTM output over time; "last": final states of both directions
    batch_norm: bool = True  # after each convolution; not in the paper, steadies training
    # egemaps: MLPs trained apart (different seeds) in one checkpoint, their posteriors averaged
    # (train/ship_model.py --merge); sercli train makes one.
    members: int = 1

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, not {self.topology!r}")
        if self.summary not in ("last", "mean"):
            raise ValueError(f"summary must be last or mean, not {self.summary!r}")
        if self.grid_hz not in (10, 20):
            raise ValueError(f"grid must be 10 or 20 Hz, not {self.grid_hz}")
        if self.members < 1 or (self.members > 1 and self.topology != FUNCTIONALS):
            raise ValueError(f"members must be 1, or more for an egemaps MLP: not {self.members}")

    @classmethod
    def from_dict(cls, config: dict) -> "ModelConfig":
        """The config a checkpoint stores, less the keys earlier versions stored that no network reads."""
        return cls(**{k: v for k, v in config.items() if k not in RETIRED_KEYS})

    @property
    def n_bins(self) -> int:
        return BAND_HZ // self.grid_hz

    @property
    def conv_layers(self) -> tuple[tuple[int, int, int], ...]:
        return CONV3 if self.topology == "cnn-lstm" else CONV5


def _head(inputs: int, config: ModelConfig) -> nn.Sequential:
    """Every network's classifier: dense config.dense with ReLU, dropout, the output layer."""
    return nn.Sequential(
        nn.Linear(inputs, config.dense), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
        nn.Linear(config.dense, config.n_classes),
    )


class EmotionNet(nn.Module):
    """Log-spectrogram (B, n_bins, n_frames) -> logits (B, n_classes).

    Every conv block masks the frames past each segment's length, so a segment's output does not
    depend on how far it is padded: batches are cut to their longest segment, which saves a third
    of the work on typical speech, and padding to the paper's 300 frames changes nothing.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        norms: list[nn.Module] = []
        channels = 1
        for filters, k_freq, k_time in config.conv_layers:
            # "Same" padding, explicit because the kernels have even sizes: (left, right, top, bottom).
            # Pooling comes before batch norm and ReLU: the same function class as the paper's
            # conv-ReLU-pool for a positive norm scale, at a quarter of their cost.
            blocks.append(nn.Sequential(
                nn.ZeroPad2d(((k_time - 1) // 2, k_time // 2, (k_freq - 1) // 2, k_freq // 2)),
                nn.Conv2d(channels, filters, (k_freq, k_time)), nn.MaxPool2d(2)))
            norms.append(nn.BatchNorm2d(filters) if config.batch_norm else nn.Identity())
            channels = filters
        self.blocks = nn.ModuleList(blocks)
        self.norms = nn.ModuleList(norms)
        self.pooling = 2 ** len(config.conv_layers)
        bins = config.n_bins
        for _ in blocks:
            bins //= 2
        frames = -(-config.n_frames // self.pooling)  # inputs are padded to a multiple of the pooling
        self.out_frames = frames
        self.lstm_dropout = nn.Dropout(config.lstm_dropout)
        if config.topology == "cnn-lstm":
            self.lstm = nn.LSTM(channels * bins, config.lstm_hidden, batch_first=True, bidirectional=True)
            summary = 2 * config.lstm_hidden
        else:
            self.lstm = None
            summary = channels * bins * frames
        self.head = _head(summary, config)

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def forward(self, spectrograms: torch.Tensor, n_frames: torch.Tensor | None = None) -> torch.Tensor:
        """spectrograms: (B, F, T), zero past each segment's end; n_frames: (B,) frames carrying
        signal (all T if None)."""
        batch, _, total = spectrograms.shape
        if n_frames is None:
            n = torch.full((batch,), total, dtype=torch.long, device=spectrograms.device)
        else:
            n = n_frames.to(spectrograms.device, torch.long).clamp(1, total)
        keep = -(-int(n.max()) // self.pooling) * self.pooling  # zero-padded to a multiple of the pooling
        x = spectrograms[:, :, :keep] if keep <= total else nn.functional.pad(spectrograms, (0, keep - total))
        x = x.unsqueeze(1)  # (B, 1, F, T)
        if self.blocks[-1][1].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        for block, norm in zip(self.blocks, self.norms):
            x = block(x)
            n = (n + 1) // 2  # a pooled frame that saw any signal stays
            x = _zero_frames_past(torch.relu_(norm(x)), n)
        if self.lstm is None:
            x = nn.functional.pad(x, (0, self.out_frames - x.shape[-1]))  # back to the full input's width
            return self.head(x.flatten(1))  # (B, C * F' * T')
        _, channels, bins, frames = x.shape
        sequence = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * bins)  # (B, T', C * F')
        steps = n.cpu().clamp(1, frames)
        packed = pack_padded_sequence(self.lstm_dropout(sequence.float()), steps, batch_first=True,
                                      enforce_sorted=False)
        with torch.autocast(device_type=x.device.type, enabled=False):
            outputs, (hidden, _) = self.lstm(packed)  # hidden: (2, B, H), forward and backward
        if self.config.summary == "last":
            summary = torch.cat([hidden[0], hidden[1]], dim=1)  # (B, 2H)
        else:
            padded, _ = pad_packed_sequence(outputs, batch_first=True)  # (B, T', 2H), zero past each end
            summary = padded.sum(dim=1) / steps.to(padded.device, padded.dtype)[:, None]
        return self.head(summary)


class FunctionalsNet(nn.Module):
    """A segment's acoustic functionals (B, 88, 1) -> logits (B, n_classes): each feature
    standardised by the moments of the training features (a batch norm without scale, its
    statistics the cumulative average over training, kept in the checkpoint), then a hidden
    layer of config.dense units, dropout and the output layer. Its input carries no time axis:
    column 0 is read and anything after it (a batch buffer padded like spectrograms) is padding,
    n_frames is ignored; and no absolute level (sercli.functionals scales each segment).

    With config.members > 1 it holds that many such MLPs (`members`, each with its own input
    statistics) and returns the log of their mean posteriors, which a softmax turns back into
    that mean: an ensemble at the cost of one featurisation."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from .functionals import EGEMAPS_SIZE

        self.config = config
        if config.members > 1:
            self.members = nn.ModuleList(FunctionalsNet(replace(config, members=1)) for _ in range(config.members))
            return
        self.norm = nn.BatchNorm1d(EGEMAPS_SIZE, affine=False, momentum=None)
        self.head = _head(EGEMAPS_SIZE, config)

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def forward(self, features: torch.Tensor, n_frames: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.members > 1:
            mean = torch.stack([member(features).float().softmax(dim=-1) for member in self.members]).mean(dim=0)
            return mean.clamp_min(1e-12).log()
        with torch.autocast(device_type=features.device.type, enabled=False):  # raw features span 5 decades
            return self.head(self.norm(features[:, :, 0].float()))


def build_net(config: ModelConfig) -> nn.Module:
    """The network a config describes: an EmotionNet on spectrograms, or a FunctionalsNet."""
    return FunctionalsNet(config) if config.topology == FUNCTIONALS else EmotionNet(config)


def _zero_frames_past(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """(B, C, F, T) with each segment's frames from n[b] on set to zero. Without autograd on the
    CPU only those frames are written (in place), not the whole batch: the full-batch multiply
    took a twentieth of the network's time."""
    total = x.shape[-1]
    if x.requires_grad or x.device.type != "cpu":
        return x * (torch.arange(total, device=x.device) < n[:, None])[:, None, None, :].to(x.dtype)
    for row, length in enumerate(n.tolist()):
        if length < total:
            x[row, :, :, length:] = 0
    return x


TWO_STEP_EMOTIONS = ("angry", "happy", "sad")  # each has a binary network against neutral
MAJORITY = "neutral"


def two_step_posteriors(four: torch.Tensor, binary: dict[str, torch.Tensor], labels=LABELS) -> torch.Tensor:
    """The paper's two-step rule (section 4) on posteriors: (B, 4) and, per emotion e, (B, 2) from
    the network of neutral (column 0) against e (column 1). Returns (B, 4) posteriors.

    Where the four-class network's top class is not neutral, its posteriors stand. Elsewhere the
    decision is the largest of the six binary posteriors: an emotion's own posterior names that
    emotion, any network's neutral posterior names neutral (so neutral wins when some network is
    surer of neutral than any is of its emotion). The posteriors reported there are, normalised to
    sum to 1, each emotion's posterior from its own network and, for neutral, the largest neutral
    posterior of the three; their top class is the decision.
    """
    neutral = labels.index(MAJORITY)
    second = torch.zeros_like(four)
    second[:, neutral] = torch.stack([binary[e][:, 0] for e in TWO_STEP_EMOTIONS], dim=1).amax(dim=1)
    for emotion in TWO_STEP_EMOTIONS:
        second[:, labels.index(emotion)] = binary[emotion][:, 1]
    second = second / second.sum(dim=1, keepdim=True)
    first_neutral = four.argmax(dim=1) == neutral
    return torch.where(first_neutral[:, None], second, four)


class TwoStepNet(nn.Module):
    """A four-class network and three binary ones (neutral against angry, happy and sad), joined
    by two_step_posteriors. forward returns log-posteriors, so a softmax of its output gives
    the combined posteriors as for any EmotionNet."""

    def __init__(self, four: EmotionNet, binary: dict[str, EmotionNet]) -> None:
        super().__init__()
        if set(binary) != set(TWO_STEP_EMOTIONS) or any(n.config.n_classes != 2 for n in binary.values()):
            raise ValueError(f"a two-step model needs binary networks for {', '.join(TWO_STEP_EMOTIONS)}")
        self.four = four
        self.binary = nn.ModuleDict(binary)

    @property
    def n_classes(self) -> int:
        return self.four.n_classes

    def forward(self, spectrograms: torch.Tensor, n_frames: torch.Tensor | None = None) -> torch.Tensor:
        four = torch.softmax(self.four(spectrograms, n_frames).float(), dim=-1)  # (B, 4)
        combined = four
        needed = four.argmax(dim=1) == LABELS.index(MAJORITY)
        if bool(needed.any()):  # the binary networks run only where the first step says neutral
            rows = needed.nonzero().squeeze(1)
            part = spectrograms[rows]
            frames = None if n_frames is None else n_frames.to(spectrograms.device)[rows]
            binary = {e: torch.softmax(net(part, frames).float(), dim=-1) for e, net in self.binary.items()}
            combined = four.clone()
            combined[rows] = two_step_posteriors(four[rows], binary)
        return torch.log(combined.clamp(min=1e-12))


def posteriors(net: nn.Module, spectrograms: torch.Tensor, n_frames: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Any network's (B, n_classes) float32 posteriors, on the CPU, of (B, F, T) spectrograms on its
    device; bf16: under bfloat16 autocast. Analysis (weights.Model) and training share it."""
    with torch.autocast(spectrograms.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(spectrograms, n_frames)
    return torch.softmax(logits.float(), dim=-1).cpu()
