"""`sercli evaluate` as a library call: an EvalRun (models, labelled speech, conditions,
programmes) scored model by model, and the tables that show the scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .context import CONTEXT_PRIOR_S


@dataclass
class EvalRun:
    """What `sercli evaluate` was asked to score; the fields mean what the options of the same names do."""

    utterances: list
    splits: list  # corpora.Split; empty: every utterance
    model_specs: tuple[str | None, ...] = (None,)  # None: the default model
    conditions: tuple = ()  # experiment.Condition, clean first; empty: clean only
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


def evaluate_models(run: EvalRun, log: Callable[[str], None] = print) -> list[dict]:
    """experiment.run_evaluation's results of each model, the same utterances decoded once and a
    model in several ensembles scored once; with programmes, each result's "programmes" holds
    programmes.score_programmes' scores on the same programmes for every model. Raises
    CorpusError, ModelError, NoiseError, ProgrammeError."""
    from .experiment import CLEAN, run_evaluation

    conditions = run.conditions or (CLEAN,)
    clean: dict = {}  # decoded utterances, shared by the models
    scored: dict = {}  # each checkpoint's posteriors: A, B and A+B score A and B once
    results = [run_evaluation(run.utterances, run.splits, spec, run.device, run.precision, run.cache_dir, log=log,
                              conditions=tuple(conditions), workers=run.workers,
                              clean=clean if len(conditions) > 1 else None, context=run.context,
                              context_prior_s=run.context_prior_s, scored_segments=scored)
               for spec in run.model_specs]
    if run.programmes:
        import tempfile

        from .programmes import ProgrammeConfig, score_programmes

        config = ProgrammeConfig(minutes=run.programme_minutes or ProgrammeConfig.minutes, seed=run.programme_seed)
        built: dict = {}  # every model is scored on the same programmes
        loaded: dict = {}
        with tempfile.TemporaryDirectory(prefix="sercli-programmes-") as folder:
            for spec, result in zip(run.model_specs, results):
                result["programmes"] = score_programmes(
                    run.utterances, run.splits, spec, run.programmes, config, run.music, Path(folder), run.device,
                    run.precision, built, loaded, log=log)
    return results


def results_tables(results: list[dict], n_conditions: int) -> str:
    """What `sercli evaluate` prints: one model's table with its confusions, or a table of
    conditions by model; then each model's programme table."""
    from .experiment import conditions_table, evaluation_table

    text = evaluation_table(results[0]) if len(results) == 1 and n_conditions == 1 else conditions_table(results)
    for result in results:
        if "programmes" in result:
            from .programmes import programme_table

            text += "\n" + programme_table(result["programmes"])
    return text
