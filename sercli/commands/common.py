"""What several commands share: output checks, worker counts, the process tuning of the
commands that run batches, and the options that choose labelled speech."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..report import EXIT_USAGE, fail


def check_output(path: Path, folder: bool = False) -> None:
    """A usage error (one line, exit 2) unless `path` (a file, or a folder to fill) can be written now."""
    from ..outputs import OutputError, check_folder, check_writable

    try:
        if folder:
            check_folder(path)
        else:
            check_writable(path)
    except OutputError as exc:
        fail(f"cannot write output {exc}", EXIT_USAGE)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def tune_for_batches() -> None:
    """Process settings for the commands that push batches through the network (analyze, train,
    evaluate, timeline of a media file), set by them alone and only from the command line:

    - OpenMP threads that sleep when idle instead of spinning leave the cores to decoding, voice
      activity and featurisation, which share them with the network (`python bench/cpu_profile.py`;
      the README's speed section has the figures). It takes effect only before torch loads,
      hence here, before the command imports it; a Python caller who wants it sets
      OMP_WAIT_POLICY=PASSIVE before importing torch.
    - glibc keeps freed memory for the next batch instead of faulting fresh pages in (sercli.heap).
      The Python API leaves the caller's allocator alone; call sercli.heap.retain_freed_memory()
      to get the same.
    """
    from ..heap import retain_freed_memory

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    retain_freed_memory()


def corpus_options(verb: str, fold_help: str, required: bool = True):
    """The options that choose labelled speech and its folds, shared by train and evaluate."""
    options = [
        click.option("--corpus", "corpora", multiple=True, required=required, metavar="NAME=PATH",
                     help=f"A corpus to {verb}, repeatable: manifest=FILE.csv (columns path, emotion, speaker[, fold]), "
                          "ravdess=DIR (Actor_NN folders), nemo=DIR (data.tsv + samples/) or iemocap=DIR (Session1..5)."),
        click.option("--include-scripted", is_flag=True,
                     help="IEMOCAP: use scripted dialogs too (default: improvised only)."),
        click.option("--excited-as-happy", is_flag=True, help="IEMOCAP: count 'excited' as happy."),
        click.option("--folds", "folds_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="CSV speaker,fold assigning every speaker to a fold (e.g. ../shared/data/folds.csv). "
                          "IEMOCAP's folds are its sessions."),
        click.option("--fold", default=None, metavar="all|none|N", help=fold_help),
        click.option("--validation", type=click.Choice(["auto", "train", "fold"]), default="auto", show_default=True,
                     help="Validation speakers: drawn from the training folds (train), or each speaker of the "
                          "held-out fold in turn with the others testing (fold: IEMOCAP's protocol, both roles). "
                          "auto: fold for IEMOCAP alone, else train."),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def load_corpora(corpora, include_scripted, excited_as_happy, folds_path):
    """The utterances of every --corpus, with --folds' folds if given."""
    from ..corpora import assign_folds, read_corpus, read_folds

    utterances = []
    for spec in corpora:
        utterances += read_corpus(spec, scripted=include_scripted, excited_as_happy=excited_as_happy)
    if folds_path is not None:
        utterances = assign_folds(utterances, read_folds(folds_path))
    return utterances
