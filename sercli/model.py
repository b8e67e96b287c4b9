"""The networks of the paper: 3 conv layers + BiLSTM (Figure 1) and the 5-conv CNN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

LABELS = ("angry", "happy", "neutral", "sad")

# (filters, frequency extent in bins, time extent in frames) per conv layer; each is followed
# by ReLU and 2:1 max pooling in both axes. The first three are Figure 1's.
CONV3 = ((16, 12, 16), (24, 8, 12), (32, 5, 7))
CONV5 = CONV3 + ((48, 3, 5), (64, 3, 3))
TOPOLOGIES = ("cnn-lstm", "cnn5")


@dataclass(frozen=True)
class ModelConfig:
    """One network; defaults are Figure 1's CNN-LSTM on the 10 Hz grid with a 40 ms window."""

    topology: str = "cnn-lstm"  # "cnn-lstm" (3 conv + BiLSTM) or "cnn5" (5 conv, no LSTM)
    grid_hz: int = 10  # 10 Hz grid: 400 frequency bins; 20 Hz: 200
    window_ms: int = 40  # analysis window the network was trained on (20 or 40 ms)
    n_frames: int = 300  # input length, 3 s at 10 ms
    n_classes: int = len(LABELS)
    lstm_hidden: int = 128  # per direction (paper: 128x2)
    dense: int = 64  # paper: dense 64
    dropout: float = 0.5
    batch_norm: bool = True  # after each convolution; not in the paper, steadies training

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, not {self.topology!r}")
        if self.grid_hz not in (10, 20):
            raise ValueError(f"grid must be 10 or 20 Hz, not {self.grid_hz}")

    @property
    def n_bins(self) -> int:
        return 4000 // self.grid_hz

    @property
    def conv_layers(self) -> tuple[tuple[int, int, int], ...]:
        return CONV3 if self.topology == "cnn-lstm" else CONV5


class EmotionNet(nn.Module):
    """Log-spectrogram (B, n_bins, n_frames) -> logits (B, n_classes)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = 1
        for filters, k_freq, k_time in config.conv_layers:
            # "Same" padding, explicit because the kernels have even sizes: (left, right, top, bottom).
            layers.append(nn.ZeroPad2d(((k_time - 1) // 2, k_time // 2, (k_freq - 1) // 2, k_freq // 2)))
            layers.append(nn.Conv2d(channels, filters, (k_freq, k_time)))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(filters))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = filters
        self.convs = nn.Sequential(*layers)
        self.pooling = 2 ** len(config.conv_layers)
        bins = config.n_bins // self.pooling
        frames = config.n_frames // self.pooling
        if config.topology == "cnn-lstm":
            self.lstm = nn.LSTM(channels * bins, config.lstm_hidden, batch_first=True, bidirectional=True)
            summary = 2 * config.lstm_hidden
        else:
            self.lstm = None
            summary = channels * bins * frames
        self.head = nn.Sequential(
            nn.Linear(summary, config.dense), nn.ReLU(inplace=True), nn.Dropout(config.dropout),
            nn.Linear(config.dense, config.n_classes),
        )

    def forward(self, spectrograms: torch.Tensor, n_frames: torch.Tensor | None = None) -> torch.Tensor:
        """spectrograms: (B, F, T); n_frames: (B,) frames carrying signal (T if None)."""
        x = spectrograms.unsqueeze(1)  # (B, 1, F, T)
        if x.device.type == "cpu" and next(self.convs.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.convs(x)  # (B, C, F', T')
        if self.lstm is None:
            return self.head(x.flatten(1))  # (B, C * F' * T')
        batch, channels, bins, frames = x.shape
        sequence = x.permute(0, 3, 1, 2).reshape(batch, frames, channels * bins)  # (B, T', C * F')
        if n_frames is None:
            steps = torch.full((batch,), frames, dtype=torch.long)
        else:
            steps = (n_frames.cpu() // self.pooling).clamp(1, frames)
        packed = pack_padded_sequence(sequence.float(), steps, batch_first=True, enforce_sorted=False)
        with torch.autocast(device_type=x.device.type, enabled=False):
            _, (hidden, _) = self.lstm(packed)  # hidden: (2, B, H), forward and backward
        summary = torch.cat([hidden[0], hidden[1]], dim=1)  # (B, 2H)
        return self.head(summary)
