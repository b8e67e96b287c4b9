"""Training pieces: manifests, folds, metrics, and a one-epoch run whose checkpoint analyses files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sercli.cli import main
from sercli.corpora import CorpusError, assign_folds, read_folds, read_manifest, validation_speakers
from sercli.model import ModelConfig
from sercli.dataset import SegmentSet, normalise_contexts
from sercli.metrics import accuracies
from sercli.train import TrainConfig, override
from sercli.weights import load_model

from conftest import SHARED_DATA, needs_shared_data


def test_manifest_reader(corpus):
    utterances = read_manifest(corpus / "manifest.csv")
    assert len(utterances) == 8
    assert {u.label for u in utterances} == {"angry", "happy", "neutral", "sad"}
    assert all(u.corpus == "toy" and u.path.startswith(str(corpus)) for u in utterances)
    assert all(u.voice is None for u in utterances)  # no gender column


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
                                  "--device", "cpu", "--set", "summary=last", "--set", "label_smoothing=0"])
    assert result.exit_code == 0, result.output
    assert load_model(out / "fold1" / "model.pt", device="cpu").net.config.summary == "last"
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    assert metrics["test"]["utterance"]["count"] == 4  # s1 and s2, two utterances each
    report = (out / "results.md").read_text()
    assert sum(line.startswith("| fold1 | ") for line in report.splitlines()) == 1
    assert "--fold 1" in report and "--epochs 1" in report and "--set summary=last --set label_smoothing=0" in report
    analysed = runner.invoke(main, ["analyze", "-m", str(out / "fold1" / "model.pt"), str(example), "-q"])
    assert analysed.exit_code == 0, analysed.stderr
    assert len(analysed.stdout.strip().splitlines()) == 1 + 5
    # A rerun finds the fold done and does not train again.
    again = runner.invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds",
                                 str(corpus / "folds.csv"), "--fold", "1", "--epochs", "1", "--out", str(out)])
    assert again.exit_code == 0 and "done already" in again.output
    # evaluate scores the saved fold model on the same test speakers: the same numbers as training.
    scored = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), "--corpus",
                                  f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
                                  "--fold", "1", "--device", "cpu", "--context-prior", "0", "-o",
                                  str(tmp_path / "scores.json")])
    assert scored.exit_code == 0, scored.output
    scores = json.loads((tmp_path / "scores.json").read_text())["runs"]["fold1"]
    for level in ("utterance", "segment"):
        assert scores[level]["confusion"] == metrics["test"][level]["confusion"]
    assert "| fold1 | 4 |" in scored.stdout
    everything = runner.invoke(main, ["evaluate", "--model", str(out / "fold1" / "model.pt"), "--corpus",
                                      f"manifest={corpus / 'manifest.csv'}"])
    assert everything.exit_code == 0 and "| all | 8 |" in everything.stdout
    missing = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), "--corpus",
                                   f"manifest={corpus / 'manifest.csv'}"])
    assert missing.exit_code == 2 and "needs --fold" in missing.stderr


def test_ravdess_reader_names(tmp_path):
    from sercli.corpora import read_ravdess

    actor = tmp_path / "Actor_07"
    actor.mkdir()
    for name in ["03-01-05-02-01-01-07.wav", "03-01-01-01-02-02-07.flac", "03-01-02-01-01-01-07.wav",  # calm: skipped
                 "03-02-03-01-01-01-07.wav"]:  # song: skipped
        (actor / name).write_bytes(b"")
    utterances = read_ravdess(tmp_path)
    assert [(Path(u.path).name, u.label, u.speaker) for u in utterances] == [
        ("03-01-01-01-02-02-07.flac", "neutral", "ravdess-07"), ("03-01-05-02-01-01-07.wav", "angry", "ravdess-07")]
    (actor / "notes-1.wav").write_bytes(b"")
    with pytest.raises(CorpusError, match="not a RAVDESS file name"):
        read_ravdess(tmp_path)
    with pytest.raises(CorpusError, match="no Actor_"):
        read_ravdess(tmp_path / "Actor_07")


def test_nemo_reader(tmp_path):
    from sercli.corpora import read_nemo

    (tmp_path / "samples").mkdir()
    for name in ["AB0_anger_1.wav", "AB0_fear_2.wav", "CD1_sadness_3.flac"]:
        (tmp_path / "samples" / name).write_bytes(b"")
    header = "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"
    (tmp_path / "data.tsv").write_text(header + "AB0_anger_1.wav\tanger\tA.\ta\t  AB0\tmale\t30\n"
                                       "AB0_fear_2.wav\tfear\tB.\tb\tAB0\tmale\t30\n"
                                       "CD1_sadness_3.wav\tsadness\tC.\tc\tCD1\tfemale\t22\n")
    utterances = read_nemo(tmp_path)  # the .wav named in data.tsv was re-encoded to .flac
    assert [(Path(u.path).name, u.label, u.speaker) for u in utterances] == [
        ("AB0_anger_1.wav", "angry", "nemo-AB0"), ("CD1_sadness_3.flac", "sad", "nemo-CD1")]
    (tmp_path / "samples" / "AB0_anger_1.wav").unlink()
    with pytest.raises(CorpusError, match=r"data\.tsv:2: audio file samples/AB0_anger_1\.wav does not exist"):
        read_nemo(tmp_path)


def fake_iemocap(root: Path) -> None:
    """Two sessions in the release layout, with label lines in the release's format."""
    dialogs = {
        1: {"Ses01F_impro01": [("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang"),
                               ("Ses01F_impro01_F001", "xxx"), ("Ses01F_impro01_M001", "exc")],
            "Ses01F_script01_1": [("Ses01F_script01_1_F000", "sad")]},
        2: {"Ses02M_impro03": [("Ses02M_impro03_M000", "hap"), ("Ses02M_impro03_F000", "sad")]},
    }
    for session, by_dialog in dialogs.items():
        labels = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        labels.mkdir(parents=True)
        for dialog, turns in by_dialog.items():
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for i, (turn, code) in enumerate(turns):
                lines += [f"[{6.29 + i:.4f} - {8.24 + i:.4f}]\t{turn}\t{code}\t[2.5000, 2.5000, 2.5000]",
                          "C-E2:\tNeutral;\t()", "A-E3:\tval 3; act 2; dom  2;\t()", ""]
                wav = root / f"Session{session}" / "sentences" / "wav" / dialog / f"{turn}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                wav.write_bytes(b"")
            (labels / f"{dialog}.txt").write_text("\n".join(lines))


def test_iemocap_reader(tmp_path):
    from sercli.corpora import read_iemocap

    fake_iemocap(tmp_path)
    improvised = read_iemocap(tmp_path)
    assert sorted((Path(u.path).stem, u.label, u.speaker, u.fold) for u in improvised) == [
        ("Ses01F_impro01_F000", "neutral", "Session1-F", 1), ("Ses01F_impro01_M000", "angry", "Session1-M", 1),
        ("Ses02M_impro03_F000", "sad", "Session2-F", 2), ("Ses02M_impro03_M000", "happy", "Session2-M", 2)]
    assert len(read_iemocap(tmp_path, scripted=True)) == 5
    merged = read_iemocap(tmp_path, excited_as_happy=True)
    assert ("Ses01F_impro01_M001", "happy") in {(Path(u.path).stem, u.label) for u in merged}
    (tmp_path / "Session2" / "sentences" / "wav" / "Ses02M_impro03" / "Ses02M_impro03_F000.wav").unlink()
    with pytest.raises(CorpusError, match="Ses02M_impro03_F000.wav does not exist"):
        read_iemocap(tmp_path)
    with pytest.raises(CorpusError, match="no Session1..Session5"):
        read_iemocap(tmp_path / "Session1")


def test_iemocap_protocol_swaps_validation_and_test_inside_each_session(tmp_path):
    from sercli.corpora import plan_splits, read_iemocap

    fake_iemocap(tmp_path)
    utterances = read_iemocap(tmp_path)
    splits = plan_splits(utterances, "all")  # auto: IEMOCAP alone validates inside the held-out session
    assert [(s.name, sorted(s.valid), sorted(s.test), s.role) for s in splits] == [
        ("fold1-valid-Session1-F", ["Session1-F"], ["Session1-M"], 0),
        ("fold1-valid-Session1-M", ["Session1-M"], ["Session1-F"], 1),
        ("fold2-valid-Session2-F", ["Session2-F"], ["Session2-M"], 0),
        ("fold2-valid-Session2-M", ["Session2-M"], ["Session2-F"], 1)]
    assert [s.name for s in plan_splits(utterances, "2")] == ["fold2-valid-Session2-F", "fold2-valid-Session2-M"]
    trained_outside = plan_splits(utterances, "1", validation="train")
    assert [(s.name, sorted(s.test)) for s in trained_outside] == [("fold1", ["Session1-F", "Session1-M"])]
    assert not trained_outside[0].valid & trained_outside[0].test


def test_plan_splits_errors_and_every_speaker(corpus):
    from sercli.corpora import plan_splits

    utterances = assign_folds(read_manifest(corpus / "manifest.csv"), read_folds(corpus / "folds.csv"))
    (everyone,) = plan_splits(utterances, "none")
    assert everyone.name == "all" and not everyone.test and everyone.valid
    for bad in ("3", "x"):
        with pytest.raises(CorpusError, match="expected all, none or one of"):
            plan_splits(utterances, bad)
    with pytest.raises(CorpusError, match="no folds"):
        plan_splits(read_manifest(corpus / "manifest.csv"), "all")


def test_report_gives_one_mean_per_validation_role(tmp_path):
    from sercli.experiment import _write_report
    from sercli.model import ModelConfig

    def run(fold, role, speaker, correct):
        confusion = [[correct, 4 - correct, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0], [0, 0, 0, 4]]
        level = {"wa": (12 + correct) / 16, "ua": (3 + correct / 4) / 4, "confusion": confusion}
        return {"fold": fold, "role": role, "validation_speakers": [speaker], "best_epoch": 1, "train_seconds": 60,
                "test": {"utterance": level, "segment": level}}

    results = {"fold1-valid-S1-F": run(1, 0, "S1-F", 4), "fold1-valid-S1-M": run(1, 1, "S1-M", 0),
               "fold2-valid-S2-F": run(2, 0, "S2-F", 2), "fold2-valid-S2-M": run(2, 1, "S2-M", 0)}
    _write_report(tmp_path, results, ModelConfig(), "cmd")
    summary = json.loads((tmp_path / "results.json").read_text())
    assert summary["mean"]["wa"] == pytest.approx((16 + 12 + 14 + 12) / 64)
    assert summary["by_role"]["S1-F, S2-F"]["wa"] == pytest.approx(30 / 32)
    assert summary["by_role"]["S1-M, S2-M"]["ua"] == pytest.approx(0.75)
    assert "| mean, validation S1-M, S2-M | 75.0 ± 0.0 | 75.0 ± 0.0 |" in (tmp_path / "results.md").read_text()


def test_unknown_corpus_kind_is_a_clear_error(tmp_path):
    from sercli.corpora import read_corpus

    with pytest.raises(CorpusError, match="NAME one of manifest, csv, ravdess, nemo, iemocap"):
        read_corpus(f"timit={tmp_path}")


@needs_shared_data
def test_corpus_readers_agree_with_shared_manifests():
    from sercli.corpora import read_nemo, read_ravdess

    def key(u):  # the voice type too: RAVDESS's from the actor's number, the manifests' from their gender column
        return (os.path.realpath(u.path), u.label, u.speaker, u.voice)

    from_layout = read_ravdess(SHARED_DATA / "ravdess") + read_nemo(SHARED_DATA / "nemo")
    from_manifests = read_manifest(SHARED_DATA / "ravdess" / "manifest.csv") + read_manifest(
        SHARED_DATA / "nemo" / "manifest.csv")
    assert sorted(map(key, from_layout)) == sorted(map(key, from_manifests))
    assert {u.voice for u in from_manifests} == {"female", "male"}


def test_train_reads_a_corpus_layout_and_reports_bad_ones(tmp_path):
    fake_iemocap(tmp_path / "iemocap")
    result = CliRunner().invoke(main, ["train", "--corpus", f"iemocap={tmp_path / 'iemocap'}", "--fold", "1",
                                       "--out", str(tmp_path / "run")])
    # The fake wavs are empty: reading the layout works, decoding then names the file in one line.
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("sercli: error: ") and ".wav: empty file" in result.stderr
    bad = CliRunner().invoke(main, ["train", "--corpus", f"nemo={tmp_path}", "--out", str(tmp_path / "run")])
    assert bad.exit_code == 2 and "data.tsv: cannot read" in bad.stderr


def test_warp_is_identity_at_factor_one_and_keeps_the_floor_past_the_end():
    from dataclasses import replace

    from sercli.train import TrainConfig, _augment, _warp

    torch.manual_seed(0)
    x = torch.rand(3, 40, 60)
    n = torch.tensor([60, 45, 20])
    for i, length in enumerate(n):
        x[i, :, length:] = 0
    generator = torch.Generator().manual_seed(1)
    still = replace(TrainConfig(), freq_warp=1e-9, time_stretch=1e-9)
    same, same_n = _warp(x, n, still, generator)
    torch.testing.assert_close(same, x, atol=1e-4, rtol=0)
    assert same_n.tolist() == n.tolist()
    stretched, new_n = _warp(x, n, replace(TrainConfig(), time_stretch=0.3, freq_warp=0.2), generator)
    assert (new_n != n).any() and (new_n <= 60).all()
    for i, length in enumerate(new_n):
        assert stretched[i, :, int(length):].abs().max() == 0
    masked, masked_n = _augment(x, n, replace(TrainConfig(), freq_warp=0.0, time_stretch=0.0), generator)
    assert masked_n.tolist() == n.tolist() and (masked <= x).all() and (masked == 0).sum() > (x == 0).sum()



def test_masks_are_one_band_per_spectrogram_within_its_frames():
    from dataclasses import replace

    from sercli.train import TrainConfig, _augment

    x = torch.rand(64, 40, 60) + 1
    n = torch.randint(5, 61, (64,), generator=torch.Generator().manual_seed(2))
    config = replace(TrainConfig(), freq_warp=0.0, time_stretch=0.0, time_mask=12, freq_mask=9)
    masked, _ = _augment(x, n, config, torch.Generator().manual_seed(3))
    for i in range(64):
        # masked whole columns inside the spectrogram's frames: the time band (past them is padding)
        frames = (masked[i, :, : int(n[i])] == 0).all(dim=0).nonzero().flatten()
        bins = (masked[i] == 0).all(dim=1).nonzero().flatten()
        for band, most, extent in ((frames, 12, int(n[i])), (bins, 9, 40)):
            if band.numel():
                assert band.numel() <= most and int(band[-1] - band[0]) + 1 == band.numel()
                assert int(band[0]) < extent
    assert (masked == 0).any(dim=1).any(dim=1).float().mean() > 0.8  # nearly every one is masked

def test_length_batches_cover_every_segment_once_with_similar_lengths():
    from sercli.train import _length_batches

    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 300, (1000,), generator=generator)
    order = torch.randperm(1000, generator=generator)
    batches = _length_batches(order, lengths, 32, generator)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = sum(float(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 60  # random batches of 32 would span about 250 frames


def test_length_batches_never_leave_a_lone_segment():
    """Batch norm cannot train on one segment: a remainder of one joins the batch before it,
    while any other remainder, and every full batch, stays as it was."""
    from sercli.train import _length_batches

    for n, sizes in ((16 * 32 + 1, [32] * 15 + [33]), (65, [32, 33]), (66, [32, 32, 2]), (1, [1])):
        generator = torch.Generator().manual_seed(0)
        batches = _length_batches(torch.randperm(n), torch.randint(20, 300, (n,)), 32, generator)
        assert sorted(len(b) for b in batches) == sorted(sizes)
        assert sorted(torch.cat(batches).tolist()) == list(range(n))


def test_weight_average_is_the_mean_of_the_epoch_end_weights(tmp_path):
    from dataclasses import replace

    from sercli.model import ModelConfig
    from sercli.train import TrainConfig, train_model

    generator = torch.Generator().manual_seed(0)
    n = 12
    data = SegmentSet(torch.rand(n, 200, 40, generator=generator).half(), torch.full((n,), 40),
                      torch.arange(n), torch.arange(n) % 4)
    model_config = ModelConfig(grid_hz=20, n_frames=40, lstm_hidden=8, dense=8)
    config = replace(TrainConfig(), epochs=1, swa_from=1, batch_size=4, time_mask=0, freq_mask=0,
                     freq_warp=0.0, time_stretch=0.0)
    state = tmp_path / "state.pt"
    quiet = lambda message: None  # noqa: E731
    train_model(model_config, data, data, config, torch.device("cpu"), state, log=quiet)
    first = torch.load(state, weights_only=True)["net"]
    net, _ = train_model(model_config, data, data, replace(config, epochs=2), torch.device("cpu"), state,
                         log=quiet)
    saved = torch.load(state, weights_only=True)
    second, average = saved["net"], saved["average"]
    assert int(average["n_averaged"]) == 2
    for name, value in first.items():
        if value.is_floating_point():
            torch.testing.assert_close(average[f"module.{name}"], (value + second[name]) / 2)
    kept = net.state_dict()  # the better of the two averages on validation
    for name, value in saved["best"]["state"].items():
        torch.testing.assert_close(kept[name], value)
    assert not torch.equal(first["head.0.weight"], second["head.0.weight"])
    with pytest.raises(ValueError, match="one weight average"):
        replace(TrainConfig(), ema=0.99, swa_from=3)


def test_workers_and_the_clean_memo_give_the_same_segments(corpus):
    from sercli.corpora import Split
    from sercli.evaluation import Condition, _corruption
    from sercli.features import FeatureConfig
    from sercli.dataset import build_segments

    utterances = read_manifest(corpus / "manifest.csv")
    features = FeatureConfig(denoise=True)  # pitch tracking too
    alone = build_segments(utterances, features, None, log=lambda _: None)
    shared = build_segments(utterances, features, None, log=lambda _: None, workers=2)
    for name in ("spectrograms", "n_frames", "utterance", "labels"):
        assert torch.equal(getattr(alone, name), getattr(shared, name)), name
    # Noisy: a picklable corruption through two processes, decoding through the memo on the second call.
    split = Split("fold-1", 1, frozenset(), frozenset(u.speaker for u in utterances))
    corrupt, key = _corruption(Condition("babble", 0.0, None, 3), utterances, split, utterances, {})
    clean: dict = {}
    first = build_segments(utterances, features, None, lambda _: None, corrupt, key, workers=2, clean=clean)
    assert set(clean) == {u.path for u in utterances}
    clean = {path: (samples, regions) for path, (samples, regions) in clean.items()}
    again = build_segments(utterances, features, None, lambda _: None, corrupt, key, clean=clean)
    assert torch.equal(first.spectrograms, again.spectrograms) and torch.equal(first.n_frames, alone.n_frames)
    assert not torch.equal(first.spectrograms, alone.spectrograms)


def test_settings_override_typed_fields_and_refuse_bad_values(corpus, tmp_path):
    config = override(TrainConfig(), {"weight_decay": "1e-4", "class_weights": "false", "seed": "3", "summary": "last"})
    assert (config.weight_decay, config.class_weights, config.seed) == (1e-4, False, 3)
    assert override(ModelConfig(), {"summary": "last", "lr": "1"}).summary == "last"
    for bad in ({"seed": "x"}, {"class_weights": "maybe"}, {"schedule": "linear"}):
        with pytest.raises(ValueError):
            override(TrainConfig(), bad)
    base = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--out", str(tmp_path / "run")]
    for setting, message in (("bogus=1", "bogus"), ("epochs=3", "epochs"), ("context_norm=false", "context_norm"), ("summary", "summary"),
                             ("summary=first", "summary must be")):
        result = CliRunner().invoke(main, [*base, "--set", setting])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_contexts_get_zero_mean_unit_variance_per_bin_inside_their_segments():
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 4, 6, generator=generator) * 10 + torch.arange(4)[None, :, None]).half()
    n_frames = torch.tensor([6, 3, 6, 2, 5])
    utterances = [SimpleNamespace(speaker=s, talker=s) for s in ("a", "a", "b", "b")]  # segments 3 and 4: one utterance
    data = SegmentSet(x, n_frames, torch.tensor([0, 1, 2, 3, 3]), torch.zeros(5, dtype=torch.long))
    for by, groups in (("speaker", [[0, 1], [2, 3, 4]]), ("utterance", [[0], [1], [2], [3, 4]])):
        out = normalise_contexts(data, utterances, by).spectrograms
        for group in groups:
            frames = torch.cat([out[i, :, : n_frames[i]].float() for i in group], dim=1)
            assert torch.allclose(frames.mean(dim=1), torch.zeros(4), atol=2e-3)
            assert torch.allclose(frames.std(dim=1, unbiased=False), torch.ones(4), atol=2e-3)
        assert out[1, :, 3:].abs().max() == 0 and out[3, :, 2:].abs().max() == 0  # nothing past the ends
    # a prior of many frames pulls a context's statistics to its own
    prior = (np.full(4, 100.0), np.full(4, 1.0), 1e9)
    pulled = normalise_contexts(data, utterances, "speaker", prior).spectrograms.float()
    assert torch.allclose(pulled[0, :, :6], x[0].float() - 100.0, atol=0.1)
    with pytest.raises(ValueError):
        normalise_contexts(data, utterances, "file")


def test_context_normalised_training_stores_its_prior_and_evaluates_by_speaker_or_utterance(corpus, tmp_path, example):
    out = tmp_path / "run"
    runner = CliRunner()
    data = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"), "--fold", "1"]
    trained = runner.invoke(main, ["train", *data, "--epochs", "1", "--out", str(out), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.features.context_norm and len(model.meta["context_prior"]["mean"]) == model.features.n_bins
    assert min(model.meta["context_prior"]["variance"]) > 0
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    scores = {}
    for context in ("speaker", "utterance"):
        result = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), *data, "--device", "cpu",
                                      "--precision", "bf16" if model.precision == "bf16" else "fp32",
                                      "--context", context, "--context-prior", "0", "-o", str(tmp_path / "s.json")])
        assert result.exit_code == 0, result.output
        scores[context] = json.loads((tmp_path / "s.json").read_text())["runs"]["fold1"]["segment"]
    # by speaker without a prior is exactly how training normalised its test speakers
    assert scores["speaker"]["confusion"] == metrics["test"]["segment"]["confusion"]
    assert sum(map(sum, scores["utterance"]["confusion"])) == sum(map(sum, scores["speaker"]["confusion"]))
    analysed = runner.invoke(main, ["analyze", "-m", str(out / "fold1" / "model.pt"), str(example), "-q"])
    assert analysed.exit_code == 0 and len(analysed.stdout.strip().splitlines()) == 1 + 5


def test_training_by_utterance_context_is_what_evaluate_scores_for_clips_alone(corpus, tmp_path, example):
    out = tmp_path / "run"
    runner = CliRunner()
    data = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"), "--fold", "1"]
    trained = runner.invoke(main, ["train", *data, "--epochs", "1", "--out", str(out), "--device", "cpu",
                                   "--context", "utterance"])
    assert trained.exit_code == 0, trained.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.meta["training"]["context"] == "utterance" and "--context utterance" in model.meta["training"]["command"]
    assert model.features.context_window_s == 0.0  # analysis standardises each segment by itself and the prior
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    result = runner.invoke(main, ["evaluate", "--model", str(out / "{run}" / "model.pt"), *data, "--device", "cpu",
                                  "--precision", "bf16" if model.precision == "bf16" else "fp32",
                                  "--context", "utterance", "-o", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    # training's test view is evaluate's clip-alone view with its default 10 s prior, segment for segment
    scores = json.loads((tmp_path / "s.json").read_text())["runs"]["fold1"]["segment"]
    assert scores["confusion"] == metrics["test"]["segment"]["confusion"]
    analysed = runner.invoke(main, ["analyze", "-m", str(out / "fold1" / "model.pt"), str(example), "-q"])
    assert analysed.exit_code == 0 and len(analysed.stdout.strip().splitlines()) == 1 + 5
    refused = runner.invoke(main, ["train", *data, "--out", str(tmp_path / "r"), "--context", "utterance",
                                   "--no-context-norm"])
    assert refused.exit_code == 2 and "--context utterance needs --context-norm" in refused.output
    refused = runner.invoke(main, ["train", *data, "--out", str(tmp_path / "r"), "--context", "utterance",
                                   "--set", "context_window_s=30"])  # it would be overridden silently
    assert refused.exit_code == 2 and "no --set context_window_s" in refused.output
    assert not (tmp_path / "r").exists()


def test_noise_augmented_training_records_its_noise_and_caches_a_noisy_copy(corpus, tmp_path, run_ffmpeg):
    noise = tmp_path / "noise" / "pink"
    noise.mkdir(parents=True)
    run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=16000:duration=2", str(noise / "a.wav"))
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--epochs", "1", "--device", "cpu", "--cache", str(cache), "--workers", "1"]
    runner = CliRunner()
    result = runner.invoke(main, args + ["--fold", "none", "--out", str(out), "--augment-noise", "babble",
                                         "--augment-noise", str(tmp_path / "noise"), "--augment-snr", "0:10"])
    assert result.exit_code == 0, result.output
    meta = load_model(out / "all" / "model.pt", device="cpu").meta["training"]
    assert meta["noise_augmentation"] == {"sources": ["babble", str(noise)], "snr_db": [0.0, 10.0], "share": 0.5,
                                          "seed": 0}
    assert "--augment-noise babble --augment-noise" in (out / "results.md").read_text()
    assert len(list(cache.glob("segments-*.pt"))) == 2  # the clean speech and the training speakers' noisy copy
    # Fold 1 trains on one speaker's two utterances: too few talkers for babble, said in one line.
    few = runner.invoke(main, args + ["--fold", "1", "--out", str(tmp_path / "few"), "--augment-noise", "babble"])
    assert few.exit_code == 1 and "babble needs at least 6 training utterances, there are 2" in few.stderr
    for bad, message in [(["--augment-noise", str(tmp_path / "none")], "not a folder"),
                         (["--augment-noise", "babble", "--augment-snr", "loud"], "expected LOW:HIGH"),
                         (["--augment-noise", "babble", "--augment-snr", "20:0"], "runs backwards")]:
        refused = runner.invoke(main, args + ["--fold", "none", "--out", str(tmp_path / "bad")] + bad)
        assert refused.exit_code == 2 and message in refused.stderr, refused.output


def test_noisy_copy_mixes_each_utterance_once_in_range_from_training_talkers(corpus):
    from sercli.corpora import Split
    from sercli.dataset import split_sets
    from sercli.experiment import NoiseAugmentation, _noisy_copy
    from sercli.noise import NoisyUtterances
    from sercli.features import FeatureConfig
    from sercli.noise import active_speech_power
    from sercli.audio import load_audio
    from sercli.dataset import build_segments

    utterances = read_manifest(corpus / "manifest.csv")
    features = FeatureConfig()
    data = build_segments(utterances, features, None, log=lambda _: None)
    split = Split("x", None, frozenset({"s4"}), frozenset())
    train_set = split_sets(data, np.array([u.speaker for u in utterances]), split)[0]
    augmentation = NoiseAugmentation(("babble",), (0.0, 10.0), 1.0, seed=5)
    decoded: dict = {}
    noisy = _noisy_copy(utterances, split, features, augmentation, train_set, None, lambda _: None, None, decoded)
    assert noisy.shape == train_set.spectrograms.shape and not torch.equal(noisy, train_set.spectrograms)
    assert {u.speaker for u in utterances if u.path in decoded} == {"s1", "s2", "s3"}  # never the test speaker
    # Each mixture lands inside the SNR range, and the same seed gives the same mixture.
    pool = [decoded[u.path][0] for u in utterances[:6]]
    augment = NoisyUtterances([u.path for u in utterances], augmentation.sources, augmentation.snr_db,
                              augmentation.seed, "augment", pool)
    for i, u in enumerate(utterances[:4]):
        clean = load_audio(u.path)
        added = augment(i, clean) - clean
        snr = 10 * np.log10(active_speech_power(clean) / np.mean(added.astype(np.float64) ** 2))
        assert -0.01 <= snr <= 10.01
        assert np.array_equal(augment(i, clean), augment(i, clean))
    with pytest.raises(ValueError, match="share"):
        NoiseAugmentation(share=0.0)


def test_training_steps_take_the_noisy_copy_at_the_asked_share(monkeypatch):
    from dataclasses import replace

    import sercli.train as train_module
    from sercli.train import TrainConfig, train_model

    n = 64
    clean = SegmentSet(torch.zeros(n, 200, 40).half(), torch.full((n,), 40), torch.arange(n), torch.arange(n) % 4)
    noisy = torch.ones(n, 200, 40).half()
    seen: list[torch.Tensor] = []
    real_augment = train_module._augment

    def record(x, n_frames, config, generator):
        seen.append(x.mean(dim=(1, 2)))  # 1 for a noisy copy, 0 for a clean segment
        return real_augment(x, n_frames, config, generator)

    monkeypatch.setattr(train_module, "_augment", record)
    model_config = ModelConfig(grid_hz=20, n_frames=40, lstm_hidden=8, dense=8)
    config = replace(TrainConfig(), epochs=1, swa_from=0, batch_size=16)
    quiet = lambda message: None  # noqa: E731
    shares = {}
    for share in (1.0, 0.5):
        seen.clear()
        train_model(model_config, clean, clean, config, torch.device("cpu"), log=quiet, noisy=noisy, noisy_share=share)
        means = torch.cat(seen)
        assert len(means) == n and bool(((means == 0) | (means == 1)).all())
        shares[share] = float(means.mean())
    assert shares[1.0] == 1.0 and 0.3 < shares[0.5] < 0.7
    with pytest.raises(ValueError, match="noisy copy of shape"):
        train_model(model_config, clean, clean, config, torch.device("cpu"), log=quiet, noisy=noisy[:3],
                    noisy_share=0.5)


# --------------------------------------------------------------------------- sercli.toml


def test_train_fold_all_from_sercli_toml_with_command_line_options_winning(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sercli.toml").write_text(
        "[train]\n"
        f'corpus = ["manifest={corpus / "manifest.csv"}"]\n'
        f'folds = "{corpus / "folds.csv"}"\n'
        'out = "runs/x"\n'
        "epochs = 5\n"
        'device = "cpu"\n'
        "context_norm = false\n"
        'set = ["lstm_hidden=16", "dense=16"]\n')
    result = CliRunner().invoke(main, ["train", "--fold", "all", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "x"
    assert sorted(p.name for p in out.glob("fold*")) == ["fold1", "fold2"]
    report = (out / "results.md").read_text()
    assert "--epochs 1 " in report and "--epochs 5" not in report  # the command line wins
    assert "--no-context-norm" in report and "--set lstm_hidden=16 --set dense=16" in report
    assert f"--corpus manifest={corpus / 'manifest.csv'}" in report
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.net.config.lstm_hidden == 16 and not model.features.context_norm


def test_set_pairs_on_the_command_line_add_to_the_config_files_not_replace_them(corpus, tmp_path):
    config = tmp_path / "recipe.toml"
    config.write_text('[train]\ncontext_norm = false\nset = ["lstm_hidden=16", "dense=16"]\n')
    out = tmp_path / "runs"
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--corpus", f"manifest={corpus / 'manifest.csv'}",
                                       "--folds", str(corpus / "folds.csv"), "--fold", "1", "--epochs", "1",
                                       "--device", "cpu", "--out", str(out), "--set", "dense=8"])
    assert result.exit_code == 0, result.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert (model.net.config.lstm_hidden, model.net.config.dense) == (16, 8)  # the file's, then the name given again


def test_train_config_file_elsewhere_and_its_mistakes(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(main, ["train", "--fold", "all"])
    assert missing.exit_code == 2
    assert "--corpus and --out missing" in missing.stderr and "[train]" in missing.stderr
    assert 'corpus = ["manifest=' in missing.stderr and "Traceback" not in missing.stderr
    config = tmp_path / "elsewhere" / "run.toml"
    config.parent.mkdir()
    config.write_text(f'[train]\ncorpus = "manifest={corpus / "manifest.csv"}"\n')
    no_out = runner.invoke(main, ["train", "--config", str(config)])
    assert no_out.exit_code == 2 and "--out missing" in no_out.stderr and "--corpus" not in no_out.stderr
    for text, expected in (('[train]\nepoch = 3\n', "has no option 'epoch'"),
                           ('[train]\nepochs = "many"\n', "epochs = 'many'"),
                           ('[train]\ntopology = "cnn9"\n', "topology = 'cnn9'"),
                           ('[train\n', "not valid TOML"),
                           ('[analyze]\nformat = "json"\n', "no [train] table")):
        config.write_text(text)
        result = runner.invoke(main, ["train", "--config", str(config)])
        assert result.exit_code == 2, (text, result.output)
        assert str(config) in result.stderr and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    absent = runner.invoke(main, ["train", "--config", str(tmp_path / "none.toml")])
    assert absent.exit_code == 2 and "cannot read" in absent.stderr


def _speaker_corpus(n_speakers: int = 3, seed: int = 0) -> tuple[SegmentSet, torch.Tensor]:
    """Segments of speakers of very different sizes (speaker s has 4 * 2**s utterances of one
    segment each, every class alike), and each utterance's speaker id."""
    generator = torch.Generator().manual_seed(seed)
    speakers = torch.cat([torch.full((4 * 2 ** s,), s) for s in range(n_speakers)])
    n = len(speakers)
    data = SegmentSet(torch.rand(n, 200, 40, generator=generator).half(), torch.full((n,), 40),
                      torch.arange(n), torch.arange(n) % 4)
    return data, speakers


def test_speaker_balance_gives_every_speakers_every_class_the_same_weight():
    from sercli.train import _Training

    data, speakers = _speaker_corpus()
    model_config = ModelConfig(grid_hz=20, n_frames=40, lstm_hidden=8, dense=8)
    balanced = _Training(model_config, data, TrainConfig(balance="speaker"), torch.device("cpu"), None, 0.0,
                         speakers[data.utterance])
    cells = speakers * 4 + data.labels
    totals = torch.zeros(int(cells.max()) + 1).index_add_(0, cells, balanced.sample_weight)
    torch.testing.assert_close(totals, torch.full_like(totals, totals.mean().item()))  # 12 cells alike
    assert balanced.sample_weight.mean().item() == pytest.approx(1.0)
    # the batch loss is the sample-weighted mean: a segment of the smallest speaker weighs 4x one of the largest
    logits, y = torch.randn(len(cells), 4, generator=torch.Generator().manual_seed(1)), data.labels
    index = torch.arange(len(cells))
    plain = torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)
    w = balanced.sample_weight
    torch.testing.assert_close(balanced._loss(logits, y, index), (plain * w).sum() / w.sum())
    assert w[0] / w[-1] == pytest.approx(4.0)
    # by class (the default), one loss for the batch as before: cross-entropy weighted per class
    by_class = _Training(model_config, data, TrainConfig(), torch.device("cpu"), None, 0.0)
    assert by_class.sample_weight is None
    torch.testing.assert_close(by_class._loss(logits, y, index),
                               torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1,
                                                                 weight=by_class.loss_fn.weight))
    # oversampling draws each speaker's each class equally often
    drawn = _Training(model_config, data, TrainConfig(balance="speaker", oversample=True), torch.device("cpu"),
                      None, 0.0, speakers[data.utterance])
    picks = torch.multinomial(drawn.cell_weight, 120_000, replacement=True, generator=torch.Generator().manual_seed(2))
    shares = torch.bincount(cells[picks]).float() / 120_000
    assert drawn.sample_weight is None and torch.allclose(shares, torch.full_like(shares, 1 / 12), atol=0.01)
    # part of the way: a cell's total weight is its size^(1 - s) over its class's size^(1 - s)
    for strength in (0.0, 0.5):
        halfway = _Training(model_config, data, TrainConfig(balance="speaker", balance_strength=strength),
                            torch.device("cpu"), None, 0.0, speakers[data.utterance])
        totals = torch.zeros(int(cells.max()) + 1).index_add_(0, cells, halfway.sample_weight)
        sizes = torch.bincount(cells).float()
        expected = sizes ** (1 - strength) / torch.bincount(data.labels).float()[torch.arange(len(sizes)) % 4] ** (1 - strength)
        torch.testing.assert_close(totals / totals.sum(), expected / expected.sum())
    half = halfway.sample_weight  # strength 0.5 sits between the class and the speaker balance
    assert w[-1] < half[-1] and half[0] < w[0]
    with pytest.raises(ValueError, match="balance_strength"):
        TrainConfig(balance_strength=1.5)


def test_group_mean_ua_averages_each_speakers_own_ua():
    from sercli.metrics import group_mean_ua

    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    data = SegmentSet(torch.zeros(10, 2, 2), torch.ones(10), torch.arange(10), labels)
    speakers = torch.tensor([0] * 8 + [1] * 2)
    predicted = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 1, 1, 2, 3, 1, 0]), 4).float()
    # speaker 0: recalls angry 1/2, happy 1, neutral 1, sad 1 -> 0.875; speaker 1: both wrong -> 0
    assert group_mean_ua(predicted, data, speakers) == pytest.approx((0.875 + 0.0) / 2)
    empty = data.subset(torch.zeros(10, dtype=torch.bool))  # no validation speech: 0, as UA is, and no warning
    assert group_mean_ua(predicted[:0], empty, speakers[:0]) == 0.0


def test_speaker_balanced_training_selects_on_the_validation_speakers_mean_ua(tmp_path):
    from dataclasses import replace

    from sercli.metrics import group_mean_ua
    from sercli.train import predict_segments, train_model

    data, speakers = _speaker_corpus()
    model_config = ModelConfig(grid_hz=20, n_frames=40, lstm_hidden=8, dense=8)
    config = replace(TrainConfig(), epochs=3, select_from=1, swa_from=0, batch_size=8, time_mask=0, freq_mask=0,
                     freq_warp=0.0, time_stretch=0.0, balance="speaker")
    quiet = lambda message: None  # noqa: E731
    with pytest.raises(ValueError, match="speaker"):
        train_model(model_config, data, data, config, torch.device("cpu"), log=quiet)
    net, info = train_model(model_config, data, data, config, torch.device("cpu"), log=quiet, groups=speakers)
    history = info["history"]
    assert all("valid_group_ua" in h for h in history)
    best = max(history, key=lambda h: h["valid_group_ua"])
    assert info["best_epoch"] == best["epoch"] and info["best_score"] == best["valid_group_ua"]
    assert info["best_valid_wa"] == best["valid_wa"]  # what `sercli models` shows as VALIDATION WA
    kept = predict_segments(net, data, torch.device("cpu"), info["bf16"])
    assert group_mean_ua(kept, data, speakers) == pytest.approx(best["valid_group_ua"])


@pytest.mark.parametrize("balance", ["speaker", "corpus"])
def test_train_balance_option_reaches_the_checkpoint(corpus, tmp_path, balance, monkeypatch):
    import sercli.experiment

    seen = []
    original = sercli.experiment.train_model

    def spy(*args, groups=None, **kwargs):
        seen.append(groups)
        return original(*args, groups=groups, **kwargs)

    monkeypatch.setattr(sercli.experiment, "train_model", spy)
    header, *rows = (corpus / "manifest.csv").read_text().splitlines()
    two = tmp_path / "two.csv"  # the toy corpus as two: speakers s1 and s3 in corpus a, s2 and s4 in b
    two.write_text("\n".join([header] + [f"{corpus / path},{emotion},{speaker},{'a' if speaker in ('s1', 's3') else 'b'}"
                                         for path, emotion, speaker, _ in (r.split(",") for r in rows)]) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--corpus", f"manifest={two}", "--folds",
                                       str(corpus / "folds.csv"), "--fold", "1", "--epochs", "1", "--out", str(out),
                                       "--device", "cpu", "--balance", balance])
    assert result.exit_code == 0, result.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.meta["training"]["config"]["balance"] == balance
    assert f"--balance {balance}" in model.meta["training"]["command"]
    metrics = json.loads((out / "fold1" / "metrics.json").read_text())
    assert "valid_group_ua" in metrics["history"][0]
    # each utterance's group: four speakers, or the two corpora
    (groups,) = seen
    assert len(groups) == 8 and len(torch.unique(groups)) == (4 if balance == "speaker" else 2)
    refused = CliRunner().invoke(main, ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds",
                                        str(corpus / "folds.csv"), "--out", str(tmp_path / "r"), "--set",
                                        "balance=speaker"])  # it has its own option
    assert refused.exit_code == 2 and "balance" in refused.output


# --------------------------------------------------------------------------- context mix


def _mix_corpus():
    """Raw segments of three speakers (two utterances each, one of two segments), their
    utterances, speaker ids per utterance, a noisy copy and the speaker-normalised sets."""
    from types import SimpleNamespace

    generator = torch.Generator().manual_seed(1)
    owner = torch.tensor([0, 1, 1, 2, 3, 4, 5])
    level = torch.tensor([0.0, 0.0, 5.0, 5.0, -3.0, -3.0])[owner]  # each speaker at their own level
    raw = (torch.randn(7, 4, 8, generator=generator) * 3 + level[:, None, None] + torch.arange(4)[None, :, None])
    n_frames = torch.tensor([8, 5, 3, 8, 6, 7, 4])
    raw = (raw * (torch.arange(8)[None, :] < n_frames[:, None])[:, None, :]).half()
    utterances = [SimpleNamespace(speaker=s, talker=s) for s in ("a", "a", "b", "b", "c", "c")]
    data = SegmentSet(raw, n_frames, owner, torch.tensor([0, 1, 1, 2, 3, 0, 1]))
    noisy = SegmentSet((raw.float() * 0.5 + 2.0).half(), n_frames, owner, data.labels)
    return data, noisy, utterances, torch.tensor([0, 0, 1, 1, 2, 2])


def test_context_mix_moves_speaker_normalised_segments_to_their_utterance_or_a_scene_context():
    from dataclasses import replace

    from sercli.context import moments_with_prior
    from sercli.audio import FRAMES_PER_S
    from sercli.train import SCENE_S, ContextMix

    data, noisy, utterances, speaker_ids = _mix_corpus()
    prior = (np.linspace(0, 3, 4), np.full(4, 9.0), 1000.0)
    mix = ContextMix.build(data, speaker_ids, prior, noisy.spectrograms)
    by_speaker = normalise_contexts(data, utterances, "speaker").spectrograms.float()
    index, n = torch.arange(7), data.n_frames
    config = TrainConfig()

    def moved(x, heard, **shares):
        return mix.apply(x, index, n, heard, replace(config, **shares), torch.Generator().manual_seed(0))

    assert torch.equal(moved(by_speaker, None), by_speaker)  # no share: untouched
    # every segment to its own utterance's context with the prior: a clip analysed alone
    clip = normalise_contexts(data, utterances, "utterance", prior).spectrograms.float()
    assert torch.allclose(moved(by_speaker, None, context_utterance=1.0), clip, atol=0.02)
    noisy_by_speaker = normalise_contexts(noisy, utterances, "speaker").spectrograms.float()
    noisy_clip = normalise_contexts(noisy, utterances, "utterance", prior).spectrograms.float()
    heard = torch.tensor([True, False, True, False, True, False, True])
    mixed_in = torch.where(heard[:, None, None], noisy_by_speaker, by_speaker)
    assert torch.allclose(moved(mixed_in, heard, context_utterance=1.0),
                          torch.where(heard[:, None, None], noisy_clip, clip), atol=0.02)
    # a scene: the speaker's and another speaker's per-frame moments, mixed at the drawn share
    scene = moved(by_speaker, None, context_pair=1.0)
    draws = torch.Generator().manual_seed(0)
    torch.rand(7, generator=draws)
    partner = torch.randint(0, 2, (7,), generator=draws)
    share = 0.3 + 0.4 * torch.rand(7, generator=draws, dtype=torch.float64)
    speaker = speaker_ids[data.utterance]
    partner = partner + (partner >= speaker).long()
    assert bool((partner != speaker).all())
    frames = {s: torch.cat([data.spectrograms[i, :, : n[i]].double() for i in range(7) if speaker[i] == s], dim=1)
              for s in range(3)}
    for i in range(7):
        a, b, w = frames[int(speaker[i])], frames[int(partner[i])], float(share[i])
        mean = w * a.mean(dim=1) + (1 - w) * b.mean(dim=1)
        square = w * a.square().mean(dim=1) + (1 - w) * b.square().mean(dim=1)
        scene_frames = SCENE_S * FRAMES_PER_S
        m, s = moments_with_prior(scene_frames, scene_frames * mean.numpy(), scene_frames * square.numpy(), prior)
        expected = (data.spectrograms[i, :, : n[i]].double() - torch.from_numpy(m)[:, None]) / torch.from_numpy(s)[:, None]
        assert torch.allclose(scene[i, :, : n[i]].double(), expected, atol=0.02)
        assert scene[i, :, n[i]:].abs().sum() == 0  # nothing past the end
    # shares split the batch: some of each view at a half and a quarter
    big = torch.arange(400) % 7
    views = mix.apply(by_speaker[big], big, n[big], None, replace(config, context_utterance=0.5, context_pair=0.25),
                      torch.Generator().manual_seed(3))
    same = (views - by_speaker[big]).abs().flatten(1).max(dim=1).values < 1e-6
    as_clip = (views - clip[big]).abs().flatten(1).max(dim=1).values < 0.02
    assert 0.15 < float(same.float().mean()) < 0.35 and 0.4 < float(as_clip.float().mean()) < 0.6
    with pytest.raises(ValueError, match="shares"):
        TrainConfig(context_utterance=0.7, context_pair=0.5)


def test_context_mix_training_needs_its_contexts_and_speaker_features(corpus, tmp_path):
    from sercli.train import train_model

    data, _, _, _ = _mix_corpus()
    model_config = ModelConfig(grid_hz=20, n_frames=8, lstm_hidden=8, dense=8)
    with pytest.raises(ValueError, match="mix"):
        train_model(model_config, data, data, TrainConfig(context_pair=0.5), torch.device("cpu"), log=lambda _: None)
    runner = CliRunner()
    common = ["--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"), "--fold", "1",
              "--epochs", "1", "--device", "cpu"]
    out = tmp_path / "run"
    trained = runner.invoke(main, ["train", *common, "--out", str(out), "--set", "context_utterance=0.3",
                                   "--set", "context_pair=0.3"])
    assert trained.exit_code == 0, trained.output
    model = load_model(out / "fold1" / "model.pt", device="cpu")
    assert model.meta["training"]["config"]["context_pair"] == 0.3
    refused = runner.invoke(main, ["train", *common, "--out", str(tmp_path / "r"), "--context", "utterance",
                                   "--set", "context_pair=0.3"])
    assert refused.exit_code != 0 and "need --context-norm and --context speaker" in refused.output
    assert "Traceback" not in refused.output


def test_speed_copies_train_as_voices_of_their_own_and_never_validate_or_test(corpus, tmp_path):
    from dataclasses import replace

    from sercli.corpora import Split
    from sercli.dataset import build_segments, split_sets
    from sercli.experiment import _build_by_copy
    from sercli.features import FeatureConfig

    utterances = read_manifest(corpus / "manifest.csv")
    fast = [replace(u, speed=1.25) for u in utterances]
    assert fast[0].key != utterances[0].key and fast[0].talker == "s1@speed=1.25" and utterances[0].talker == "s1"
    everyone = utterances + fast
    both = _build_by_copy(everyone, FeatureConfig(), None, lambda _: None, None)
    played = both.utterance >= len(utterances)
    assert torch.equal(both.utterance[~played], build_segments(utterances, FeatureConfig(), None,
                                                               log=lambda _: None).utterance)
    # played 1.25 times as fast: about 80% of the frames, cut by the same rules
    assert 0.7 < both.n_frames[played].sum() / both.n_frames[~played].sum() < 0.9
    speakers = np.array([u.speaker for u in everyone])
    copies = np.array([u.speed != 1 for u in everyone])
    split = Split("x", 1, frozenset({"s1", "s2"}), frozenset({"s3"}))
    train_set, valid_set, test_set = split_sets(both, speakers, split, copies)
    owners = lambda part: {everyone[i].talker for i in part.utterance.tolist()}  # noqa: E731
    assert owners(train_set) == {"s4", "s4@speed=1.25"}
    assert owners(valid_set) == {"s3"} and owners(test_set) == {"s1", "s2"}
    # each copy is standardised over its own speed's speech, not pooled with the recording
    normalised = normalise_contexts(both, everyone, "speaker").spectrograms.float()
    copy_rows = torch.nonzero(played).squeeze(1)
    s4_copy = [i for i in copy_rows.tolist() if everyone[int(both.utterance[i])].speaker == "s4"]
    frames = torch.cat([normalised[i, :, : int(both.n_frames[i])] for i in s4_copy], dim=1)
    assert torch.allclose(frames.mean(dim=1), torch.zeros(frames.shape[0]), atol=0.05)


def test_train_with_speed_copies_tests_the_same_speech_and_records_them(corpus, tmp_path):
    cache = tmp_path / "cache"
    args = ["train", "--corpus", f"manifest={corpus / 'manifest.csv'}", "--folds", str(corpus / "folds.csv"),
            "--fold", "1", "--epochs", "1", "--device", "cpu", "--cache", str(cache), "--workers", "1"]
    runner = CliRunner()
    plain = runner.invoke(main, args + ["--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    result = runner.invoke(main, args + ["--out", str(tmp_path / "fast"), "--augment-speed", "1.1",
                                         "--augment-speed", "0.9", "--augment-speed", "1"])
    assert result.exit_code == 0, result.output
    meta = load_model(tmp_path / "fast" / "fold1" / "model.pt", device="cpu").meta
    assert meta["training"]["speed_augmentation"] == [0.9, 1.1]
    assert "--augment-speed 1.1 --augment-speed 0.9" in (tmp_path / "fast" / "results.md").read_text()
    # the recorded speech's cache is reused; each speed adds one
    assert len(list(cache.glob("segments-*.pt"))) == 3
    tested = [json.loads((tmp_path / run / "fold1" / "metrics.json").read_text())["test"]["segment"]["confusion"]
              for run in ("plain", "fast")]
    assert sum(map(sum, tested[0])) == sum(map(sum, tested[1]))  # the same test segments: no copies among them
    plain_prior = load_model(tmp_path / "plain" / "fold1" / "model.pt", device="cpu").meta["context_prior"]
    assert np.allclose(meta["context_prior"]["mean"], plain_prior["mean"])  # the prior: recorded speech only
    refused = runner.invoke(main, args + ["--out", str(tmp_path / "bad"), "--augment-speed", "3"])
    assert refused.exit_code == 2 and "--augment-speed" in refused.output
