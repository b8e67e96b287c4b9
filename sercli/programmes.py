"""Film-like programmes made of labelled speech: what `sercli evaluate --programmes` measures.

A programme is what our users analyse: one long file, many voices, music under some scenes.
It is a run of scenes, each a dialogue of two speakers taking 8-20 turns (mostly alternating;
a turn is one labelled utterance) with pauses of 0.25-1 s, every speaker at a level of their
own (spread over 12 dB); half the scenes have a music bed 15 dB below their speech, and some
are separated by 3-8 s of music alone. It is encoded like a film (AAC in an mp4 with a video
track) and analysed by exactly the `sercli analyze` pipeline (decoding, speech detection,
segmentation, the file's context, the model). Each utterance is then scored with the mean
posteriors of the segments that overlap it, weighted by the overlap; an utterance no segment
overlaps counts as wrong. Everything is drawn from a seed, so the same corpus, fold and seed
always give the same programmes.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .audio import MEDIA_EXTENSIONS, SAMPLE_RATE, AudioError, ffmpeg_binary, load_audio
from .corpora import Split, Utterance
from .noise import PROGRAMME_MUSIC, active_speech_power, fit_length, utterance_seed


class ProgrammeError(Exception):
    """A programme cannot be built; one line naming the cause."""


@dataclass(frozen=True)
class ProgrammeConfig:
    """How programmes are put together; times in seconds, levels in dB."""

    minutes: float = 15.0  # scenes are added until the programme is this long
    seed: int = 0
    turns: tuple[int, int] = (8, 20)  # per scene, inclusive
    alternation: float = 0.8  # chance that the next turn goes to the other speaker
    pause_s: tuple[float, float] = (0.25, 1.0)  # between turns
    speech_level_db: float = -26.0  # dBFS active-speech level at the middle of the voices' spread
    level_spread_db: float = 12.0  # each speaker's level is drawn within this range
    music_share: float = 0.5  # share of scenes with a music bed under them
    music_snr_db: float = 15.0  # the scene's active speech over the bed's power
    interlude_share: float = 0.5  # chance of music alone between two scenes
    interlude_s: tuple[float, float] = (3.0, 8.0)
    scene_gap_s: tuple[float, float] = (0.5, 1.5)  # silence between scenes and interludes


@dataclass(frozen=True)
class PlacedUtterance:
    """A labelled utterance as it lies in a programme (seconds from its start)."""

    utterance: Utterance
    start_s: float
    end_s: float


def music_files(folder: str | Path) -> list[Path]:
    """The music a programme draws beds and interludes from: the audio files of the folder's
    subfolders named in noise.PROGRAMME_MUSIC (../shared/data/noise's held-out genres; training
    never takes them), else of its music_* subfolders, else of the folder itself and all its
    subfolders. Raises ProgrammeError when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ProgrammeError(f"{folder}: no such folder of music")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    chosen = ([p for p in subfolders if p.name in PROGRAMME_MUSIC]
              or [p for p in subfolders if p.name.startswith("music_")] or [folder, *subfolders])
    found = sorted(p for sub in chosen for p in sub.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS)
    if not found:
        raise ProgrammeError(f"{folder}: no music files in it or its subfolders")
    return found


class _Decoded:
    """Decodes each file once, when first asked for."""

    def __init__(self) -> None:
        self.samples: dict[str, np.ndarray] = {}

    def __call__(self, path: str | Path) -> np.ndarray:
        key = str(path)
        if key not in self.samples:
            try:
                self.samples[key] = load_audio(key)
            except AudioError as exc:
                raise ProgrammeError(f"{key}: {exc}") from exc
        return self.samples[key]


def _at_level(samples: np.ndarray, level_db: float) -> np.ndarray:
    """samples scaled so that their active-speech power is level_db dBFS."""
    power = active_speech_power(samples)
    if power <= 0:
        return np.zeros(len(samples))
    return np.asarray(samples, dtype=np.float64) * np.sqrt(10 ** (level_db / 10) / power)


def build_programme(utterances: Sequence[Utterance], music: Sequence[Path], config: ProgrammeConfig,
                    key: str, decoded: _Decoded | None = None) -> tuple[np.ndarray, list[PlacedUtterance]]:
    """A programme of the speakers of `utterances` (16 kHz mono samples) and where each of its
    utterances lies. key: names the programme (e.g. fold1-2); with config.seed it fixes every
    draw. decoded: a cache of decoded files shared between programmes."""
    decoded = decoded or _Decoded()
    rng = utterance_seed(config.seed, f"programme:{key}")
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise ProgrammeError(f"programme {key}: a dialogue needs two speakers, the test speech has "
                             f"{len(speakers)} ({', '.join(speakers) or 'none'})")
    if not music:
        raise ProgrammeError(f"programme {key}: no music to put under scenes")
    spread = config.level_spread_db / 2
    level = {s: config.speech_level_db + rng.uniform(-spread, spread) for s in speakers}
    # Each speaker's utterances in a seeded order, taken in turn and reshuffled when used up, so
    # a programme repeats no utterance before it has used all of that speaker's.
    queues: dict[str, list[Utterance]] = {s: [] for s in speakers}
    own = {s: [u for u in utterances if u.speaker == s] for s in speakers}

    def next_utterance(speaker: str) -> Utterance:
        if not queues[speaker]:
            queues[speaker] = [own[speaker][i] for i in rng.permutation(len(own[speaker]))]
        return queues[speaker].pop()

    def silence(bounds: tuple[float, float]) -> np.ndarray:
        return np.zeros(int(rng.uniform(*bounds) * SAMPLE_RATE))

    pieces: list[np.ndarray] = []
    placed: list[PlacedUtterance] = []
    at = 0  # samples so far
    target = int(config.minutes * 60 * SAMPLE_RATE)
    while at < target:
        if placed and rng.random() < config.interlude_share:
            track = decoded(music[rng.integers(len(music))])
            length = int(rng.uniform(*config.interlude_s) * SAMPLE_RATE)
            interlude = _at_level(fit_length(track, length, rng), config.speech_level_db)
            for part in (interlude, silence(config.scene_gap_s)):
                pieces.append(part)
                at += len(part)
        pair = [speakers[i] for i in rng.choice(len(speakers), size=2, replace=False)]
        speaker = int(rng.integers(2))
        scene: list[np.ndarray] = []
        scene_at = at
        for turn in range(int(rng.integers(config.turns[0], config.turns[1] + 1))):
            if turn and rng.random() < config.alternation:
                speaker = 1 - speaker
            utterance = next_utterance(pair[speaker])
            voice = _at_level(decoded(utterance.path), level[pair[speaker]])
            placed.append(PlacedUtterance(utterance, scene_at / SAMPLE_RATE, (scene_at + len(voice)) / SAMPLE_RATE))
            pause = silence(config.pause_s)
            scene += [voice, pause]
            scene_at += len(voice) + len(pause)
        mixed = np.concatenate(scene)
        if rng.random() < config.music_share:
            bed = fit_length(decoded(music[rng.integers(len(music))]).astype(np.float64), len(mixed), rng)
            bed_power = float(np.mean(bed**2))
            if bed_power > 0:
                mixed = mixed + bed * np.sqrt(active_speech_power(mixed) / (bed_power * 10 ** (config.music_snr_db / 10)))
        for part in (mixed, silence(config.scene_gap_s)):
            pieces.append(part)
            at += len(part)
    return np.clip(np.concatenate(pieces), -1.0, 1.0).astype(np.float32), placed


def encode_mp4(samples: np.ndarray, target: Path) -> None:
    """16 kHz mono samples as a film's soundtrack: AAC, 48 kHz stereo, 128 kbit/s, in an mp4 with
    a small grey H.264 video track; written to a temporary name, then renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    seconds = len(samples) / SAMPLE_RATE
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        command = [ffmpeg_binary(), "-v", "error", "-y",
                   "-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:",
                   "-f", "lavfi", "-i", f"color=c=gray:s=160x90:r=5:d={seconds:.3f}",
                   "-map", "1:v", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage",
                   "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2", "-shortest", str(partial)]
        done = subprocess.run(command, input=np.asarray(samples, dtype=np.float32).tobytes(), capture_output=True)
        if done.returncode != 0:
            cause = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise ProgrammeError(f"{target}: ffmpeg could not encode the programme: {cause}")
        partial.replace(target)


def utterance_posteriors(segments, placed: Sequence[PlacedUtterance], labels: Sequence[str]) -> list[np.ndarray | None]:
    """Per placed utterance, the mean posteriors (in `labels` order) of the analysed segments
    (sercli.predict.SegmentResult) that overlap it, each weighted by its overlap in seconds;
    None where no segment overlaps it."""
    starts = np.array([s.start_s for s in segments])
    ends = np.array([s.end_s for s in segments])
    probs = np.array([[s.probs[label] for label in labels] for s in segments]).reshape(len(segments), len(labels))
    out = []
    for item in placed:
        overlap = np.clip(np.minimum(ends, item.end_s) - np.maximum(starts, item.start_s), 0.0, None)
        total = overlap.sum()
        out.append(None if total <= 0 else (overlap[:, None] * probs).sum(axis=0) / total)
    return out


def programme_accuracies(truth: Sequence[int], predicted: Sequence[int | None], n_classes: int) -> dict:
    """WA, UA and confusion of programme utterances; an undetected one (None) counts as wrong.
    The confusion has a last column for the undetected: rows truth, columns prediction."""
    confusion = np.zeros((n_classes, n_classes + 1), dtype=int)
    for t, p in zip(truth, predicted):
        confusion[t, n_classes if p is None else p] += 1
    rows = confusion.sum(axis=1)
    present = rows > 0
    count = int(rows.sum())
    return {"wa": float(np.trace(confusion[:, :n_classes]) / max(count, 1)),
            "ua": float((np.diag(confusion[:, :n_classes])[present] / rows[present]).mean()) if present.any() else 0.0,
            "count": count, "detected": float(1 - confusion[:, n_classes].sum() / max(count, 1)),
            "confusion": confusion.tolist()}


def score_programmes(utterances: Sequence[Utterance], splits: Sequence, model: str | None, count: int,
                     config: ProgrammeConfig, music: Sequence[Path], folder: Path, device: str = "auto",
                     precision: str = "auto", built: dict | None = None, loaded_models: dict | None = None,
                     log=print, context_window_s: float | None = None) -> dict:
    """Score a model (a name or path; A+B an ensemble; "{run}" each split's own checkpoint) on
    `count` programmes per split (sercli.corpora.Split) made of that split's test speakers only
    (with no splits, of every speaker), each analysed by sercli.predict.Pipeline with the
    defaults of `sercli analyze`. The mp4 files go to `folder`; built: a dict the caller keeps
    so that several models are scored on the same programmes, built once; loaded_models: a
    cache of loaded checkpoints; context_window_s: the file context's window instead of each
    model's own (as `sercli analyze --context-window`). Returns {"model", "programmes",
    "minutes", "music_snr_db", "music_share", "context_window_s", "runs": {run: {wa, ua, count, detected,
    confusion}}, "mean" (with several runs)}."""
    from .predict import FileFailure, Pipeline
    from .weights import is_routed, load_model, model_names, spec_of

    built = built if built is not None else {}
    loaded_models = loaded_models if loaded_models is not None else {}
    runs = list(splits) or [Split("all", None, frozenset(u.speaker for u in utterances), frozenset())]
    results: dict = {"model": model, "programmes": count, "minutes": config.minutes, "seed": config.seed,
                     "music_snr_db": config.music_snr_db, "music_share": config.music_share,
                     "context_window_s": context_window_s, "runs": {}}
    for split in runs:
        test = [u for u in utterances if u.speaker in split.test]
        decoded = _Decoded()  # one split's speech at a time
        for i in range(1, count + 1):
            key = f"{split.name}-{i}"
            if key not in built:
                samples, placed = build_programme(test, music, config, key, decoded)
                path = folder / f"programme-{key}.mp4"
                encode_mp4(samples, path)
                built[key] = (path, placed)
        models = []
        for name in model_names(model):
            spec = name.replace("{run}", split.name) if name else None
            if spec not in loaded_models:
                loaded_models[spec] = load_model(spec, device=device, precision=precision)
            models.append(loaded_models[spec])
        # sercli analyze's segmentation, batch, context and routing
        pipeline = Pipeline(models, context_window_s=context_window_s, route=is_routed(model))
        programmes = [built[f"{split.name}-{i}"] for i in range(1, count + 1)]
        truth, predicted, corpora = [], [], []
        for (path, placed), result in zip(programmes, pipeline.run([str(path) for path, _ in programmes])):
            if isinstance(result, FileFailure):
                raise ProgrammeError(f"{result.file}: {result.error}")
            for item, posteriors in zip(placed, utterance_posteriors(result.segments, placed, pipeline.labels)):
                truth.append(pipeline.labels.index(item.utterance.label))
                predicted.append(None if posteriors is None else int(np.argmax(posteriors)))
                corpora.append(item.utterance.corpus)
        scores = programme_accuracies(truth, predicted, len(pipeline.labels))
        if len(set(corpora)) > 1:  # whose utterances the programme figure is made of, and how each fares
            scores["by_corpus"] = {name: {k: v for k, v in programme_accuracies(
                [t for t, c in zip(truth, corpora) if c == name], [p for p, c in zip(predicted, corpora) if c == name],
                len(pipeline.labels)).items() if k != "confusion"} for name in sorted(set(corpora))}
        results["runs"][split.name] = {"model": spec_of((str(m.path) for m in models), pipeline.route),
                                       "test_speakers": sorted(split.test)} | scores
        log(f"programmes, {split.name}: WA {scores['wa']:.3f} UA {scores['ua']:.3f}, {scores['detected']:.1%} of "
            f"{scores['count']} utterances detected ({count} x {config.minutes:g} min)")
    if len(runs) > 1:
        results["mean"] = {key: float(np.mean([r[key] for r in results["runs"].values()])) for key in
                           ("wa", "ua", "detected")} | {key + "_std": float(np.std([r[key] for r in results["runs"].values()]))
                                                       for key in ("wa", "ua", "detected")}
    results["labels"] = list(pipeline.labels)
    return results


def programme_table(results: dict) -> str:
    """Markdown lines for score_programmes' results: per run and mean, UA by corpus, then the confusions."""
    from .metrics import by_corpus_lines

    window = results.get("context_window_s")
    how = "`sercli analyze`" if window is None else f"`sercli analyze --context-window {window:g}`"
    snr = results.get("music_snr_db", ProgrammeConfig.music_snr_db)
    share = results.get("music_share", ProgrammeConfig.music_share)
    lines = [f"Programmes: `{results['model'] or 'the default model'}`, {results['programmes']} per run of "
             f"{results['minutes']:g} min (seed {results['seed']}, music beds {snr:g} dB under the speech of "
             f"{100 * share:g}% of the scenes), "
             f"analysed as {how} analyses a file", "",
             "| run | utterances | detected | programme WA | programme UA |", "|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['count']} | {100 * r['detected']:.1f}% | {100 * r['wa']:.1f} | {100 * r['ua']:.1f} |")
    overall = results.get("mean") or next(iter(results["runs"].values()))
    if "mean" in results:
        m = results["mean"]
        lines.append(f"| mean ± std | | {100 * m['detected']:.1f}% | {100 * m['wa']:.1f} ± {100 * m['wa_std']:.1f} | "
                     f"{100 * m['ua']:.1f} ± {100 * m['ua_std']:.1f} |")
    lines += by_corpus_lines(results["runs"], lambda r: r.get("by_corpus"))
    for name, r in results["runs"].items():
        lines += ["", f"Confusion, {name}, programme utterances (rows: truth, columns: prediction; "
                      f"{', '.join(results['labels'])}, undetected):", "",
                  *("    " + " ".join(f"{c:5d}" for c in row) for row in r["confusion"])]
    lines += ["", f"programme WA {100 * overall['wa']:.1f}% UA {100 * overall['ua']:.1f}% "
                  f"({'mean of ' + str(len(results['runs'])) + ' runs' if 'mean' in results else 'one run'}), "
                  f"{100 * overall['detected']:.1f}% of utterances detected"]
    return "\n".join(lines) + "\n"
