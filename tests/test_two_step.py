"""The two-step predictor: the combination rule, the bundle checkpoint, analysis with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sercli.cli import main
from sercli.features import FeatureConfig
from sercli.model import LABELS, TWO_STEP_EMOTIONS, EmotionNet, ModelConfig, TwoStepNet, two_step_posteriors
from sercli.weights import ModelError, load_model, read_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
A, H, N, S = (LABELS.index(x) for x in ("angry", "happy", "neutral", "sad"))


def binary(angry, happy, sad):
    """Binary posteriors (neutral, emotion) from each network's emotion posterior."""
    return {e: torch.tensor([[1 - p, p]]) for e, p in zip(TWO_STEP_EMOTIONS, (angry, happy, sad))}


def test_first_step_keeps_a_non_neutral_top_class():
    four = torch.tensor([[0.1, 0.5, 0.3, 0.1]])  # happy on top: the binary networks are not asked
    out = two_step_posteriors(four, binary(0.99, 0.0, 0.99))
    torch.testing.assert_close(out, four)


def test_second_step_picks_the_surest_emotion():
    four = torch.tensor([[0.2, 0.1, 0.4, 0.3]])  # neutral on top
    out = two_step_posteriors(four, binary(0.7, 0.6, 0.9))  # sad's network is surest of its emotion
    assert int(out.argmax()) == S
    # neutral's share is the largest neutral posterior (0.4, from the happy network), then normalised
    expected = torch.tensor([0.7, 0.6, 0.4, 0.9])
    torch.testing.assert_close(out[0], expected / expected.sum())


def test_second_step_keeps_neutral_when_a_network_is_surer_of_neutral():
    four = torch.tensor([[0.3, 0.05, 0.6, 0.05]])
    out = two_step_posteriors(four, binary(0.55, 0.1, 0.3))  # happy's network: 0.9 neutral
    assert int(out.argmax()) == N
    assert float(out.sum()) == pytest.approx(1.0)
    # an emotion a network prefers (0.55 > 0.5) still loses to a surer neutral elsewhere
    assert float(out[0, A]) < float(out[0, N])


def test_rule_per_row_in_a_batch():
    four = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1]])
    nets = {e: torch.tensor([[0.2, 0.8], [0.2, 0.8]]) for e in TWO_STEP_EMOTIONS}
    nets["happy"] = torch.tensor([[0.5, 0.5], [0.05, 0.95]])
    out = two_step_posteriors(four, nets)
    assert out.argmax(dim=1).tolist() == [A, H]


def tiny_bundle(path, seed=0):
    torch.manual_seed(seed)
    four = EmotionNet(ModelConfig(lstm_hidden=16, dense=16))
    members = {e: (ModelConfig(topology="cnn5", n_classes=2, dense=8), None) for e in TWO_STEP_EMOTIONS}
    members = {e: (c, EmotionNet(c).state_dict()) for e, (c, _) in members.items()}
    save_checkpoint(path, four.config, four.state_dict(), FeatureConfig(), {"name": "two-step"}, members=members)
    return four, members


def test_bundle_round_trip_and_tamper_detection(tmp_path):
    path = tmp_path / "two-step.pt"
    four, members = tiny_bundle(path)
    model = load_model(path, device="cpu", precision="fp32")
    assert isinstance(model.net, TwoStepNet) and model.name == "two-step"
    for name, (config, state) in members.items():
        for key, value in model.net.binary[name].state_dict().items():
            torch.testing.assert_close(value, state[key])
    # the bundle's output is the rule applied to its networks' outputs
    x, n = torch.rand(6, 400, 300), torch.tensor([300, 250, 120, 300, 80, 200])
    with torch.inference_mode():
        got = model.posteriors(x, n)
        first = torch.softmax(four.eval()(x, n), dim=-1)
        nets = {e: torch.softmax(model.net.binary[e](x, n), dim=-1) for e in TWO_STEP_EMOTIONS}
    torch.testing.assert_close(got, two_step_posteriors(first, nets), atol=1e-5, rtol=1e-4)
    assert read_checkpoint(path)["kind"] == "two-step"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_model(path)


def test_analyze_with_the_two_step_model_by_name(tmp_path, monkeypatch, example):
    tiny_bundle(tmp_path / "two-step.pt")
    monkeypatch.setenv("SERCLI_MODEL_PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["analyze", str(example), "--model", "two-step", "-f", "json", "-q"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == "two-step" and len(document["segments"]) == 5
    for segment in document["segments"]:
        assert sum(segment["probs"].values()) == pytest.approx(1.0, abs=1e-3)
    listing = CliRunner().invoke(main, ["models"])
    assert "two-step (cnn-lstm + 3 binary), 10 Hz, 40 ms" in listing.stdout


def test_train_two_step_reusing_the_first_step_then_analyze(corpus, tmp_path, example):
    runner = CliRunner()
    # Every speaker but the validation one (seed 1: s3, neutral and sad) trains; fold 1's single
    # training speaker would lack classes.
    base = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--fold", "none", "--epochs", "1", "--seed", "1", "--device", "cpu", "--cache", str(tmp_path / "cache")]
    first = runner.invoke(main, [*base, "--out", str(tmp_path / "four")])
    assert first.exit_code == 0, first.output
    result = runner.invoke(main, [*base, "--topology", "two-step", "--first-step",
                                  str(tmp_path / "four" / "{run}" / "model.pt"), "--out", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    for emotion in TWO_STEP_EMOTIONS:
        assert f"training the neutral-{emotion} network" in result.output
    assert "training the four-class network" not in result.output
    bundle = tmp_path / "two" / "all" / "model.pt"
    checkpoint = read_checkpoint(bundle)
    assert checkpoint["kind"] == "two-step" and set(checkpoint["members"]) == set(TWO_STEP_EMOTIONS)
    assert all(m["config"]["topology"] == "cnn5" and m["config"]["n_classes"] == 2
               for m in checkpoint["members"].values())
    four = read_checkpoint(tmp_path / "four" / "all" / "model.pt")
    for key, value in four["state_dict"].items():  # the first step is the earlier run's network
        torch.testing.assert_close(checkpoint["state_dict"][key].float(), value.float())
    metrics = json.loads((tmp_path / "two" / "all" / "metrics.json").read_text())
    assert set(metrics["best_epoch"]) == {"four-class", *TWO_STEP_EMOTIONS}
    assert "two-step" in (tmp_path / "two" / "results.md").read_text()
    analysed = runner.invoke(main, ["analyze", str(example), "--model", str(bundle), "-q"])
    assert analysed.exit_code == 0 and len(analysed.stdout.splitlines()) == 6
    # shipped as an installed model (float16), the bundle keeps its binary networks
    shipped = tmp_path / "installed"
    shipped.mkdir()
    subprocess.run([sys.executable, str(ROOT / "train" / "ship_model.py"), str(bundle), "two-step", "--weights",
                    str(shipped)], check=True, capture_output=True)
    installed = load_model(shipped / "two-step.pt", device="cpu")
    assert isinstance(installed.net, TwoStepNet) and installed.name == "two-step"
    assert installed.meta["trained_as"] == checkpoint["meta"]["name"] and "context_prior" in installed.meta
    wrong = runner.invoke(main, [*base, "--first-step", "x", "--out", str(tmp_path / "x")])
    assert wrong.exit_code == 2 and "--first-step needs --topology two-step" in wrong.output
    lacking = runner.invoke(main, [*base[:6], "1", *base[7:], "--topology", "two-step", "--out", str(tmp_path / "f1")])
    assert lacking.exit_code == 1 and "speech among the training speakers, which the neutral-" in lacking.stderr
