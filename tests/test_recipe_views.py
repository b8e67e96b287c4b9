"""train/recipe_views.py: a recipe's seeds per fold, merged, scored in the three views."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("recipe_views", ROOT / "train" / "recipe_views.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dry_run(tmp_path: Path, *args: str, train: tuple[str, ...] = ()) -> list[str]:
    """The commands recipe_views.py prints for `args` (and `train`, the options after --), on three folds."""
    folds = tmp_path / "folds.csv"
    folds.write_text("speaker,fold\na,1\nb,2\nc,3\n")
    result = subprocess.run([sys.executable, str(ROOT / "train" / "recipe_views.py"), *args, "--folds", str(folds),
                             "--data", str(tmp_path / "data"), "--runs", str(tmp_path / "runs"), "--dry-run",
                             *(("--", *train) if train else ())],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return [line.removeprefix("$ ") for line in result.stdout.splitlines()]


def test_a_sweep_trains_each_seed_merges_each_fold_and_scores_three_views(tmp_path):
    runs = tmp_path / "runs"
    commands = _dry_run(tmp_path, "pairs", "--seeds", "2", train=("--config", "train/egemaps-mlp.toml", "--augment-pairs"))
    trains = [c for c in commands if c.startswith("sercli train")]
    assert len(trains) == 2 and all(c.endswith("--config train/egemaps-mlp.toml --augment-pairs") for c in trains)
    assert [f"--seed {s} --out {runs}/pairs-s{s}" in c for s, c in enumerate(trains)] == [True, True]
    assert all("--fold all" in c and f"--folds {tmp_path}/folds.csv" in c for c in trains)
    merges = [c for c in commands if "ship_model.py" in c]
    assert len(merges) == 3  # one merged checkpoint per fold, of both seeds
    assert f"{runs}/pairs-s0/fold2/model.pt fold2 --weights {runs}/pairs-merged --merge {runs}/pairs-s1/fold2/model.pt" \
        in merges[1]
    scores = [c for c in commands if c.startswith("sercli evaluate")]
    assert len(scores) == 4  # programmes per fold, then the clips of all folds at once
    assert all(f"--model '{runs}/pairs-merged/{{run}}.pt'" in c for c in scores)
    assert "--fold 3" in scores[2] and "--programmes 2 --programme-minutes 15" in scores[2]
    assert "--fold all" in scores[3] and "--context utterance" in scores[3]
    assert commands.index(merges[-1]) < commands.index(scores[0]) and commands.index(trains[-1]) < commands.index(merges[0])


def test_finished_steps_are_skipped_and_earlier_runs_can_be_rescored(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        (runs / f"chan-s{seed}" / "fold3").mkdir(parents=True)
        (runs / f"chan-s{seed}" / "fold3" / "model.pt").write_bytes(b"")
    (runs / "chan-merged").mkdir()
    (runs / "chan-merged" / "fold1.pt").write_bytes(b"")
    commands = _dry_run(tmp_path, "chan", "--seeds", "2")
    assert not any(c.startswith("sercli train") for c in commands)
    assert sum("ship_model.py" in c for c in commands) == 2  # folds 2 and 3 still to merge
    zero = _dry_run(tmp_path, "chan-0db", "--runs-of", "chan", "--seeds", "2", "--zero-db")
    assert not any(c.startswith("sercli train") for c in zero)
    scores = [c for c in zero if c.startswith("sercli evaluate")]
    assert len(scores) == 3 and all("--programme-snr 0 --programme-music-share 1" in c for c in scores)
    assert all(f"'{runs}/chan-merged/{{run}}.pt'" in c and f"{runs}/ev/chan-0db/" in c for c in scores)
    one = _dry_run(tmp_path, "single", "--seeds", "1", train=("--topology", "cnn5"))
    assert not any("ship_model.py" in c for c in one)  # one seed: its fold models are scored as they are
    assert f"--model '{runs}/single-s0/{{run}}/model.pt'" in [c for c in one if c.startswith("sercli evaluate")][0]


def test_the_clips_of_all_folds_are_split_into_one_file_per_fold(tmp_path):
    whole = {"model": "m", "context": "utterance", "mean": {"ua": 0.5},
             "runs": {"fold1": {"utterance": {"ua": 0.6}}, "fold2": {"utterance": {"ua": 0.4}}}}
    path = tmp_path / "all-clips.json"
    path.write_text(json.dumps(whole))
    written = _module().split_clips(path)
    assert [p.name for p in written] == ["fold1-clips.json", "fold2-clips.json"] and not path.exists()
    second = json.loads(written[1].read_text())
    assert second == {"model": "m", "context": "utterance", "runs": {"fold2": {"utterance": {"ua": 0.4}}}}


def test_a_missing_folds_file_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train" / "recipe_views.py"), "x", "--data", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "no folds file" in result.stderr and "Traceback" not in result.stderr


def test_a_routed_pair_of_two_sweeps_is_scored_without_training(tmp_path):
    runs = tmp_path / "runs"
    commands = _dry_run(tmp_path, "routed", "--route", "chan", "chanv")
    assert all(c.startswith("sercli evaluate") for c in commands) and len(commands) == 4
    assert all(f"--model '{runs}/chan-merged/{{run}}.pt|{runs}/chanv-merged/{{run}}.pt'" in c for c in commands)
    assert all(f"-o {runs}/ev/routed/" in c for c in commands)
    refused = subprocess.run([sys.executable, str(ROOT / "train" / "recipe_views.py"), "x", "--route", "a", "b",
                              "--runs-of", "c", "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2 and "choose --runs-of or --route" in refused.stderr


def test_the_clip_copies_probe_averages_segments_then_copies(monkeypatch):
    """train/clip_copies_probe.py: each utterance's posteriors are its segments' mean, and a
    utterance a run did not test is left out of its UA."""
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "train"))
    spec = importlib.util.spec_from_file_location("clip_copies_probe", ROOT / "train" / "clip_copies_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    posteriors = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.2, 0.8], [0.6, 0.4]])
    utterance, labels = torch.tensor([0, 0, 2, 3]), torch.tensor([0, 0, 1, 0])  # per segment; utterance 1 not tested
    scored = {("model", "clean", "fold1", "utterance", 10.0): (posteriors, utterance, labels, None),
              ("model", "clean", "fold2", "utterance", 10.0): (posteriors[:1], utterance[:1], labels[:1], None)}
    means, truth = probe.utterance_posteriors(scored, "fold1", 4)
    assert torch.allclose(means[0], torch.tensor([0.5, 0.5])) and truth.tolist() == [0, -1, 1, 0]
    assert torch.equal(means[1], torch.zeros(2))
    # utterance 0 ties (argmax takes class 0: right), 2 says class 1 (right), 3 says 0 (right)
    assert probe.unweighted_accuracy(means, truth) == 1.0
    # flipped: the tie stays class 0 (right), 3 turns wrong, 2 turns wrong: (1/2 + 0/1) / 2
    assert probe.unweighted_accuracy(means.flip(1), truth) == 0.25
