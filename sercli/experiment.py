"""`sercli train` as a library call: a TrainRun's splits (folds) trained one after another with
sercli.train, each tested, saved and reported; the noisy copy of training speech for
augmentation. Never imported by the inference path."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .context import CONTEXT_PRIOR_S, Voices, fit_voices, segment_means
from .corpora import CorpusError, Split, Utterance
from .dataset import (FeaturisingPool, SegmentSet, build_segments, normalise_contexts, population_moments,
                      split_sets)
from .features import FeatureConfig
from .metrics import confusion_lines, evaluate, mean_row
from .model import ModelConfig
from .noise import BABBLE_TALKERS, NoisyUtterances, babble_pool, cached_noise
from .train import ContextMix, TrainConfig, predict_segments, train_model
from .weights import atomic_write_bytes, bf16_supported, save_checkpoint


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
    context: str = "speaker"  # context-normalised features: standardised over the speaker's or the utterance's speech


def run_training(run: TrainRun) -> dict:
    """Train one model per split (see corpora.plan_splits) and write the reports. Features with
    denoise: train on the harmonic model's spectrograms (sercli.denoise), the paper's modified
    predictor. two_step: per split, a four-class network of model_config (or the split's
    checkpoint from `first_step`, a path with "{run}") and three binary CNN5 networks, bundled
    (see _two_step). augmentation: also featurise a noisy copy of each run's training speech and
    train on a mix of the two (see NoiseAugmentation); validation and test speech stay clean.
    Returns each split's metrics by name; a split whose metrics.json exists is not trained again."""
    if run.augmentation is not None and run.two_step:
        raise CorpusError("noise augmentation trains one network; the two-step predictor is not supported")
    if run.train_config.context_utterance or run.train_config.context_pair:
        if run.two_step:
            raise CorpusError("context_utterance and context_pair train one network; the two-step predictor is "
                              "not supported")
        if not (run.features.context_norm and run.context == "speaker"):
            raise CorpusError("context_utterance and context_pair move speaker-normalised segments to other "
                              "contexts: they need --context-norm and --context speaker")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    with open(run.out_dir / "train.log", "a", encoding="utf-8") as log_file, FeaturisingPool(run.workers) as pool:
        def log(message: str) -> None:
            line = f"{time.strftime('%H:%M:%S')} {message}"
            print(line, flush=True)
            log_file.write(line + "\n")
            log_file.flush()

        utterances = run.utterances
        copies = sum(u.perturbed for u in utterances)
        log(f"{run.command or 'training'}: {len(utterances) - copies} utterances, "
            f"{len({u.speaker for u in utterances})} speakers"
            + (f", {copies} speed, channel or pair copies" if copies else ""))
        plain = _build_by_copy(utterances, run.features, run.cache_dir, log, pool if run.workers > 1 else None)
        log(f"{len(plain.labels)} segments")
        # each speaker's segments standardised over the speaker's speech; by utterance, that
        # needs each split's prior, so it is done per split
        by_speaker = run.features.context_norm and run.context == "speaker"
        data = normalise_contexts(plain, utterances, "speaker") if by_speaker else plain
        decoded: dict = {}  # build_segments' memo: the noisy copies of the runs decode each utterance once
        results = {}
        for split in run.splits:
            metrics_path = run.out_dir / split.name / "metrics.json"
            if metrics_path.is_file():
                log(f"{split.name}: done already ({metrics_path})")
                results[split.name] = json.loads(metrics_path.read_text())
            else:
                results[split.name] = _train_split(run, split, plain, data, pool if run.workers > 1 else None,
                                                   decoded, log)
        _write_report(run.out_dir, results, run.model_config, run.command, run.two_step, run.features.window_ms)
    return results


def _build_by_copy(utterances: list[Utterance], features: FeatureConfig, cache_dir: Path | None, log,
                   pool: FeaturisingPool | None) -> SegmentSet:
    """build_segments of the utterances, the recorded ones and each speed's or channel's copies
    and the pair copies (Utterance.speed, .channel, .then) built and cached apart, so that a run with copies reuses the
    recorded speech's cache and each copy's, and one without them is cut and keyed as before."""
    kinds = sorted({(u.speed, u.channel, u.then is not None) for u in utterances},
                   key=lambda k: (k != (1.0, "", False), k))
    parts = []
    for kind in kinds:
        index = [i for i, u in enumerate(utterances) if (u.speed, u.channel, u.then is not None) == kind]
        part = build_segments([utterances[i] for i in index], features, cache_dir, log, pool=pool)
        parts.append(SegmentSet(part.spectrograms, part.n_frames, torch.tensor(index)[part.utterance], part.labels))
    if len(parts) == 1:
        return parts[0]
    return SegmentSet(*(torch.cat([getattr(p, name) for p in parts])
                        for name in ("spectrograms", "n_frames", "utterance", "labels")))


def _train_split(run: TrainRun, split: Split, plain: SegmentSet, data: SegmentSet, pool, decoded: dict,
                 log) -> dict:
    """Train, test and save one split's model (run folder: its name); returns its metrics.
    plain: the segments before context normalisation, data: as the network sees them."""
    name, fold_dir, device = split.name, run.out_dir / split.name, run.device
    speakers = np.array([u.speaker for u in run.utterances])
    copies = np.array([u.perturbed for u in run.utterances])
    rate = run.features.context_rate
    prior = _training_prior(plain, speakers, split, rate, copies) if run.features.context_norm else None
    voices = _training_voices(plain, run.utterances, split, rate) if run.features.context_voices else None
    if prior is not None and run.context == "utterance":
        data = normalise_contexts(plain, run.utterances, "utterance", prior, voices)
    train_set, valid_set, test_set = split_sets(data, speakers, split, copies)
    log(f"{name}: train {train_set.n_utterances} utterances / {len(train_set.labels)} segments, "
        f"validation speakers {sorted(split.valid)}, test {test_set.n_utterances} utterances")
    started = time.monotonic()
    members = None
    if run.two_step:
        spec = run.first_step.replace("{run}", name) if run.first_step else None
        net, members, info = _two_step(run.model_config, run.features, train_set, valid_set, run.train_config,
                                       device, fold_dir, spec, log, _group_ids(run, speakers))
    else:
        noisy = noisy_raw = mix = None
        if run.augmentation is not None:
            noisy, noisy_raw = _noisy_copy(run.utterances, split, run.features, run.augmentation, train_set,
                                           run.cache_dir, log, pool, decoded, run.context, prior, keep_raw=True)
        if run.train_config.context_utterance or run.train_config.context_pair:
            talkers = np.array([u.talker for u in run.utterances])  # a perturbed copy is a voice of its own
            speaker_ids = torch.from_numpy(np.unique(talkers, return_inverse=True)[1].reshape(-1))
            mix = ContextMix.build(split_sets(plain, speakers, split, copies)[0], speaker_ids, prior, noisy_raw,
                                  run.features.context_rate, voices)
        net, info = train_model(run.model_config, train_set, valid_set, run.train_config, device,
                                fold_dir / "state.pt", log, noisy=noisy,
                                noisy_share=run.augmentation.share if run.augmentation is not None else 0.0,
                                groups=_group_ids(run, speakers), mix=mix)
    metrics = {"fold": split.fold, "role": split.role, "validation_speakers": sorted(split.valid),
               "test_speakers": sorted(split.test), "best_epoch": info["best_epoch"],
               "valid_wa": info["best_valid_wa"], "train_seconds": time.monotonic() - started,
               "history": info["history"]}
    if split.test:
        scores = evaluate(predict_segments(net, test_set, device, info["bf16"]), test_set)
        metrics["test"] = scores
        log(f"{name}: test utterance WA {scores['utterance']['wa']:.3f} UA {scores['utterance']['ua']:.3f}, "
            f"segment WA {scores['segment']['wa']:.3f} UA {scores['segment']['ua']:.3f}")
    main_state = net.four.state_dict() if run.two_step else net.state_dict()
    save_checkpoint(fold_dir / "model.pt", run.model_config, main_state, run.features,
                    _meta(run, split, speakers, info, metrics, prior, voices), members=members)
    atomic_write_bytes(fold_dir / "metrics.json", json.dumps(metrics, indent=1).encode())
    (fold_dir / "state.pt").unlink(missing_ok=True)
    return metrics


def _meta(run: TrainRun, split: Split, speakers: np.ndarray, info: dict, metrics: dict,
          prior: tuple[np.ndarray, np.ndarray, float] | None, voices: Voices | None = None) -> dict:
    """The checkpoint's meta: how it was trained, on whom, its context prior and its scores."""
    config, training_speakers = run.model_config, sorted(set(speakers.tolist()) - split.valid - split.test)
    speeds = sorted({u.speed for u in run.utterances} - {1.0})
    channels = sorted({u.channel for u in run.utterances} - {""})
    pairs = sum(u.then is not None for u in run.utterances)
    meta = {
        "name": (f"egemaps-{split.name}" if run.features.kind == "egemaps" else
                 f"{'two-step' if run.two_step else config.topology}-{config.grid_hz}hz-{split.name}"),
        "training": {"command": run.command, "argv": run.argv, "sercli": __version__,
                     "date": date.today().isoformat(),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "device": str(run.device), "corpora": sorted({u.corpus for u in run.utterances}),
                     "speakers_train": training_speakers,
                     "speakers_validation": sorted(split.valid), "speakers_test": sorted(split.test),
                     "test_fold": split.fold,
                     "config": asdict(run.train_config), "best_epoch": info["best_epoch"],
                     **({"noise_augmentation": asdict(run.augmentation)} if run.augmentation is not None else {}),
                     **({"speed_augmentation": speeds} if speeds else {}),
                     **({"channel_augmentation": channels} if channels else {}),
                     **({"pair_augmentation": pairs} if pairs else {})},
    }
    if prior is not None:  # the moments of the training speakers' speech
        meta["context_prior"] = {"mean": prior[0].tolist(), "variance": prior[1].tolist()}
        meta["training"]["context"] = run.context
    if voices is not None:  # the voice-type classifier and each type's moments
        meta["context_voices"] = voices.to_meta()
    meta["metrics"] = {"valid_wa": info["best_valid_wa"]} | (
        {"test_wa": metrics["test"]["utterance"]["wa"], "test_ua": metrics["test"]["utterance"]["ua"]}
        if split.test else {})
    return meta


def _group_ids(run: TrainRun, speakers: np.ndarray) -> torch.Tensor | None:
    """Each utterance's speaker or corpus as an integer, as run.train_config.balance asks
    (train_model's groups); None when classes alone are balanced."""
    balance = run.train_config.balance
    if balance == "class":
        return None
    names = speakers if balance == "speaker" else np.array([u.corpus for u in run.utterances])
    return torch.from_numpy(np.unique(names, return_inverse=True)[1].reshape(-1))


def _training_prior(plain: SegmentSet, speakers: np.ndarray, split: Split, rate: float,
                    copies: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The prior of a split's contexts: the per-bin moments of its training speakers' recorded
    speech (the checkpoint's context_prior; not their speed or channel `copies`), weighted as
    CONTEXT_PRIOR_S of speech at `rate` (the features' context_rate), as analysis weighs it."""
    members = ~np.isin(speakers, sorted(split.valid | split.test))
    if copies is not None:
        members &= ~copies
    members = torch.from_numpy(members)[plain.utterance]
    mean, variance, _ = population_moments(plain, members)
    return mean, variance, CONTEXT_PRIOR_S * rate


def _training_voices(plain: SegmentSet, utterances: list[Utterance], split: Split, rate: float) -> Voices:
    """The voice-typed contexts of a split (FeatureConfig.context_voices): a classifier of its
    training speakers' segments by their corpus gender label, and each type's moments, weighted
    as CONTEXT_PRIOR_S of speech at `rate`."""
    held_out = split.valid | split.test
    unlabelled = sorted({u.speaker for u in utterances if u.voice is None and u.speaker not in held_out})
    if unlabelled:
        raise CorpusError(f"{split.name}: voice-typed contexts (context_voices) learn from each training speaker's "
                          f"gender, which the corpus does not give for {', '.join(unlabelled[:5])} (a manifest's "
                          "gender column: female or male)")
    training = torch.from_numpy(np.array([u.speaker not in held_out and not u.perturbed
                                          for u in utterances]))[plain.utterance]
    rows = torch.nonzero(training).squeeze(1)
    female = np.array([utterances[i].voice == "female" for i in plain.utterance[rows].tolist()])
    try:
        return fit_voices(segment_means(plain.spectrograms[rows], plain.n_frames[rows]), female,
                          CONTEXT_PRIOR_S * rate)
    except ValueError as exc:
        raise CorpusError(f"{split.name}: {exc}") from None


def _two_step(model_config: ModelConfig, features: FeatureConfig, train_set: SegmentSet, valid_set: SegmentSet,
              train_config: TrainConfig, device: torch.device, fold_dir: Path, first_step: str | None, log,
              group_ids: torch.Tensor | None):
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
        net, info = train_model(config, train, valid, train_config, device, fold_dir / f"state-{name}.pt", log,
                                groups=group_ids)
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
        line, summary["mean"] = mean_row("mean ± std", list(tested.values()))
        lines.append(line)
        roles = sorted({m.get("role", 0) for m in tested.values()})
        if len(roles) > 1:  # validation inside the fold: one mean per role, e.g. IEMOCAP's F and M
            summary["by_role"] = {}
            for role in roles:
                runs = [m for m in tested.values() if m.get("role", 0) == role]
                who = ", ".join(sorted(s for m in runs for s in m["validation_speakers"]))
                line, summary["by_role"][who] = mean_row(f"mean, validation {who}", runs)
                lines.append(line)
    for name, m in tested.items():
        lines += confusion_lines(name, m["test"]["utterance"]["confusion"])
    atomic_write_bytes(out_dir / "results.md", ("\n".join(lines) + "\n").encode())
    atomic_write_bytes(out_dir / "results.json", json.dumps(summary, indent=1).encode())


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


def _noisy_copy(utterances: list[Utterance], split: Split, features: FeatureConfig, augmentation: NoiseAugmentation,
                train_set: SegmentSet, cache_dir: Path | None, log, pool: FeaturisingPool | None,
                decoded: dict, context: str = "speaker",
                prior: tuple[np.ndarray, np.ndarray, float] | None = None,
                keep_raw: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The spectrograms of the noisy copy of a run's training segments, in train_set's order
    (context-normalised when the features say so, as the clean copy is: over each speaker's
    noisy speech, or over each utterance's with the split's prior). Babble is drawn from the run's own training speakers, never
    its validation or test speakers. keep_raw: also return the spectrograms before normalisation.
    """
    training = [u for u in utterances if u.speaker not in split.valid | split.test]
    talkers = None
    if "babble" in augmentation.sources:
        recorded = [u for u in training if not u.perturbed]  # babble of the recorded voices
        if len(recorded) < BABBLE_TALKERS[0]:
            raise CorpusError(f"{split.name}: babble needs at least {BABBLE_TALKERS[0]} training utterances, "
                              f"there are {len(recorded)}")
        talkers = babble_pool([u.path for u in recorded], augmentation.seed, f"augment-pool:{split.name}", decoded)
    for source in augmentation.sources:
        if source != "babble":
            cached_noise(source)  # a missing or empty folder fails here, in the caller's process
    key = json.dumps([asdict(augmentation), split.name, sorted({u.speaker for u in training})]
                     + ([sorted({u.speed for u in training})] if any(u.speed != 1 for u in training) else [])
                     + ([sorted({u.channel for u in training})] if any(u.channel for u in training) else []))
    corrupt = NoisyUtterances([u.key for u in training], augmentation.sources, augmentation.snr_db, augmentation.seed,
                              "augment", talkers)
    noisy = build_segments(training, features, cache_dir, log, corrupt, f"augment:{key}", clean=decoded, pool=pool)
    if not (torch.equal(noisy.n_frames, train_set.n_frames) and torch.equal(noisy.labels, train_set.labels)):
        raise CorpusError(f"{split.name}: the noisy copy of the training speech is not cut like the clean one")
    raw = noisy.spectrograms
    if features.context_norm:
        noisy = normalise_contexts(noisy, training, context, prior if context == "utterance" else None)
    return (noisy.spectrograms, raw) if keep_raw else noisy.spectrograms


