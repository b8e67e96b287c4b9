"""Training pieces: manifests, folds, metrics, and a one-epoch run whose checkpoint analyses files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from sercli.cli import main
from sercli.corpora import CorpusError, assign_folds, read_folds, read_manifest, validation_speakers
from sercli.train import accuracies

from conftest import SHARED_DATA, needs_shared_data


@pytest.fixture(scope="module")
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


def test_manifest_reader(corpus):
    utterances = read_manifest(corpus / "manifest.csv")
    assert len(utterances) == 8
    assert {u.label for u in utterances} == {"angry", "happy", "neutral", "sad"}
    assert all(u.corpus == "toy" and u.path.startswith(str(corpus)) for u in utterances)


def test_manifest_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,emotion\nx.wav,angry\n")
    with pytest.raises(CorpusError, match="lacks column"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("path,emotion,speaker\nmissing.wav,angry,a\n")
    with pytest.raises(CorpusError, match=r"m\.csv:2: audio file .*missing\.wav does not exist"):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(CorpusError, match="cannot read manifest"):
        read_manifest(tmp_path / "nope.csv")


def test_folds_keep_speakers_apart(corpus):
    utterances = assign_folds(read_manifest(corpus / "manifest.csv"), read_folds(corpus / "folds.csv"))
    for test_fold in (1, 2):
        held_out = validation_speakers(utterances, test_fold)
        test_speakers = {u.speaker for u in utterances if u.fold == test_fold}
        assert held_out and not held_out & test_speakers
    with pytest.raises(CorpusError, match="without a fold"):
        assign_folds(read_manifest(corpus / "manifest.csv"), {"s1": 1})


@needs_shared_data
def test_shared_manifests_and_folds_load():
    folds = read_folds(SHARED_DATA / "folds.csv")
    utterances = read_manifest(SHARED_DATA / "ravdess" / "manifest.csv") + read_manifest(
        SHARED_DATA / "nemo" / "manifest.csv")
    utterances = assign_folds(utterances, folds)
    assert len({u.speaker for u in utterances}) == 27
    for fold in range(1, 6):
        valid = validation_speakers(utterances, fold)
        assert not valid & {u.speaker for u in utterances if u.fold == fold}


def test_accuracies_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 0])
    scores = accuracies(truth, predicted)
    assert scores["wa"] == pytest.approx(5 / 8)
    assert scores["ua"] == pytest.approx((3 / 4 + 1 / 2 + 1 + 0) / 4)
    assert scores["confusion"][0] == [3, 1, 0, 0] and scores["confusion"][3] == [1, 0, 0, 0]


def test_one_epoch_training_run_then_analyze(corpus, tmp_path, example):
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds",
                                  str(corpus / "folds.csv"), "--fold", "1", "--epochs", "1", "--out", str(out),
                                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    assert metrics["test"]["utterance"]["count"] == 4  # s1 and s2, two utterances each
    report = (out / "results.md").read_text()
    assert sum(line.startswith("| 1 | ") for line in report.splitlines()) == 1
    assert "--fold 1" in report and "--epochs 1" in report
    analysed = runner.invoke(main, ["analyze", "-m", str(out / "fold1" / "model.pt"), str(example), "-q"])
    assert analysed.exit_code == 0, analysed.stderr
    assert len(analysed.stdout.strip().splitlines()) == 1 + 5
    # A rerun finds the fold done and does not train again.
    again = runner.invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds",
                                 str(corpus / "folds.csv"), "--fold", "1", "--epochs", "1", "--out", str(out)])
    assert again.exit_code == 0 and "done already" in again.output
