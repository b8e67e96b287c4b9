"""`sercli train`: folds, runs, checkpoints and reports around sercli.train."""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .context import CONTEXT_PRIOR_S, context_prior
from .corpora import Split, Utterance
from .features import FeatureConfig
from .model import LABELS, ModelConfig
from .corpora import CorpusError
from .train import (SegmentSet, TrainConfig, build_segments, evaluate, normalise_contexts, population_moments,
                    predict_segments, train_model)
from .weights import atomic_write_bytes, bf16_supported, save_checkpoint


def _mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def split_sets(data: SegmentSet, speakers: np.ndarray, split: Split) -> tuple[SegmentSet, SegmentSet, SegmentSet]:
    """The training, validation and test segments of a split; `speakers` is each utterance's."""
    assert not (split.valid & split.test), "a speaker in validation and test"
    role = np.select([np.isin(speakers, sorted(split.test)), np.isin(speakers, sorted(split.valid))], [2, 1], 0)
    role = torch.from_numpy(role)[data.utterance]
    return data.subset(role == 0), data.subset(role == 1), data.subset(role == 2)


@dataclass
class TrainRun:
    """One `sercli train`: the speech and its splits, the three configs, and where it runs and writes."""

    utterances: list[Utterance]
    splits: list[Split]
    model_config: ModelConfig
    train_config: TrainConfig
    features: FeatureConfig
    device: torch.device
    out_dir: Path
    cache_dir: Path
    command: str = ""  # every option as it resolved (commands.train.resolved_command): reruns the run
    argv: list[str] = field(default_factory=list)  # the command line as typed (sys.argv)
    two_step: bool = False
    first_step: str | None = None
    workers: int = 1
    augmentation: NoiseAugmentation | None = None


def run_training(run: TrainRun) -> dict:
    """Train one model per split (see corpora.plan_splits) and write the reports. Features with
    denoise: train on the harmonic model's spectrograms (sercli.denoise), the paper's modified
    predictor. two_step: per split, a four-class network of model_config (or the split's
    checkpoint from `first_step`, a path with "{run}") and three binary CNN5 networks, bundled
    (see _two_step). augmentation: also featurise a noisy copy of each run's training speech and
    train on a mix of the two (see NoiseAugmentation); validation and test speech stay clean."""
    utterances, splits, model_config, train_config = run.utterances, run.splits, run.model_config, run.train_config
    features, device, out_dir, cache_dir, command = run.features, run.device, run.out_dir, run.cache_dir, run.command
    two_step, first_step, workers, augmentation = run.two_step, run.first_step, run.workers, run.augmentation
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "train.log", "a", encoding="utf-8")

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"{command or 'training'}: {len(utterances)} utterances, {len({u.speaker for u in utterances})} speakers")
    data = build_segments(utterances, features, cache_dir, log, workers=workers)
    log(f"{len(data.labels)} segments")
    speakers = np.array([u.speaker for u in utterances])
    plain = data
    if features.context_norm:  # each speaker's segments standardised over the speaker's speech
        data = normalise_contexts(plain, utterances, "speaker")
    if augmentation is not None and two_step:
        raise CorpusError("noise augmentation trains one network; the two-step predictor is not supported")
    decoded: dict = {}  # build_segments' memo: the noisy copies of the runs decode each utterance once
    results = {}
    for split in splits:
        name, test_fold = split.name, split.fold
        fold_dir = out_dir / name
        metrics_path = fold_dir / "metrics.json"
        if metrics_path.is_file():
            log(f"{name}: done already ({metrics_path})")
            results[name] = json.loads(metrics_path.read_text())
            continue
        train_set, valid_set, test_set = split_sets(data, speakers, split)
        log(f"{name}: train {train_set.n_utterances} utterances / {len(train_set.labels)} segments, "
            f"validation speakers {sorted(split.valid)}, test {test_set.n_utterances} utterances")
        started = time.monotonic()
        noisy = None
        if augmentation is not None:
            noisy = _noisy_copy(utterances, split, features, augmentation, train_set, cache_dir, log, workers,
                                decoded)
        members = None
        if two_step:
            spec = first_step.replace("{run}", name) if first_step else None
            net, members, info = _two_step(model_config, features, train_set, valid_set, train_config, device,
                                           fold_dir, spec, log)
        else:
            net, info = train_model(model_config, train_set, valid_set, train_config, device,
                                    fold_dir / "state.pt", log, noisy=noisy,
                                    noisy_share=augmentation.share if augmentation is not None else 0.0)
        metrics = {"fold": test_fold, "role": split.role, "validation_speakers": sorted(split.valid),
                   "test_speakers": sorted(split.test), "best_epoch": info["best_epoch"],
                   "valid_wa": info["best_valid_wa"], "train_seconds": time.monotonic() - started,
                   "history": info["history"]}
        if split.test:
            scores = evaluate(predict_segments(net, test_set, device, info["bf16"]), test_set)
            metrics["test"] = scores
            log(f"{name}: test utterance WA {scores['utterance']['wa']:.3f} UA {scores['utterance']['ua']:.3f}, "
                f"segment WA {scores['segment']['wa']:.3f} UA {scores['segment']['ua']:.3f}")
        training_speakers = sorted(set(speakers.tolist()) - split.valid - split.test)
        meta = {
            "name": f"{'two-step' if two_step else model_config.topology}-{model_config.grid_hz}hz-{name}",
            "training": {"command": command, "argv": run.argv, "sercli": __version__, "date": date.today().isoformat(),
                         "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                         "device": str(device), "corpora": sorted({u.corpus for u in utterances}),
                         "speakers_train": training_speakers,
                         "speakers_validation": sorted(split.valid), "speakers_test": sorted(split.test),
                         "test_fold": test_fold,
                         "config": asdict(train_config), "best_epoch": info["best_epoch"],
                         **({"noise_augmentation": asdict(augmentation)} if augmentation is not None else {})},
            **({"context_prior": dict(zip(("mean", "variance"), (m.tolist() for m in population_moments(
                plain, torch.from_numpy(np.isin(speakers, training_speakers))[plain.utterance])[:2])))}
               if features.context_norm else {}),
            "metrics": {"valid_wa": info["best_valid_wa"]} | (
                {"test_wa": metrics["test"]["utterance"]["wa"], "test_ua": metrics["test"]["utterance"]["ua"]}
                if split.test else {}),
        }
        main_state = net.four.state_dict() if two_step else net.state_dict()
        save_checkpoint(fold_dir / "model.pt", model_config, main_state, features, meta, members=members)
        atomic_write_bytes(metrics_path, json.dumps(metrics, indent=1).encode())
        (fold_dir / "state.pt").unlink(missing_ok=True)
        results[name] = metrics
    _write_report(out_dir, results, model_config, command, two_step, features.window_ms)
    log_file.close()
    return results


def _two_step(model_config: ModelConfig, features: FeatureConfig, train_set: SegmentSet, valid_set: SegmentSet,
              train_config: TrainConfig, device: torch.device, fold_dir: Path, first_step: str | None, log):
    """The two-step predictor of one split: (TwoStepNet, its binary members for the checkpoint,
    info). Each network is kept in fold_dir as it is finished, so an interrupted run resumes at
    the network it was training."""
    from .model import TWO_STEP_EMOTIONS, EmotionNet, TwoStepNet
    from .weights import load_model

    def trained(name: str, config: ModelConfig, train: SegmentSet, valid: SegmentSet) -> tuple[EmotionNet, dict]:
        done = fold_dir / f"{name}.pt"
        if done.is_file():
            loaded = load_model(done, device=str(device))
            return loaded.net, loaded.meta["info"]
        log(f"{fold_dir.name}: training the {name} network")
        net, info = train_model(config, train, valid, train_config, device, fold_dir / f"state-{name}.pt", log)
        save_checkpoint(done, config, net.state_dict(), features, {"name": name, "info": info})
        (fold_dir / f"state-{name}.pt").unlink(missing_ok=True)
        return net, info

    if first_step:
        loaded = load_model(first_step, device=str(device))
        if loaded.features != features or not isinstance(loaded.net, EmotionNet):
            raise CorpusError(f"{first_step}: not a four-class model on these features")
        four, info_four = loaded.net, {"best_epoch": loaded.meta.get("training", {}).get("best_epoch"),
                                       "checkpoint": first_step}
    else:
        four, info_four = trained("four-class", model_config, train_set, valid_set)
    binary_config = ModelConfig(topology="cnn5", grid_hz=model_config.grid_hz, n_classes=2)
    binary, infos = {}, {"four-class": info_four}
    for emotion in TWO_STEP_EMOTIONS:
        train_part, valid_part = train_set.binary("neutral", emotion), valid_set.binary("neutral", emotion)
        for label, cls in enumerate(("neutral", emotion)):
            if not bool((train_part.labels == label).any()):
                raise CorpusError(f"{fold_dir.name}: no {cls} speech among the training speakers, which the "
                                  f"neutral-{emotion} network needs")
        if len(valid_part.labels) == 0:
            raise CorpusError(f"{fold_dir.name}: no neutral or {emotion} speech among the validation speakers")
        net, infos[emotion] = trained(f"neutral-{emotion}", binary_config, train_part, valid_part)
        binary[emotion] = net
    bundle = TwoStepNet(four, binary).to(device)
    bf16 = bf16_supported(device)
    scores = evaluate(predict_segments(bundle, valid_set, device, bf16), valid_set)
    info = {"history": [], "best_epoch": {k: v.get("best_epoch") for k, v in infos.items()},
            "best_valid_wa": scores["utterance"]["wa"], "bf16": bf16}
    log(f"{fold_dir.name}: two-step validation WA {scores['utterance']['wa']:.3f} UA {scores['utterance']['ua']:.3f}")
    members = {e: (binary_config, net.state_dict()) for e, net in binary.items()}
    return bundle, members, info


def _row(label: str, runs: list[dict]) -> tuple[str, dict]:
    keys = {"wa": ("utterance", "wa"), "ua": ("utterance", "ua"), "segment_wa": ("segment", "wa"),
            "segment_ua": ("segment", "ua")}
    values = {k: [m["test"][level][metric] for m in runs] for k, (level, metric) in keys.items()}
    cells = " | ".join(_mean_std(values[k]) for k in keys)
    return f"| {label} | {cells} | | |", {k: float(np.mean(v)) for k, v in values.items()} | {
        k + "_std": float(np.std(v)) for k, v in values.items()}


def _confusion_lines(name: str, confusion: list[list[int]]) -> list[str]:
    return ["", f"Confusion, {name}, utterance level (rows: truth, columns: prediction; {', '.join(LABELS)}):", "",
            *("    " + " ".join(f"{c:5d}" for c in row) for row in confusion)]


def _write_report(out_dir: Path, results: dict, model_config: ModelConfig, command: str,
                  two_step: bool = False, window_ms: int = FeatureConfig.window_ms) -> None:
    tested = {k: v for k, v in results.items() if "test" in v}
    summary = {"model": asdict(model_config), "command": command, "folds": {}}
    topology = model_config.topology if not two_step else f"two-step ({model_config.topology} + 3 binary cnn5)"
    lines = [f"# {topology}, {model_config.grid_hz} Hz grid, {window_ms} ms window", "",
             f"`{command}`", "", "| run | utterance WA | utterance UA | segment WA | segment UA | best epoch | minutes |",
             "|---|---|---|---|---|---|---|"]
    for name, m in tested.items():
        u, s = m["test"]["utterance"], m["test"]["segment"]
        summary["folds"][name] = {"wa": u["wa"], "ua": u["ua"], "segment_wa": s["wa"], "segment_ua": s["ua"]}
        epoch = m["best_epoch"]  # a dict for the two-step predictor: one per network
        epoch = "/".join(str(e) for e in epoch.values()) if isinstance(epoch, dict) else epoch
        lines.append(f"| {name} | {100 * u['wa']:.1f} | {100 * u['ua']:.1f} | {100 * s['wa']:.1f} | "
                     f"{100 * s['ua']:.1f} | {epoch} | {m['train_seconds'] / 60:.0f} |")
    if len(tested) > 1:
        line, summary["mean"] = _row("mean ± std", list(tested.values()))
        lines.append(line)
        roles = sorted({m.get("role", 0) for m in tested.values()})
        if len(roles) > 1:  # validation inside the fold: one mean per role, e.g. IEMOCAP's F and M
            summary["by_role"] = {}
            for role in roles:
                runs = [m for m in tested.values() if m.get("role", 0) == role]
                who = ", ".join(sorted(s for m in runs for s in m["validation_speakers"]))
                line, summary["by_role"][who] = _row(f"mean, validation {who}", runs)
                lines.append(line)
    for name, m in tested.items():
        lines += _confusion_lines(name, m["test"]["utterance"]["confusion"])
    atomic_write_bytes(out_dir / "results.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out_dir / "results.json", json.dumps(summary, indent=1).encode())


@dataclass(frozen=True)
class Condition:
    """How test speech is heard: clean, or with a noise added at an SNR (sercli.noise)."""

    name: str = "clean"  # "clean", a noise category (its folder's name) or "babble"
    snr_db: float | None = None
    folder: str | None = None  # the noise's folder; None for clean and babble
    seed: int = 0

    @property
    def label(self) -> str:
        return self.name if self.snr_db is None else f"{self.name} {self.snr_db:g} dB"


CLEAN = Condition()
BABBLE_POOL = 60  # utterances per split that babble is drawn from


@dataclass
class _Mix:
    """Adds a condition's noise to the test utterances `paths` (by index), each with its own seeded
    offset (and talkers, for babble); a picklable corruption for build_segments' workers."""

    condition: Condition
    paths: list[str]
    babble_pool: list[np.ndarray] | None = None  # else the noise is the condition's folder, decoded once per process

    def __call__(self, i: int, clean: np.ndarray) -> np.ndarray:
        from .noise import babble, mix, utterance_seed

        rng = utterance_seed(self.condition.seed, f"{self.condition.name}:{self.paths[i]}")
        if self.babble_pool is not None:
            noise = babble(self.babble_pool, len(clean), rng)
        else:
            noise = _noise(self.condition.folder)
        return mix(clean, noise, self.condition.snr_db, rng)


@functools.lru_cache(maxsize=16)
def _noise(folder: str) -> np.ndarray:
    from .noise import load_noise

    return load_noise(folder)


def _babble_pool(candidates: list[Utterance], seed: int, key: str, clean: dict | None) -> list[np.ndarray]:
    """The samples of BABBLE_POOL utterances drawn from `candidates` (seeded by seed and key), in
    their order, taken from build_segments' memo `clean` where it has them, else decoded."""
    from .audio import load_audio
    from .noise import utterance_seed

    chosen = utterance_seed(seed, key).choice(len(candidates), size=min(BABBLE_POOL, len(candidates)), replace=False)
    return [clean[candidates[i].path][0] if clean and candidates[i].path in clean else load_audio(candidates[i].path)
            for i in sorted(chosen)]


def _corruption(condition: Condition, utterances: list[Utterance], split: Split, heard: list[Utterance],
                noises: dict, clean: dict | None = None):
    """(corrupt function, cache key) for build_segments(heard, ...): the test utterances `heard`
    of `split` under a noisy `condition`. `noises` keeps babble's talkers between calls; `clean`,
    build_segments' memo of decoded utterances, is used for babble's talkers when it has them."""
    if condition.snr_db is None:
        return None, ""
    paths = [u.path for u in heard]
    if condition.name == "babble":
        pool_key = ("babble", split.name, condition.seed)
        if pool_key not in noises:  # speakers outside the test fold, decoded once per split
            noises[pool_key] = _babble_pool([u for u in utterances if u.speaker not in split.test],
                                            condition.seed, f"babble-pool:{split.name}", clean)
        return (_Mix(condition, paths, babble_pool=noises[pool_key]),
                f"babble:{split.name}:{condition.snr_db}:{condition.seed}")
    _noise(condition.folder)  # a missing or empty folder fails here, in the caller's process
    return _Mix(condition, paths), f"{condition.folder}:{condition.snr_db}:{condition.seed}"


@dataclass(frozen=True)
class NoiseAugmentation:
    """Training on noisy speech as well as clean: each training utterance also gets one noisy copy
    (a noise source and an SNR drawn per utterance, from a seed), featurised and cached once per
    run, and each step takes the noisy copy of a segment with probability `share`."""

    sources: tuple[str, ...] = ("babble",)  # "babble" (talkers from the run's training speakers) or noise folders
    snr_db: tuple[float, float] = (0.0, 20.0)  # uniform in this range
    share: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("noise augmentation needs at least one noise source")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"SNR range {self.snr_db[0]:g}:{self.snr_db[1]:g} runs backwards")
        if not 0 < self.share <= 1:
            raise ValueError(f"the noisy share must be in (0, 1], not {self.share:g}")


@dataclass
class _Augment:
    """The corruption of NoiseAugmentation for build_segments: utterance i (of `paths`) gets a
    source and an SNR drawn from its own seeded generator. Picklable for the workers."""

    augmentation: NoiseAugmentation
    paths: list[str]
    babble_pool: list[np.ndarray] | None

    def __call__(self, i: int, clean: np.ndarray) -> np.ndarray:
        from .noise import babble, mix, utterance_seed

        rng = utterance_seed(self.augmentation.seed, f"augment:{self.paths[i]}")
        source = self.augmentation.sources[int(rng.integers(len(self.augmentation.sources)))]
        snr = float(rng.uniform(*self.augmentation.snr_db))
        noise = babble(self.babble_pool, len(clean), rng) if source == "babble" else _noise(source)
        return mix(clean, noise, snr, rng)


def _noisy_copy(utterances: list[Utterance], split: Split, features: FeatureConfig, augmentation: NoiseAugmentation,
                train_set: SegmentSet, cache_dir: Path | None, log, workers: int, decoded: dict) -> torch.Tensor:
    """The spectrograms of the noisy copy of a run's training segments, in train_set's order
    (context-normalised over each speaker's noisy speech when the features say so). Babble is
    drawn from the run's own training speakers, never its validation or test speakers."""
    from .noise import BABBLE_TALKERS

    training = [u for u in utterances if u.speaker not in split.valid | split.test]
    pool = None
    if "babble" in augmentation.sources:
        if len(training) < BABBLE_TALKERS[0]:
            raise CorpusError(f"{split.name}: babble needs at least {BABBLE_TALKERS[0]} training utterances, "
                              f"there are {len(training)}")
        pool = _babble_pool(training, augmentation.seed, f"augment-pool:{split.name}", decoded)
    for source in augmentation.sources:
        if source != "babble":
            _noise(source)  # a missing or empty folder fails here, in the caller's process
    key = json.dumps([asdict(augmentation), split.name, sorted({u.speaker for u in training})])
    noisy = build_segments(training, features, cache_dir, log, _Augment(augmentation, [u.path for u in training], pool),
                           f"augment:{key}", workers=workers, clean=decoded)
    if not (torch.equal(noisy.n_frames, train_set.n_frames) and torch.equal(noisy.labels, train_set.labels)):
        raise CorpusError(f"{split.name}: the noisy copy of the training speech is not cut like the clean one")
    if features.context_norm:
        noisy = normalise_contexts(noisy, training, "speaker")
    return noisy.spectrograms


def run_evaluation(utterances: list[Utterance], splits: list[Split], model: str | None, device: str, precision: str,
                   cache_dir: Path | None, log=print, conditions: tuple[Condition, ...] = (CLEAN,),
                   loaded_models: dict | None = None, workers: int = 1, clean: dict | None = None,
                   context: str = "speaker", context_prior_s: float = CONTEXT_PRIOR_S,
                   scored_segments: dict | None = None) -> dict:
    """Score a checkpoint (or, with "{run}" in `model`, each split's own checkpoint; or, with
    A+B, an ensemble: the mean of its models' segment posteriors) on the test speakers of each
    split; with no splits, on every utterance. Each condition (clean, or a noise
    at an SNR) is scored separately: {"model", "conditions": {label: {"runs", "mean"}}}; the clean
    condition's runs and mean are also at the top level.

    workers: featurising processes (build_segments). clean: build_segments' memo of decoded
    utterances, kept by the caller to share it between models; with noisy conditions one is
    kept here anyway, so each utterance is decoded and segmented once.
    context, context_prior_s: for a context-normalised model, what its segments are standardised
    over ("speaker": all of the speaker's test speech; "utterance": each utterance alone, like
    short files analysed one by one) and how many seconds of speech the checkpoint's prior (the
    moments of its training speech) counts for (0: none).
    scored_segments: a dict the caller keeps between calls: each checkpoint's segment posteriors,
    with the utterance and label of each segment, per condition and split (and an ensemble's
    mean under its models' paths joined by '+'), so that scoring A, B and A+B runs each model
    once."""
    from .weights import ModelError, load_model, model_names

    speakers = np.array([u.speaker for u in utterances])
    runs = splits or [Split("all", None, frozenset(speakers.tolist()), frozenset())]
    models = loaded_models if loaded_models is not None else {}
    scored_segments = scored_segments if scored_segments is not None else {}
    noises: dict = {}
    datasets: dict = {}
    if clean is None and any(c.snr_db is not None for c in conditions):
        clean = {}
    results: dict = {"model": model, "context": context, "conditions": {}}
    for condition in conditions:
        scored: dict = {"runs": {}}
        for split in runs:
            members = []  # (model, segment posteriors, utterance and label of each segment) per model of A+B
            for name in model_names(model):
                spec = name.replace("{run}", split.name) if name else None
                if spec not in models:
                    models[spec] = load_model(spec, device=device, precision=precision)
                loaded = models[spec]
                memo_key = (str(loaded.path), condition.label, split.name, context, context_prior_s)
                if memo_key in scored_segments:  # this checkpoint was scored here already, alone or in an ensemble
                    members.append((loaded, *scored_segments[memo_key]))
                    continue
                if condition.snr_db is None:  # clean: featurise every utterance once, pick each split's
                    key = (tuple(sorted(asdict(loaded.features).items())), "clean")
                    if key not in datasets:
                        datasets[key] = build_segments(utterances, loaded.features, cache_dir, log, workers=workers,
                                                       clean=clean)
                    if loaded.features.context_norm and (key, "context") not in datasets:
                        datasets[key, "context"] = normalise_contexts(
                            datasets[key], utterances, context, context_prior(loaded.meta, context_prior_s))
                    test_set = split_sets(datasets[key, "context"] if loaded.features.context_norm else datasets[key],
                                          speakers, split)[2]
                else:  # noisy: featurise only this split's test utterances, with their noise
                    heard = [u for u in utterances if u.speaker in split.test]
                    corrupt, corrupt_key = _corruption(condition, utterances, split, heard, noises, clean)
                    test_set = build_segments(heard, loaded.features, cache_dir, log, corrupt, corrupt_key,
                                              workers=workers, clean=clean)
                    if loaded.features.context_norm:
                        test_set = normalise_contexts(test_set, heard, context,
                                                      context_prior(loaded.meta, context_prior_s))
                scored_segments[memo_key] = (predict_segments(loaded.net, test_set, loaded.device,
                                                              loaded.precision == "bf16"),
                                             test_set.utterance, test_set.labels)
                members.append((loaded, *scored_segments[memo_key]))
            _, _, utterance, labels = members[0]
            if any(not torch.equal(other, utterance) for _, _, other, _ in members[1:]):
                raise ModelError(f"{model}: the models cut the speech into different segments "
                                 "(different maximum lengths?), so their posteriors cannot be averaged")
            segment_posteriors = sum(p for _, p, _, _ in members) / len(members)
            if len(members) > 1:
                scored_segments["+".join(str(m.path) for m, *_ in members), condition.label, split.name, context,
                                context_prior_s] = (segment_posteriors, utterance, labels)
            results["model"] = model or str(members[0][0].path)
            if not any(m.features.context_norm for m, *_ in members):
                results["context"] = None  # the view does not apply: nothing is context-normalised
            scores = evaluate(segment_posteriors, SegmentSet(torch.empty(0), torch.empty(0), utterance, labels))
            scored["runs"][split.name] = {"model": "+".join(str(m.path) for m, *_ in members),
                                          "test_speakers": sorted(split.test)} | scores
            log(f"{condition.label}, {split.name}: utterance WA {scores['utterance']['wa']:.3f} "
                f"UA {scores['utterance']['ua']:.3f}, segment WA {scores['segment']['wa']:.3f} "
                f"UA {scores['segment']['ua']:.3f} ({scores['utterance']['count']} utterances)")
        if len(scored["runs"]) > 1:
            _, scored["mean"] = _row("mean", [{"test": r} for r in scored["runs"].values()])
        results["conditions"][condition.label] = scored
    first = next(iter(results["conditions"].values()))
    results.update(first)
    return results


CONTEXT_VIEWS = {  # what a context-normalised model's test speech is standardised over, as evaluation_table says
    "speaker": "Context: each speaker's test speech together (the training view; no user has it). A user analysing "
               "clips gets `--context utterance`, one analysing films `--programmes`.",
    "utterance": "Context: each clip alone, as `sercli analyze clip.wav` sees it.",
}


def evaluation_table(results: dict) -> str:
    """Markdown table of run_evaluation's results (its first condition)."""
    view = [CONTEXT_VIEWS[results["context"]], ""] if results.get("context") else []
    lines = [f"Model: `{results['model']}`", "", *view,
             "| run | utterances | utterance WA | utterance UA | segment WA | segment UA |", "|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        u, s = r["utterance"], r["segment"]
        lines.append(f"| {name} | {u['count']} | {100 * u['wa']:.1f} | {100 * u['ua']:.1f} | {100 * s['wa']:.1f} | "
                     f"{100 * s['ua']:.1f} |")
    if "mean" in results:
        m = results["mean"]
        lines.append("| mean ± std | | " + " | ".join(f"{100 * m[k]:.1f} ± {100 * m[k + '_std']:.1f}"
                                                     for k in ("wa", "ua", "segment_wa", "segment_ua")) + " |")
    for name, r in results["runs"].items():
        lines += _confusion_lines(name, r["utterance"]["confusion"])
    return "\n".join(lines) + "\n"


def _overall(scored: dict) -> dict:
    """Mean utterance WA/UA of a condition's runs (the only run's when there is one)."""
    if "mean" in scored:
        return scored["mean"]
    (run,) = scored["runs"].values()
    return {"wa": run["utterance"]["wa"], "ua": run["utterance"]["ua"]}


def conditions_table(all_results: list[dict]) -> str:
    """Markdown table: one row per condition, utterance WA / UA per model (mean over runs);
    the paper's Table 2 when the models are a normal and a denoising predictor."""
    labels = list(dict.fromkeys(label for r in all_results for label in r["conditions"]))
    lines = ["| condition | " + " | ".join(f"`{r['model']}` WA | UA" for r in all_results) + " |",
             "|---|" + "---|---|" * len(all_results)]
    for label in labels:
        cells = []
        for r in all_results:
            if label in r["conditions"]:
                m = _overall(r["conditions"][label])
                cells.append(f"{100 * m['wa']:.1f} | {100 * m['ua']:.1f}")
            else:
                cells.append(" | ")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
