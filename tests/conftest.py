"""Shared fixtures: a tiny random checkpoint, the bundled example, ffmpeg-made media."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "montage.mp3"  # 21.5 s, 4 utterances, each after 1 s of silence
SHARED_DATA = REPO.parent / "shared" / "data"

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not here")


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    from sercli.audio import ffmpeg_binary

    return ffmpeg_binary()


@pytest.fixture(scope="session")
def run_ffmpeg(ffmpeg_exe):
    """run_ffmpeg(*args): run ffmpeg quietly, fail the test with its stderr on error."""

    def run(*args: str) -> None:
        result = subprocess.run([ffmpeg_exe, "-v", "error", "-y", *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    return run


@pytest.fixture(scope="session")
def example() -> Path:
    return EXAMPLE


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A folder with tiny random checkpoints: tiny-lstm (10 Hz) and tiny-cnn5 (20 Hz, 20 ms)."""
    import torch

    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    for name, config in {
        "tiny-lstm": ModelConfig(lstm_hidden=16, dense=16),
        "tiny-cnn5": ModelConfig(topology="cnn5", grid_hz=20, window_ms=20, dense=16),
    }.items():
        torch.manual_seed(0)
        net = EmotionNet(config)
        features = FeatureConfig(grid_hz=config.grid_hz, window_ms=config.window_ms)
        save_checkpoint(folder / f"{name}.pt", config, net.state_dict(), features,
                        {"name": name, "metrics": {"ua": 0.25, "wa": 0.25}})
    return folder


@pytest.fixture(scope="session")
def tiny_model(model_dir) -> Path:
    return model_dir / "tiny-lstm.pt"


@pytest.fixture
def no_default_model(monkeypatch, tmp_path):
    """Hide any installed models, so only what a test passes explicitly exists."""
    import sercli.weights

    monkeypatch.setattr(sercli.weights, "model_dirs", lambda: [tmp_path / "no-models"])


def tone(seconds: float, freq: float = 220.0, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
