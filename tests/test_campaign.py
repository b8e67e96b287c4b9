"""The training campaign's plan (train/campaign.py) and the Table 2 summary (train/table2.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "train" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _settings(job) -> dict:
    """What sercli itself makes of a planned job's command line: the options it resolves to."""
    from sercli.cli import main

    args = job.argv[job.argv.index("sercli") + 1:]
    command = main.commands[args[0]]
    return command.make_context(args[0], args[1:], resilient_parsing=True).params


def test_plan_trains_what_each_table_needs_first_with_the_recipes_settings(tmp_path):
    campaign = _script("campaign")
    jobs = campaign.plan(Path("/d"), tmp_path, "cuda", 4, ["cnn-lstm-10hz-denoise", "table2", "two-step"], None)
    names = [j.name for j in jobs]
    for position, job in enumerate(jobs):  # every job is a valid sercli command, after all it needs
        assert all(names.index(need) < position for need in job.needs), job.name
        _settings(job)
    denoise = _settings(jobs[0])  # the modified predictor trains with babble, one fold per job
    assert denoise["denoise"] and denoise["augment_noises"] == ("babble",) and denoise["fold"] == "1"
    older = _settings(campaign.plan(Path("/d"), tmp_path, "cuda", 4, ["cnn-lstm-10hz-denoise"], None, "swa")[0])
    assert older["denoise"] and older["augment_noises"] == ()
    # Table 2 scores the normal model (taken from RUNS as it is) and the modified one, once the
    # modified one's folds are trained; the two-step jobs take their first step from RUNS too.
    table2 = next(j for j in jobs if j.name == "table2-0")
    assert table2.kind == "evaluate" and table2.needs == [f"cnn-lstm-10hz-denoise/fold{k}" for k in range(1, 6)]
    scored = _settings(table2)
    assert scored["snrs"] == (0.0,) and scored["model_specs"] == (
        str(tmp_path / "cnn-lstm-10hz" / "{run}" / "model.pt"), str(tmp_path / "cnn-lstm-10hz-denoise" / "{run}" / "model.pt"))
    two_step = _settings(next(j for j in jobs if j.name == "two-step/fold3"))
    assert two_step["topology"] == "two-step" and two_step["fold"] == "3"
    # Planned together, the two-step's fold waits for its first step; a quick trial runs one epoch.
    full = campaign.plan(Path("/d"), tmp_path, "cuda", 4, ["cnn-lstm-10hz", "two-step"], 1)
    assert next(j for j in full if j.name == "two-step/fold3").needs == ["cnn-lstm-10hz/fold3"]
    trial = _settings(next(j for j in full if j.name == "cnn-lstm-10hz/fold1"))
    assert trial["epochs"] == 1 and trial["average_from"] == 1
    plain = _settings(campaign.plan(Path("/d"), tmp_path, "cuda", 4, ["cnn-lstm-10hz"], None, "plain")[0])
    assert plain["average_from"] == 0 and "summary=last" in plain["settings"]
    # The shipped models: all speakers (--fold none), the default with babble, the two-step's
    # first step row 3's clean all-speaker model.
    shipping = {j.name: j for j in campaign.plan(Path("/d"), tmp_path, "cuda", 4, [
        "cnn-lstm-10hz-babble-all", "cnn-lstm-10hz-all", "two-step-all", "table2-babble"], None)}
    default = _settings(shipping["cnn-lstm-10hz-babble-all"])
    assert default["fold"] == "none" and default["augment_noises"] == ("babble",)
    assert default["out_dir"] == tmp_path / "cnn-lstm-10hz-babble"
    assert _settings(shipping["cnn-lstm-10hz-all"])["augment_noises"] == ()
    assert shipping["two-step-all"].needs == ["cnn-lstm-10hz-all"]
    first_step = _settings(shipping["two-step-all"])["first_step"]
    assert first_step.replace("{run}", "all") == str(tmp_path / "cnn-lstm-10hz" / "all" / "model.pt")
    noisy = shipping["table2-babble-5"]
    babble_default = str(tmp_path / "cnn-lstm-10hz-babble" / "{run}" / "model.pt")
    assert _settings(noisy)["model_specs"] == (
        babble_default, f"{babble_default}+{tmp_path / 'cnn-lstm-10hz-denoise' / '{run}' / 'model.pt'}")
    assert noisy.needs == [] and _settings(noisy)["snrs"] == (5.0,)


def test_table2_summary_means_and_gaps(tmp_path):
    def model(name, clean_ua, noisy_ua, snr=0, runs=("fold1",)):
        def scored(ua):
            return {"runs": {run: {"utterance": {"wa": ua, "ua": ua}} for run in runs}}

        conditions = {"clean": scored(clean_ua)}
        for noise, ua in noisy_ua.items():
            conditions[f"{noise} {snr} dB"] = scored(ua)
        return {"model": name, "conditions": conditions}

    first, second = tmp_path / "t0.json", tmp_path / "t5.json"
    first.write_text(json.dumps([model("n", 0.40, {"a": 0.20, "b": 0.30}), model("d", 0.38, {"a": 0.30, "b": 0.34})]))
    second.write_text(json.dumps(model("c", 0.50, {"a": 0.45, "b": 0.41}, snr=5)))  # one model: a dict, not a list
    out = subprocess.run([sys.executable, str(ROOT / "train" / "table2.py"), str(first), str(second), "--name", "d=dn"],
                         capture_output=True, text=True, check=True).stdout
    assert "| condition | n WA | n UA | dn WA | dn UA | c WA | c UA |" in out
    assert "| a 0 dB | 20.0 | 20.0 | 30.0 | 30.0 | | |" in out
    assert "| SNR | n | dn | c | dn - n | c - n | n clean - noisy | dn clean - noisy | c clean - noisy |" in out
    assert "| 0 dB (2 conditions) | 25.0 | 32.0 |  | +7.0 |  | 15.0 | 6.0 |  |" in out
    assert "| 5 dB (2 conditions) |  |  | 43.0 |  |  |  |  | 7.0 |" in out


def test_table2_joins_folds_scored_in_separate_files(tmp_path):
    """One fold per file (`sercli evaluate --fold N`): a cell is the mean over the folds of all
    files; a fold scored again counts once, as the later file has it; partial cells are noted."""
    def fold(name, ua, run):
        return {"model": "m", "conditions": {"clean": {"runs": {run: {"utterance": {"wa": ua, "ua": ua}}}},
                                             "a 0 dB": {"runs": {run: {"utterance": {"wa": ua / 2, "ua": ua / 2}}}}}}

    paths = []
    for k, (run, ua) in enumerate([("fold1", 0.40), ("fold2", 0.60), ("fold2", 0.50)]):
        paths.append(tmp_path / f"f{k}.json")
        paths[-1].write_text(json.dumps(fold("m", ua, run)))
    done = subprocess.run([sys.executable, str(ROOT / "train" / "table2.py"), *map(str, paths)],
                          capture_output=True, text=True, check=True)
    assert "| clean | 45.0 | 45.0 |" in done.stdout and "| a 0 dB | 22.5 | 22.5 |" in done.stdout
    assert done.stderr == ""
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "o", "conditions": {"clean": {"runs": {
        "fold1": {"utterance": {"wa": 0.3, "ua": 0.3}}}}}}))
    partial = subprocess.run([sys.executable, str(ROOT / "train" / "table2.py"), *map(str, paths), str(other)],
                             capture_output=True, text=True, check=True)
    assert "note: clean, o: mean of fold1 only" in partial.stderr
    same_folds = subprocess.run([sys.executable, str(ROOT / "train" / "table2.py"), *map(str, paths), str(other),
                                 "--run", "fold1"], capture_output=True, text=True, check=True)
    assert "| clean | 40.0 | 40.0 | 30.0 | 30.0 |" in same_folds.stdout and same_folds.stderr == ""


def test_run_jobs_follows_needs_and_outcomes(tmp_path):
    import time

    campaign = _script("campaign")
    py = [sys.executable, "-c"]
    jobs = [campaign.Job("a", [*py, "print('a')"], "train"),
            campaign.Job("b", [*py, "raise SystemExit(3)"], "train"),
            campaign.Job("c", [*py, "print('c')"], "train", ["b"]),
            campaign.Job("d", [*py, "print('table')"], "evaluate", ["a"], tmp_path / "d.md"),
            campaign.Job("e", [*py, "import time; time.sleep(60)"], "train")]
    now = time.monotonic()
    outcome = campaign.run_jobs(jobs, tmp_path, {"train": 2, "evaluate": 1}, now + 20, now + 6, lambda _: None)
    assert outcome == {"a": "done", "b": "failed (3)", "c": "skipped: a job it needs did not finish",
                       "d": "done", "e": "stopped at the deadline"}
    assert (tmp_path / "d.md").read_text() == "table\n" and (tmp_path / "logs" / "a.log").read_text() == "a\n"


def test_views_table_gathers_the_three_views_fold_by_fold(tmp_path):
    views = _script("views_table")

    def utterance(ua, by_corpus=None):
        run = {"utterance": {"wa": ua + 0.01, "ua": ua}}
        return {"runs": {"fold1": run | ({"by_corpus": by_corpus} if by_corpus else {})}}

    for fold, (speaker, clips, programmes) in {1: (0.50, 0.40, 0.30), 2: (0.60, 0.50, 0.50)}.items():
        document = utterance(speaker, {"a": {"ua": speaker - 0.1, "count": 5}, "b": {"ua": speaker + 0.1, "count": 7}})
        document["programmes"] = {"context_window_s": None, "music_snr_db": 15.0,
                                  "runs": {f"fold{fold}": {"wa": programmes, "ua": programmes}}}
        (tmp_path / f"fold{fold}-programmes.json").write_text(json.dumps(document))
        (tmp_path / f"fold{fold}-clips.json").write_text(json.dumps(utterance(clips)))
    (tmp_path / "fold3-clips.json.txt").write_text("not one of ours")
    text = views.table(tmp_path)
    assert "| speaker context (oracle) | 50.0 | 60.0 | 55.0 (56.0) |" in text
    assert "| clips alone | 40.0 | 50.0 | 45.0 (46.0) |" in text
    assert "| programmes | 30.0 | 50.0 | 40.0 (40.0) |" in text
    assert "- speaker context (oracle): a 45.0, b 65.0" in text
    (tmp_path / "fold2-clips.json").unlink()  # a fold scored in part: its mean is of the folds present
    assert "| clips alone | 40.0 |  | 40.0 (41.0) |" in views.table(tmp_path)


def test_vad_diagnosis_replays_the_detector_and_counts_what_it_finds(example):
    from types import SimpleNamespace

    import numpy as np

    from sercli.audio import load_audio
    from sercli.segment import SegmentationConfig, SpeechProbabilities, segment_audio

    diagnosis = _script("vad_under_music")
    speech = load_audio(str(example))
    samples = np.concatenate([speech, np.zeros(3 * 16000, dtype=np.float32)])  # 3 s of silence after
    vad = SpeechProbabilities()
    config = SegmentationConfig(threshold=0.3, neg_threshold=0.2)
    live = [(s.start_s, s.end_s) for s in segment_audio(samples, config, vad=vad)]
    vad.reset()
    probabilities = vad.feed(samples, final=True)
    replayed = [(s.start_s, s.end_s) for s in segment_audio(samples, config, vad=diagnosis.Replayed(probabilities))]
    assert live and replayed == live

    # one utterance exactly over the first segment, one in the silence at the end that no segment touches
    first = live[0]
    after = len(speech) / 16000 + 1
    placed = [SimpleNamespace(start_s=first[0], end_s=first[1]), SimpleNamespace(start_s=after, end_s=after + 1)]
    counts = diagnosis.measure(samples, placed, probabilities, config)
    cells = [int(b * 100) - int(a * 100) for a, b in live]  # 10 ms cells inside each segment
    assert counts["utterances"] == 2 and counts["found"] == 1
    assert counts["covered"] == cells[0] and counts["speech"] == cells[0] + 100
    assert counts["false"] == sum(cells[1:])
    assert counts["other"] + counts["speech"] == len(np.arange(0, len(samples) / 16000, 0.01))
