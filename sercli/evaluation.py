"""Scoring checkpoints on labelled speech, clean or under noise conditions (run_evaluation), and
`sercli evaluate` as a library call: an EvalRun scored model by model (evaluate_models), then
its tables (results_tables). Never imported by the inference path."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .context import CONTEXT_PRIOR_S, context_prior, routes_to_films, voice_context
from .corpora import Split, Utterance
from .dataset import FeaturisingPool, SegmentSet, build_segments, context_columns, normalise_contexts, split_sets
from .metrics import conditions_table, evaluate, evaluation_table, mean_row, utterance_scores_by
from .noise import NoisyUtterances, babble_pool, cached_noise
from .train import predict_segments


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
            noises[pool_key] = babble_pool([u.path for u in utterances if u.speaker not in split.test],
                                           condition.seed, f"babble-pool:{split.name}", clean)
        return (NoisyUtterances(paths, ("babble",), condition.snr_db, condition.seed, condition.name,
                                noises[pool_key]), f"babble:{split.name}:{condition.snr_db}:{condition.seed}")
    cached_noise(condition.folder)  # a missing or empty folder fails here, in the caller's process
    return (NoisyUtterances(paths, (condition.folder,), condition.snr_db, condition.seed, condition.name),
            f"{condition.folder}:{condition.snr_db}:{condition.seed}")


def run_evaluation(utterances: list[Utterance], splits: list[Split], model: str | None, device: str, precision: str,
                   cache_dir: Path | None, log=print, conditions: tuple[Condition, ...] = (CLEAN,),
                   loaded_models: dict | None = None, workers: int = 1, clean: dict | None = None,
                   context: str = "speaker", context_prior_s: float = CONTEXT_PRIOR_S,
                   scored_segments: dict | None = None, pool: FeaturisingPool | None = None) -> dict:
    """Score a checkpoint (or, with "{run}" in `model`, each split's own checkpoint; or, with
    A+B, an ensemble: the mean of its models' segment posteriors; or, with A|B, a routed pair:
    B's posteriors where a segment's context holds 10 s of speech or more, A's elsewhere, as
    analysis routes them) on the test speakers of each
    split; with no splits, on every utterance. Each condition (clean, or a noise
    at an SNR) is scored separately: {"model", "conditions": {label: {"runs", "mean"}}}; the clean
    condition's runs and mean are also at the top level.

    workers: featurising processes (build_segments), in `pool` if given (a FeaturisingPool kept
    by the caller for many calls), else in one that lives for this call. clean: build_segments' memo of decoded
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
    from .weights import is_routed, load_model, model_names

    speakers = np.array([u.speaker for u in utterances])
    corpora = np.array([u.corpus for u in utterances])
    runs = splits or [Split("all", None, frozenset(speakers.tolist()), frozenset())]
    models = loaded_models if loaded_models is not None else {}
    scored_segments = scored_segments if scored_segments is not None else {}
    if clean is None and any(c.snr_db is not None for c in conditions):
        clean = {}
    results: dict = {"model": model, "context": context, "conditions": {}}
    with contextlib.ExitStack() as own:
        if pool is None and workers > 1:
            pool = own.enter_context(FeaturisingPool(workers))
        tests = _TestSets(utterances, speakers, cache_dir, log, pool, clean, context, context_prior_s)
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
                    if memo_key not in scored_segments:  # else scored here already, alone or in an ensemble
                        test_set, columns = tests.of(loaded, condition, split)
                        scored_segments[memo_key] = (predict_segments(loaded.net, test_set, loaded.device,
                                                                      loaded.precision == "bf16"),
                                                     test_set.utterance, test_set.labels, columns)
                    members.append((loaded, *scored_segments[memo_key]))
                scored["runs"][split.name] = _score_run(members, model, condition, split,
                                                        (context, context_prior_s), results, scored_segments, log,
                                                        corpora, route=is_routed(model))
            if len(scored["runs"]) > 1:
                _, scored["mean"] = mean_row("mean", [{"test": r} for r in scored["runs"].values()])
            results["conditions"][condition.label] = scored
    first = next(iter(results["conditions"].values()))
    results.update(first)
    return results


@dataclass
class _TestSets:
    """The test segments of each model's features under each condition: clean speech featurised
    once per feature config for every split, noisy speech per split (its test speakers only)."""

    utterances: list[Utterance]
    speakers: np.ndarray
    cache_dir: Path | None
    log: Callable[[str], None]
    pool: FeaturisingPool | None
    clean: dict | None
    context: str
    context_prior_s: float
    datasets: dict = field(default_factory=dict)
    noises: dict = field(default_factory=dict)  # babble's talkers per split

    def of(self, loaded, condition: Condition, split: Split) -> tuple[SegmentSet, torch.Tensor]:
        """The model's test set, standardised as it wants, and the columns of speech in each segment's context."""
        features, prior = loaded.features, context_prior(loaded.meta, self.context_prior_s)
        # a clip alone is typed as analysis types it; a speaker's whole speech is one voice
        voices = voice_context(loaded.meta, self.context_prior_s) if self.context == "utterance" else None
        if condition.snr_db is None:  # clean: featurise every utterance once, pick each split's
            key = (tuple(sorted(asdict(features).items())), "clean")
            if key not in self.datasets:
                self.datasets[key] = build_segments(self.utterances, features, self.cache_dir, self.log,
                                                    clean=self.clean, pool=self.pool)
            test_set = split_sets(self.datasets[key], self.speakers, split)[2]
            columns = context_columns(test_set, self.utterances, self.context)
            # standardised with this model's own prior (and voice types): each fold model's comes
            # from its own training speakers, never from another fold's, whose include these
            return (normalise_contexts(test_set, self.utterances, self.context, prior, voices)
                    if features.context_norm else test_set), columns
        heard = [u for u in self.utterances if u.speaker in split.test]  # noisy: this split's test speech only
        corrupt, corrupt_key = _corruption(condition, self.utterances, split, heard, self.noises, self.clean)
        test_set = build_segments(heard, features, self.cache_dir, self.log, corrupt, corrupt_key, clean=self.clean,
                                  pool=self.pool)
        columns = context_columns(test_set, heard, self.context)
        return (normalise_contexts(test_set, heard, self.context, prior, voices)
                if features.context_norm else test_set), columns


def _score_run(members: list, model: str | None, condition: Condition, split: Split, view: tuple,
               results: dict, scored_segments: dict, log, corpora: np.ndarray, route: bool = False) -> dict:
    """One split's scores from its members' segment posteriors (their mean for an ensemble, or
    for a routed pair each segment's chosen one; kept in scored_segments under the members'
    paths joined by '+' or '|' and `view`, the context and its prior's weight); notes the model
    and context view in `results`. corpora: each utterance's corpus; with several among the
    split's, "by_corpus" holds each one's utterance scores."""
    from .weights import ModelError, spec_of

    _, _, utterance, labels, columns = members[0]
    if any(not torch.equal(other, utterance) for _, _, other, _, _ in members[1:]):
        raise ModelError(f"{model}: the models cut the speech into different segments "
                         "(different maximum lengths?), so their posteriors cannot be averaged")
    if route:
        (clips, clip_posteriors, *_), (_, film_posteriors, *_) = members
        films = torch.from_numpy(routes_to_films(columns.numpy(), clips.features))
        segment_posteriors = torch.where(films[:, None], film_posteriors, clip_posteriors)
    else:
        segment_posteriors = sum(p for _, p, *_ in members) / len(members)
    joined = spec_of((str(m.path) for m, *_ in members), route)
    if len(members) > 1:
        scored_segments[(joined, condition.label, split.name, *view)] = (segment_posteriors, utterance, labels, columns)
    results["model"] = model or str(members[0][0].path)
    if not any(m.features.context_norm for m, *_ in members):
        results["context"] = None  # the view does not apply: nothing is context-normalised
    scores = evaluate(segment_posteriors, SegmentSet(torch.empty(0), torch.empty(0), utterance, labels))
    corpus = corpora[utterance.numpy()]
    if len(set(corpus.tolist())) > 1:
        scores["by_corpus"] = utterance_scores_by(segment_posteriors, SegmentSet(
            torch.empty(0), torch.empty(0), utterance, labels), corpus)
    log(f"{condition.label}, {split.name}: utterance WA {scores['utterance']['wa']:.3f} "
        f"UA {scores['utterance']['ua']:.3f}, segment WA {scores['segment']['wa']:.3f} "
        f"UA {scores['segment']['ua']:.3f} ({scores['utterance']['count']} utterances)")
    return {"model": joined, "test_speakers": sorted(split.test)} | scores


@dataclass
class EvalRun:
    """What `sercli evaluate` was asked to score; the fields mean what the options of the same names do."""

    utterances: list
    splits: list  # corpora.Split; empty: every utterance
    model_specs: tuple[str | None, ...] = (None,)  # None: the default model
    conditions: tuple[Condition, ...] = ()  # clean first; empty: clean only
    device: str = "auto"
    precision: str = "auto"
    cache_dir: Path | None = None
    workers: int = 1
    context: str = "speaker"
    context_prior_s: float = CONTEXT_PRIOR_S
    programmes: int = 0  # film-like programmes per run, 0: none
    programme_minutes: float | None = None  # None: ProgrammeConfig's
    programme_seed: int = 0
    music: list[Path] = field(default_factory=list)  # for the programmes' beds and interludes
    context_window_s: float | None = None  # the programmes' file context; None: each model's own
    programme_snr_db: float | None = None  # the programmes' music beds under the speech; None: ProgrammeConfig's
    programme_music_share: float | None = None  # the share of scenes with a bed; None: ProgrammeConfig's


def evaluate_models(run: EvalRun, log: Callable[[str], None] = print) -> list[dict]:
    """run_evaluation's results of each model, the same utterances decoded once and a
    model in several ensembles scored once; with programmes, each result's "programmes" holds
    programmes.score_programmes' scores on the same programmes for every model. Raises
    CorpusError, ModelError, NoiseError, ProgrammeError."""
    conditions = run.conditions or (CLEAN,)
    clean: dict = {}  # decoded utterances, shared by the models
    scored: dict = {}  # each checkpoint's posteriors: A, B and A+B score A and B once
    with FeaturisingPool(run.workers) as pool:  # its processes serve every model and condition
        results = [run_evaluation(run.utterances, run.splits, spec, run.device, run.precision, run.cache_dir,
                                  log=log, conditions=tuple(conditions), workers=run.workers,
                                  clean=clean if len(conditions) > 1 else None, context=run.context,
                                  context_prior_s=run.context_prior_s, scored_segments=scored,
                                  pool=pool if run.workers > 1 else None)
                   for spec in run.model_specs]
    if run.programmes:
        import tempfile

        from .programmes import ProgrammeConfig, score_programmes

        config = ProgrammeConfig(minutes=run.programme_minutes or ProgrammeConfig.minutes, seed=run.programme_seed,
                                 music_snr_db=ProgrammeConfig.music_snr_db if run.programme_snr_db is None
                                 else run.programme_snr_db,
                                 music_share=ProgrammeConfig.music_share if run.programme_music_share is None
                                 else run.programme_music_share)
        built: dict = {}  # every model is scored on the same programmes
        loaded: dict = {}
        with tempfile.TemporaryDirectory(prefix="sercli-programmes-") as folder:
            for spec, result in zip(run.model_specs, results):
                result["programmes"] = score_programmes(
                    run.utterances, run.splits, spec, run.programmes, config, run.music, Path(folder), run.device,
                    run.precision, built, loaded, log=log, context_window_s=run.context_window_s)
    return results


def results_tables(results: list[dict], n_conditions: int) -> str:
    """What `sercli evaluate` prints: one model's table with its confusions, or a table of
    conditions by model; then each model's programme table."""
    text = evaluation_table(results[0]) if len(results) == 1 and n_conditions == 1 else conditions_table(results)
    for result in results:
        if "programmes" in result:
            from .programmes import programme_table

            text += "\n" + programme_table(result["programmes"])
    return text
