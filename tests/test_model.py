"""Both topologies and grids, checkpoint round trip and tamper detection, device and precision."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from sercli.features import FeatureConfig
from sercli.model import EmotionNet, ModelConfig
from sercli.weights import PLAIN_MODEL, ModelError, load_model, read_checkpoint, resolve, save_checkpoint, sha256_of


@pytest.mark.parametrize("topology", ["cnn-lstm", "cnn5"])
@pytest.mark.parametrize("grid_hz", [10, 20])
def test_forward_shapes(topology, grid_hz):
    config = ModelConfig(topology=topology, grid_hz=grid_hz)
    net = EmotionNet(config).eval()
    x = torch.rand(3, config.n_bins, 300)
    logits = net(x, torch.tensor([300, 120, 25]))
    assert logits.shape == (3, 4)
    assert torch.isfinite(logits).all()


def test_figure_1_layer_shapes():
    """Figure 1 on the 20 Hz grid with 16, 24, 32 filters; 300 frames are padded to 304 so
    that pooling keeps the last frames: 200x304 -> 100x152 -> 50x76 -> 25x38."""
    net = EmotionNet(ModelConfig(grid_hz=20))
    x = torch.rand(1, 1, 200, 304)
    shapes = []
    for block in net.blocks:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 100, 152), (24, 50, 76), (32, 25, 38)]
    assert net.lstm.hidden_size == 128 and net.lstm.bidirectional


def test_padding_frames_do_not_change_lstm_output():
    """With lengths given, what lies beyond a segment's frames cannot move its posteriors."""
    torch.manual_seed(0)
    net = EmotionNet(ModelConfig(lstm_hidden=16, dense=16, batch_norm=False)).eval()
    x = torch.rand(1, 400, 300)
    x[:, :, 160:] = 0
    y = x.clone()
    y[:, :, 200:] = 5.0  # garbage after the segment's 160 frames (pooled: 20 steps)
    n = torch.tensor([160])
    torch.testing.assert_close(net(x, n), net(y, n))


@pytest.mark.parametrize("grad", [True, False])  # the masking is in place without autograd
@pytest.mark.parametrize("topology,summary", [("cnn-lstm", "last"), ("cnn-lstm", "mean"), ("cnn5", "last")])
def test_output_does_not_depend_on_padding_or_batch(topology, summary, grad):
    """A segment's logits are the same padded to 300 frames, cut to its own length, or batched
    with a longer one: the masks make the padding invisible (batch norm in eval mode)."""
    with torch.set_grad_enabled(grad):
        _check_padding_invisible(topology, summary)


def _check_padding_invisible(topology: str, summary: str) -> None:
    torch.manual_seed(0)
    net = EmotionNet(ModelConfig(topology=topology, grid_hz=20, lstm_hidden=16, dense=16, summary=summary,
                                 lstm_dropout=0.3))
    with torch.no_grad():  # non-trivial norm statistics, so the padded frames are not already zero
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    net.eval()
    short = torch.rand(1, 200, 300)
    short[:, :, 117:] = 0
    long = torch.rand(1, 200, 300)
    full = net(short, torch.tensor([117]))
    torch.testing.assert_close(net(short[:, :, :117], torch.tensor([117])), full)
    both = net(torch.cat([short, long]), torch.tensor([117, 300]))
    torch.testing.assert_close(both[:1], full)
    torch.testing.assert_close(both[1:], net(long, torch.tensor([300])))


def test_cpu_sub_batches_give_the_whole_batch_result(monkeypatch):
    """Model.posteriors feeds the network a few segments at a time on the CPU; the posteriors are
    those of one call on the whole batch."""
    from sercli import weights
    from sercli.weights import from_checkpoint

    torch.manual_seed(1)
    config = ModelConfig(grid_hz=20, lstm_hidden=16, dense=16)
    checkpoint = {"config": config.__dict__, "state_dict": EmotionNet(config).state_dict(),
                  "meta": {"features": FeatureConfig(grid_hz=20).__dict__}}
    model = from_checkpoint(checkpoint, "x", device="cpu", precision="fp32")
    x = torch.rand(11, 200, 300)
    n = torch.tensor([300, 40, 299, 120, 8, 300, 77, 150, 260, 1, 300])
    for k, frames in enumerate(n.tolist()):
        x[k, :, frames:] = 0
    with torch.no_grad():
        whole = torch.softmax(model.net(x, n), dim=-1)
    monkeypatch.setattr(weights, "CPU_SUBBATCH", 3)
    torch.testing.assert_close(model.posteriors(x, n), whole)


def test_retain_freed_memory():
    import platform

    from sercli.heap import retain_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert retain_freed_memory()


def test_checkpoint_round_trip(tmp_path):
    config = ModelConfig(topology="cnn5", grid_hz=20)
    torch.manual_seed(1)
    net = EmotionNet(config)
    features = FeatureConfig(grid_hz=20, window_ms=20, e_noise_db=-55.0)
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, config, net.state_dict(), features, {"name": "m", "metrics": {"ua": 0.5}})
    assert digest == sha256_of(path)
    assert (tmp_path / "m.pt.sha256").read_text().split() == [digest, "m.pt"]
    model = load_model(path, device="cpu", precision="fp32")
    assert model.net.config == config
    assert model.features == features
    assert model.labels == ("angry", "happy", "neutral", "sad")
    assert model.meta["metrics"] == {"ua": 0.5}
    for key, value in net.state_dict().items():
        torch.testing.assert_close(model.net.state_dict()[key], value)


def test_tampered_checkpoint_is_refused(tiny_model, tmp_path):
    copy = tmp_path / "t.pt"
    shutil.copy(tiny_model, copy)
    shutil.copy(tiny_model.with_name(tiny_model.name + ".sha256"), tmp_path / "t.pt.sha256")
    read_checkpoint(copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        read_checkpoint(copy)


def test_missing_checksum_and_non_checkpoint(tmp_path):
    plain = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(ModelError, match="checksum file"):
        read_checkpoint(plain)
    (tmp_path / "x.pt.sha256").write_text(sha256_of(plain) + "  x.pt\n")
    with pytest.raises(ModelError, match="not a sercli checkpoint"):
        read_checkpoint(plain)


def test_names_and_default(model_dir, monkeypatch, no_default_model):
    with pytest.raises(ModelError, match="--model"):
        resolve(None)
    with pytest.raises(ModelError, match="unknown model"):
        resolve("nonexistent-model")
    monkeypatch.setattr("sercli.weights.model_dirs", lambda: [model_dir])
    assert resolve("tiny-cnn5") == model_dir / "tiny-cnn5.pt"


def test_device_errors(tiny_model):
    with pytest.raises(ModelError, match="unknown device|unsupported device"):
        load_model(tiny_model, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_model(tiny_model, device="cuda")


def test_bf16_moves_posteriors_by_less_than_0_01():
    """Full-size CNN-LSTM, weights scaled up so posteriors are far from uniform."""
    from sercli.weights import from_checkpoint
    from sercli.features import log_spectrograms
    from test_features import speech_like

    torch.manual_seed(3)
    config = ModelConfig()
    net = EmotionNet(config)
    with torch.no_grad():
        net.head[-1].weight.mul_(100)
    checkpoint = {"config": config.__dict__, "state_dict": net.state_dict(),
                  "meta": {"features": FeatureConfig().__dict__}}
    fp32 = from_checkpoint(checkpoint, "x", device="cpu", precision="fp32")
    bf16 = from_checkpoint(checkpoint, "x", device="cpu", precision="bf16")
    segments = [speech_like(3.0, seed=s) * (0.5 + s) for s in range(4)] + [speech_like(1.2, seed=9)]
    x = log_spectrograms(segments, FeatureConfig())
    n = torch.tensor([300, 300, 300, 300, 120])
    p32, p16 = fp32.posteriors(x, n), bf16.posteriors(x, n)
    assert float(p32.max() - p32.min()) > 0.2  # the test means something only if outputs differ
    assert float((p32 - p16).abs().max()) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tiny_model):
    from sercli.features import log_spectrograms
    from test_features import speech_like

    segments = [speech_like(3.0), speech_like(1.5, seed=1)]
    cpu = load_model(tiny_model, device="cpu", precision="fp32")
    gpu = load_model(tiny_model, device="cuda", precision="fp32")
    n = torch.tensor([300, 150])
    a = cpu.posteriors(log_spectrograms(segments, cpu.features), n)
    b = gpu.posteriors(log_spectrograms(segments, gpu.features, "cuda"), n.cuda())
    torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_half_precision_storage_round_trip(tmp_path):
    torch.manual_seed(2)
    config = ModelConfig(lstm_hidden=16, dense=16)
    net = EmotionNet(config)
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(full, config, net.state_dict(), FeatureConfig())
    save_checkpoint(half, config, net.state_dict(), FeatureConfig(), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    a, b = load_model(full, device="cpu", precision="fp32"), load_model(half, device="cpu", precision="fp32")
    assert all(p.dtype == torch.float32 for p in b.net.parameters())
    x = torch.rand(2, 400, 300)
    n = torch.tensor([300, 200])
    assert float((a.posteriors(x, n) - b.posteriors(x, n)).abs().max()) < 1e-3


def test_shipped_default_model(example):
    """The installed default model loads, verifies, is the eGeMAPS MLPs in context (their five
    folds beat both networks on films and on clips alone), and bf16 keeps its posteriors within 0.01."""
    import sercli
    from sercli.weights import DEFAULT_MODEL, DENOISE_MODEL, FUNCTIONALS_MODEL, installed_models

    assert DEFAULT_MODEL == FUNCTIONALS_MODEL and {DEFAULT_MODEL, PLAIN_MODEL, DENOISE_MODEL} <= set(installed_models())
    fp32 = load_model(device="cpu", precision="fp32")
    assert fp32.name == DEFAULT_MODEL and fp32.meta["metrics"]["valid_wa"] > 0.3
    assert fp32.features.kind == "egemaps" and not fp32.features.denoise
    assert fp32.features.context_norm and fp32.features.context_window_s == 60
    assert (Path(fp32.path).parent / fp32.meta["model_card"]).is_file()
    a = sercli.analyze(str(example), model=fp32)
    b = sercli.analyze(str(example), model=load_model(device="cpu", precision="bf16"))
    assert len(a.segments) == 5
    for s, t in zip(a.segments, b.segments):
        assert max(abs(s.probs[k] - t.probs[k]) for k in s.probs) < 0.01
    assert a.segments[0].label == "angry"  # the clearly angry first utterance
    # a context-normalised model, with its training speech's statistics
    assert len(fp32.meta["context_prior"]["mean"]) == fp32.features.n_bins


def test_shipped_two_step_model(example):
    """`analyze --model two-step` finds the installed bundle, whose first step (the default
    model until 2026-11-26) saw the same features and speakers as today's plain network."""
    from click.testing import CliRunner

    from sercli.cli import main
    from sercli.model import TwoStepNet

    bundle = load_model("two-step", device="cpu", precision="fp32")
    default = load_model(PLAIN_MODEL, device="cpu")
    assert isinstance(bundle.net, TwoStepNet)
    # the same features; only the analysis window differs (60 s for the plain network since
    # 2026-11-30, measured on its recipe's fold models; the bundle keeps 5 minutes)
    assert replace(bundle.features, context_window_s=0) == replace(default.features, context_window_s=0)
    assert (bundle.features.context_window_s, default.features.context_window_s) == (600.0, 60.0)
    assert (Path(bundle.path).parent / bundle.meta["model_card"]).is_file()
    for speakers in ("speakers_train", "speakers_validation"):
        assert bundle.meta["training"][speakers] == default.meta["training"][speakers]
    assert "--first-step" in bundle.meta["training"]["command"]
    result = CliRunner().invoke(main, ["analyze", str(example), "--model", "two-step", "-q"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1 + 5


def test_shipped_denoising_model(example):
    """`analyze --denoise` with no --model finds the installed modified predictor, which verifies
    and was trained on the noise filter's spectrograms, and runs it beside the plain network."""
    import json

    from click.testing import CliRunner

    from sercli.cli import main
    from sercli.weights import DEFAULT_DENOISE_MODEL, DENOISE_MODEL, installed_models

    assert DENOISE_MODEL in installed_models() and DEFAULT_DENOISE_MODEL == f"cnn-lstm-10hz+{DENOISE_MODEL}"
    model = load_model(DENOISE_MODEL, device="cpu")
    assert model.features.denoise and model.meta["metrics"]["valid_wa"] > 0.3
    assert (Path(model.path).parent / model.meta["model_card"]).is_file()
    result = CliRunner().invoke(main, ["analyze", str(example), "--denoise", "-f", "json", "-q"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == DEFAULT_DENOISE_MODEL and len(document["segments"]) == 5
    alone = CliRunner().invoke(main, ["analyze", str(example), "--denoise", "-m", DENOISE_MODEL, "-f", "json", "-q"])
    assert json.loads(alone.stdout)["model"] == DENOISE_MODEL


def test_checkpoints_with_the_retired_window_key_still_load(tmp_path):
    """Earlier checkpoints (the shipped two-step bundle among them) store window_ms in the
    network's config, which no network reads; they load, and new checkpoints keep the window in
    the features only."""
    shipped = Path(__file__).resolve().parent.parent / "weights" / "two-step.pt"
    checkpoint = read_checkpoint(shipped)
    assert checkpoint["config"]["window_ms"] == 40
    model = load_model(shipped, device="cpu", precision="fp32")
    assert model.features.window_ms == 40 and not hasattr(model.net.four.config, "window_ms")
    assert ModelConfig.from_dict({**asdict(ModelConfig(dense=8)), "window_ms": 20}) == ModelConfig(dense=8)
    with pytest.raises(TypeError):
        ModelConfig.from_dict({"dense": 8, "no_such_setting": 1})
    path = tmp_path / "new.pt"
    save_checkpoint(path, ModelConfig(dense=8), EmotionNet(ModelConfig(dense=8)).state_dict(), FeatureConfig(), {})
    assert "window_ms" not in torch.load(path, weights_only=True)["config"]
