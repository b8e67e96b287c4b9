"""`sercli train`: folds, runs, checkpoints and reports around sercli.train."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .corpora import Utterance, validation_speakers
from .features import FeatureConfig
from .model import LABELS, ModelConfig
from .train import TrainConfig, build_segments, evaluate, predict_segments, train_model
from .weights import atomic_write_bytes, save_checkpoint


def _mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def run_training(utterances: list[Utterance], test_folds: list[int | None], model_config: ModelConfig,
                 train_config: TrainConfig, device: torch.device, out_dir: Path, cache_dir: Path,
                 command: str = "") -> dict:
    """Train one model per test fold (None: one model on every speaker) and write the reports."""
    features = FeatureConfig(grid_hz=model_config.grid_hz, window_ms=model_config.window_ms)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "train.log", "a", encoding="utf-8")

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"{command or 'training'}: {len(utterances)} utterances, {len({u.speaker for u in utterances})} speakers")
    data = build_segments(utterances, features, cache_dir, log)
    log(f"{len(data.labels)} segments")
    speakers = np.array([u.speaker for u in utterances])
    folds = np.array([u.fold if u.fold is not None else -1 for u in utterances])
    results = {}
    for test_fold in test_folds:
        name = f"fold{test_fold}" if test_fold is not None else "all"
        fold_dir = out_dir / name
        metrics_path = fold_dir / "metrics.json"
        if metrics_path.is_file():
            log(f"{name}: done already ({metrics_path})")
            results[name] = json.loads(metrics_path.read_text())
            continue
        held_out = validation_speakers(utterances, test_fold, seed=train_config.seed)
        utt_valid = np.isin(speakers, sorted(held_out))
        utt_test = folds == test_fold if test_fold is not None else np.zeros(len(utterances), dtype=bool)
        utt_train = ~utt_valid & ~utt_test
        assert not (set(speakers[utt_train]) & set(speakers[utt_test])), "a speaker in train and test"
        role = torch.from_numpy(np.select([utt_test, utt_valid], [2, 1], 0))[data.utterance]
        train_set, valid_set, test_set = (data.subset(role == r) for r in (0, 1, 2))
        log(f"{name}: train {int(utt_train.sum())} utterances / {len(train_set.labels)} segments, "
            f"validation speakers {sorted(held_out)}, test {int(utt_test.sum())} utterances")
        started = time.monotonic()
        net, info = train_model(model_config, train_set, valid_set, train_config, device,
                                fold_dir / "state.pt", log)
        metrics = {"fold": test_fold, "validation_speakers": sorted(held_out), "best_epoch": info["best_epoch"],
                   "valid_wa": info["best_valid_wa"], "train_seconds": time.monotonic() - started,
                   "history": info["history"]}
        if test_fold is not None:
            scores = evaluate(predict_segments(net, test_set, device, info["bf16"]), test_set)
            metrics["test"] = scores
            log(f"{name}: test utterance WA {scores['utterance']['wa']:.3f} UA {scores['utterance']['ua']:.3f}, "
                f"segment WA {scores['segment']['wa']:.3f} UA {scores['segment']['ua']:.3f}")
        meta = {
            "name": f"{model_config.topology}-{model_config.grid_hz}hz-{name}",
            "training": {"command": command, "sercli": __version__, "date": date.today().isoformat(),
                         "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                         "device": str(device), "corpora": sorted({u.corpus for u in utterances}),
                         "speakers_train": sorted(set(speakers[utt_train])),
                         "speakers_validation": sorted(held_out), "test_fold": test_fold,
                         "config": asdict(train_config), "best_epoch": info["best_epoch"]},
            "metrics": {"valid_wa": info["best_valid_wa"]} | (
                {"test_wa": metrics["test"]["utterance"]["wa"], "test_ua": metrics["test"]["utterance"]["ua"]}
                if test_fold is not None else {}),
        }
        save_checkpoint(fold_dir / "model.pt", model_config, net.state_dict(), features, meta)
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=1).encode())
        (fold_dir / "state.pt").unlink(missing_ok=True)
        results[name] = metrics
    _write_report(out_dir, results, model_config, command)
    log_file.close()
    return results


def _write_report(out_dir: Path, results: dict, model_config: ModelConfig, command: str) -> None:
    tested = {k: v for k, v in results.items() if "test" in v}
    summary = {"model": asdict(model_config), "command": command, "folds": {}}
    lines = [f"# {model_config.topology}, {model_config.grid_hz} Hz grid, {model_config.window_ms} ms window", "",
             f"`{command}`", "", "| fold | utterance WA | utterance UA | segment WA | segment UA | best epoch | minutes |",
             "|---|---|---|---|---|---|---|"]
    for name, m in tested.items():
        u, s = m["test"]["utterance"], m["test"]["segment"]
        summary["folds"][name] = {"wa": u["wa"], "ua": u["ua"], "segment_wa": s["wa"], "segment_ua": s["ua"]}
        lines.append(f"| {m['fold']} | {100 * u['wa']:.1f} | {100 * u['ua']:.1f} | {100 * s['wa']:.1f} | "
                     f"{100 * s['ua']:.1f} | {m['best_epoch']} | {m['train_seconds'] / 60:.0f} |")
    if len(tested) > 1:
        folds = list(summary["folds"].values())
        mean = {k: _mean_std([f[k] for f in folds]) for k in ("wa", "ua", "segment_wa", "segment_ua")}
        summary["mean"] = {k: float(np.mean([f[k] for f in folds])) for k in ("wa", "ua", "segment_wa", "segment_ua")}
        lines.append(f"| mean ± std | {mean['wa']} | {mean['ua']} | {mean['segment_wa']} | {mean['segment_ua']} | | |")
    for name, m in tested.items():
        lines += ["", f"Confusion, {name}, utterance level (rows: truth, columns: prediction; {', '.join(LABELS)}):", ""]
        lines += ["    " + " ".join(f"{c:5d}" for c in row) for row in m["test"]["utterance"]["confusion"]]
    atomic_write_bytes(out_dir / "results.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out_dir / "results.json", json.dumps(summary, indent=1).encode())
