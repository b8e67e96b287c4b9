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
def corpus(tmp_path_factory, run_ffmpeg, example):
    """8 utterances cut from the example, 4 speakers in 2 folds, with a manifest and folds file."""
    root = tmp_path_factory.mktemp("corpus")
    rows = ["path,emotion,speaker,corpus"]
    cuts = [(1.0, 4.4, "anger"), (6.4, 4.3, "happiness"), (11.7, 4.0, "neutral"), (16.8, 3.7, "sadness")]
    for n, speaker in enumerate(["s1", "s2", "s3", "s4"]):
        start, length, emotion = cuts[n]
        for k, (other_start, other_length, other_emotion) in enumerate([cuts[n], cuts[(n + 1) % 4]]):
            name = f"{speaker}_{k}.wav"
            run_ffmpeg("-ss", str(other_start), "-t", str(other_length), "-i", str(example), "-ar", "16000",
                       "-ac", "1", str(root / name))
            rows.append(f"{name},{other_emotion},{speaker},toy")
    rows.append("s1_0.wav,surprise,s1,toy")  # not one of the four classes: skipped
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "folds.csv").write_text("speaker,fold\ns1,1\ns2,1\ns3,2\ns4,2\n")
    return root


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A folder with tiny random checkpoints: tiny-lstm (10 Hz), tiny-cnn5 (20 Hz, 20 ms) and
    tiny-denoise (10 Hz, on the noise filter's spectrograms)."""
    import torch

    from sercli.features import FeatureConfig
    from sercli.model import EmotionNet, ModelConfig
    from sercli.weights import save_checkpoint

    folder = tmp_path_factory.mktemp("models")
    for name, config in {
        "tiny-lstm": ModelConfig(lstm_hidden=16, dense=16),
        "tiny-cnn5": ModelConfig(topology="cnn5", grid_hz=20, dense=16),
        "tiny-denoise": ModelConfig(lstm_hidden=16, dense=16),
    }.items():
        torch.manual_seed(0)
        net = EmotionNet(config)
        features = FeatureConfig(grid_hz=config.grid_hz, window_ms=20 if name == "tiny-cnn5" else 40,
                                 denoise=name == "tiny-denoise")
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
