"""`sercli train`: options (from the command line, ./sercli.toml or --config) in, one TrainRun
out, handed to sercli.experiment.run_training."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from ..report import EXIT_FAILED, EXIT_USAGE, fail
from .common import check_output, corpus_options, default_workers, load_corpora, tune_for_batches

TRAIN_CONFIG = "sercli.toml"  # in the working directory: the [train] table holds train's options
TRAIN_CONFIG_EXAMPLE = """
  [train]
  corpus = ["manifest=data/ravdess/manifest.csv", "manifest=data/nemo/manifest.csv"]
  folds = "data/folds.csv"
  out = "runs/x"
  epochs = 20
"""
TRAIN_EXAMPLES = f"""
\b
Examples:
  sercli train --corpus manifest=data/ravdess/manifest.csv --folds data/folds.csv --out runs/x
  sercli train --fold all                  with corpus, folds and out in ./{TRAIN_CONFIG}
  sercli train --fold 1 --epochs 1         one quick fold, the rest from ./{TRAIN_CONFIG}
  sercli train --config denoise.toml --denoise --out runs/dn
\b
./{TRAIN_CONFIG} (paths relative to the working directory):
{TRAIN_CONFIG_EXAMPLE.strip(chr(10))}
"""


CONFIG_SETTINGS = "sercli.train.config_settings"  # ctx.meta: the config file's --set pairs


def _train_config(ctx: click.Context, path: Path | None) -> None:
    """Read the [train] table of `path` (or of ./sercli.toml when there is one) into the command's
    defaults, keyed by long option names with _ for -; options on the command line still win."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    if ctx.resilient_parsing:
        return
    source = path or Path(TRAIN_CONFIG)
    if path is None and not source.is_file():
        return
    try:
        with open(source, "rb") as handle:
            table = tomllib.load(handle).get("train")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror}", ctx, param_hint="--config") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.UsageError(f"{source}: not valid TOML: {exc}") from None
    if table is None:
        if path is not None:
            raise click.UsageError(f"{source}: no [train] table (an example:{TRAIN_CONFIG_EXAMPLE.rstrip()})")
        return
    if not isinstance(table, dict):
        raise click.UsageError(f"{source}: train is not a table; write [train] with key = value lines under it")
    options = {}
    for param in ctx.command.params:
        longest = max((o for o in param.opts if o.startswith("--")), key=len, default=None)
        if isinstance(param, click.Option) and longest and param.expose_value:
            options[longest[2:].replace("-", "_")] = param
    defaults = {}
    for key, value in table.items():
        param = options.get(key)
        if param is None:
            raise click.UsageError(f"{source}: [train] has no option {key!r}; the options are "
                                   + ", ".join(sorted(options)))
        if param.multiple and not isinstance(value, list):
            value = [value]
        if isinstance(param.type, (click.Choice, click.types.StringParamType)):
            value = [str(v) for v in value] if param.multiple else str(value)
        try:
            param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{source}: [train] {key} = {value!r}: {exc.format_message()}") from None
        defaults[param.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[CONFIG_SETTINGS] = tuple(defaults.get("settings", ()))


@click.command(epilog=TRAIN_EXAMPLES)
@corpus_options("train on", "Test fold(s) to run [default: all]; none trains one model on every speaker, "
                 "with validation speakers held out.", required=False)
@click.option("--topology", type=click.Choice(["cnn-lstm", "cnn5", "two-step", "egemaps"]), default="cnn-lstm",
              show_default=True,
              help="3 conv layers + BiLSTM (paper Figure 1), the 5-conv CNN, the paper's two-step predictor "
                   "(a CNN-LSTM, then three binary CNN5 networks, neutral against angry, happy, sad, where it "
                   "says neutral, bundled in one checkpoint), or an MLP on each segment's eGeMAPS functionals "
                   "(openSMILE, level-normalised; no spectrogram, so no --denoise, and context normalisation "
                   "only where --context-norm is given: the default model's recipe).")
@click.option("--first-step", default=None, metavar="RUN/{run}/model.pt",
              help="With --topology two-step: take each run's four-class network from this earlier training "
                   "run (same folds and validation) instead of training it again.")
@click.option("--grid", type=click.Choice(["10", "20"]), default="10", show_default=True, help="Frequency grid, Hz.")
@click.option("--window", type=click.Choice(["40", "20"]), default="40", show_default=True, help="Window, ms.")
@click.option("--denoise", is_flag=True,
              help="Train on the noise filter's spectrograms (voiced frames rebuilt from their pitch): the "
                   "model `sercli analyze --denoise` needs.")
@click.option("--context-norm/--no-context-norm", default=True, show_default=True,
              help="Standardise each frequency bin over the speaker's speech (in analysis: over the file's), "
                   "which keeps new speakers' voices from shifting every prediction the same way; the "
                   "checkpoint remembers it. With --topology egemaps each functional, and off unless given.")
@click.option("--context", "context", type=click.Choice(["speaker", "utterance"]), default="speaker",
              show_default=True,
              help="With --context-norm, what each training, validation and test segment is standardised over: its "
                   "speaker's speech (the checkpoint then analyses a file over its speech within 30 s either side; "
                   "--set context_window_s=S for another window), or its own utterance, leaning on the training "
                   "speech's statistics as 10 s of speech, as a clip analysed alone is (the checkpoint then "
                   "standardises each analysed segment by itself so).")
@click.option("--augment-noise", "augment_noises", multiple=True, metavar="DIR|babble",
              help="Also train on a noisy copy of the training speech, repeatable: babble (6-10 overlapping "
                   "utterances of the run's own training speakers), a folder of noise files, or a folder of such "
                   "folders (each one source, except the music genres `evaluate --programmes` plays). Each "
                   "utterance's copy gets one source and SNR, drawn from --seed; validation and test speech stay "
                   "clean.")
@click.option("--augment-snr", default="0:20", show_default=True, metavar="LOW:HIGH",
              help="SNR range in dB of the noisy copy (uniform).")
@click.option("--augment-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Chance that a training step takes a segment's noisy copy instead of the clean one.")
@click.option("--augment-speed", "augment_speeds", multiple=True, metavar="FACTOR",
              type=click.FloatRange(0.5, 2.0),
              help="Also train on a copy of the training speech played this many times as fast, repeatable "
                   "(e.g. 0.9 and 1.1: tempo and pitch move together, as a shorter or longer vocal tract and "
                   "another speaking rate would). Each copy counts as a speaker of its own in the speaker "
                   "contexts; validation and test speech, and the context prior, stay as recorded.")
@click.option("--augment-channel", "augment_channels", multiple=True, metavar="SPEC",
              help="Also train on a copy of the training speech as a channel delivers it, repeatable: mp3:KBPS, "
                   "aac:KBPS or opus:KBPS (encoded and decoded by ffmpeg, e.g. aac:48), or room:LOW-HIGH (a room "
                   "with that reverberation time in seconds, e.g. room:0.3-0.8; needs pyroomacoustics, the "
                   "train extra), or eq:DB (low and high shelves raised or lowered by up to DB dB, e.g. eq:6). "
                   "Each copy counts as a speaker of its own in the speaker contexts; validation "
                   "and test speech, and the context prior, stay as recorded.")
@click.option("--augment-pairs", is_flag=True,
              help="Also train on pair copies: each training utterance followed by another of its speaker's "
                   "(drawn once, the same for every run), cut into segments as one recording, so that some "
                   "straddle the two, as in a film; a segment takes the label of the utterance it overlaps "
                   "more, an emotion heard for a third of it outweighing a neutral rest. A speaker's pairs "
                   "are standardised as a talker of their own.")
@click.option("--epochs", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most epochs per run (constant learning rate after a one-epoch warm-up).")
@click.option("--average-from", type=click.IntRange(min=0), default=4, show_default=True,
              help="Average the weights at the end of every epoch from this one on (stochastic weight "
                   "averaging); the average is validated and the best one kept. 0: keep the single epoch "
                   "with the best validation accuracy.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation accuracy.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Segments per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW peak learning rate.")
@click.option("--oversample", is_flag=True,
              help="Draw batches with equal class shares instead of weighting the loss by inverse class size.")
@click.option("--balance", type=click.Choice(["class", "speaker", "corpus"]), default="class", show_default=True,
              help="What weighs the same in the loss (or the oversampling): each class; each speaker's each "
                   "class, so that a speaker with 28 clips counts as much as one with 360; or each corpus's each "
                   "class. speaker and corpus also keep the epoch whose mean UA over the validation speakers "
                   "(corpora) is best, instead of the best validation WA.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for initialisation, batch order, augmentation and the validation speakers.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE",
              help="Any other training or network setting, repeatable: a field of sercli.train.TrainConfig "
                   "(e.g. weight_decay=1e-4, label_smoothing=0, freq_warp=0, select_from=1) or of "
                   "sercli.model.ModelConfig (e.g. summary=last, lstm_dropout=0) or of "
                   "sercli.features.FeatureConfig (e.g. e_noise_db=-50). Network and feature settings are saved "
                   "in the checkpoint.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]", help="Where to train.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder: a folder per run with model.pt and metrics.json, results.md and results.json; "
                   "rerunning the same command resumes it.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for cached spectrograms (default: OUT/cache).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that decode and featurise the speech (default: the CPU count, at most 8).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              is_eager=True, expose_value=False, callback=lambda ctx, param, value: _train_config(ctx, value),
              help=f"Read options from this TOML file's [train] table [default: ./{TRAIN_CONFIG} if there is one]; "
                   "options given here win; --set pairs given here add to the file's set list, a name given "
                   "in both taking the value given here.")
def train(corpora, include_scripted, excited_as_happy, folds_path, fold, validation, topology, first_step, grid,
          window, denoise, context_norm, context, augment_noises, augment_snr, augment_share, augment_speeds,
          augment_channels, augment_pairs, epochs, average_from, patience, batch_size, lr, oversample, balance, seed, settings, device,
          out_dir, cache_dir, workers) -> None:
    """Train and cross-validate a model on labelled speech.

    Each utterance is cut into segments of at most 3 s as at analysis time; utterance scores
    average its segments' posteriors. Weighted accuracy (WA) is the share right, unweighted
    (UA) the mean recall per class, both on the test speakers of each fold.

    Any option can be declared once in a [train] table of ./sercli.toml (or of --config FILE),
    under its long name with _ for -: corpus = ["manifest=data/ravdess/manifest.csv"], folds = "folds.csv",
    out = "runs/x", epochs = 20, denoise = true.
    """

    ctx = click.get_current_context()
    if ctx.get_parameter_source("settings") is ParameterSource.COMMANDLINE:
        # a recipe file's settings stay unless named again here: later pairs win in _configs
        settings = tuple(ctx.meta.get(CONFIG_SETTINGS, ())) + tuple(settings)
    missing = [name for name, value in (("--corpus", corpora), ("--out", out_dir)) if not value]
    if missing:
        raise click.UsageError(f"{' and '.join(missing)} missing: give {'them' if len(missing) > 1 else 'it'} here, "
                               f"or declare the run once in ./{TRAIN_CONFIG} (or a file given with --config), "
                               f"e.g.\n{TRAIN_CONFIG_EXAMPLE}")
    if first_step and topology != "two-step":
        raise click.UsageError("--first-step needs --topology two-step")
    functionals = topology == "egemaps"
    if functionals:
        from ..functionals import INSTALL_HINT, available

        if denoise:
            raise click.UsageError("--topology egemaps reads eGeMAPS functionals, not spectrograms: no --denoise")
        if not available():
            fail(f"--topology egemaps needs openSMILE: {INSTALL_HINT}", EXIT_USAGE)
        # Functionals are standardised over a context only on request (the default model's recipe,
        # train/egemaps-mlp.toml, asks): the first MLP recipe was not, and its commands keep their meaning.
        if ctx.get_parameter_source("context_norm") is ParameterSource.DEFAULT:
            context_norm = False
    if context != "speaker" and not context_norm:
        raise click.UsageError("--context utterance needs --context-norm")
    if context == "utterance" and any(s.partition("=")[0].strip() == "context_window_s" for s in settings):
        raise click.UsageError("--context utterance analyses each segment by itself: no --set context_window_s")
    tune_for_batches()
    from ..corpora import CorpusError, plan_splits
    from ..experiment import TrainRun, run_training
    from ..noise import NoiseError
    from ..weights import ModelError, resolve_device

    check_output(out_dir, folder=True)
    try:
        utterances = load_corpora(corpora, include_scripted, excited_as_happy, folds_path)
        splits = plan_splits(utterances, fold or "all", validation, seed)
        target = resolve_device(device)
    except (CorpusError, ModelError) as exc:
        fail(str(exc), EXIT_USAGE)
    if target.type == "cuda":  # batches come in at most 38 lengths (multiples of 8 frames): each tuned once
        import torch

        torch.backends.cudnn.benchmark = True
    two_step = topology == "two-step"
    model_config, train_config, features = _configs(
        settings, "cnn-lstm" if two_step else topology, int(grid), int(window), denoise, context_norm, functionals,
        dict(epochs=epochs, swa_from=average_from, patience=patience, batch_size=batch_size, lr=lr,
             oversample=oversample, balance=balance, seed=seed))
    if context == "utterance":  # analysis standardises each segment by itself (and the prior)
        from dataclasses import replace

        features = replace(features, context_window_s=0.0)
    augmentation = _augmentation(augment_noises, augment_snr, augment_share, seed)
    channels = _channels(augment_channels)
    if augment_speeds or channels or augment_pairs:  # after the splits: a copy trains exactly when its speaker does
        from dataclasses import replace

        from ..corpora import pair_copies

        speeds = sorted(set(augment_speeds) - {1.0})
        utterances = (utterances + [replace(u, speed=speed) for speed in speeds for u in utterances]
                      + [replace(u, channel=channel) for channel in channels for u in utterances]
                      + (pair_copies(utterances) if augment_pairs else []))
    run = TrainRun(utterances, splits, model_config, train_config, features, target, out_dir,
                   cache_dir or out_dir / "cache", command=resolved_command(click.get_current_context(),
                                                                            fold=fold or "all",
                                                                            context_norm=context_norm),
                   argv=list(sys.argv), two_step=two_step, first_step=first_step,
                   workers=workers or default_workers(), augmentation=augmentation, context=context)
    try:
        run_training(run)
    except (CorpusError, NoiseError) as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # the run folder filled up or went away; completed epochs are kept
        if exc.filename is None:
            raise
        fail(f"cannot write {exc.filename}: {exc.strerror}; rerun the same command to resume", EXIT_FAILED)


NAMED = {"topology", "grid_hz", "window_ms", "denoise", "context_norm", "epochs", "swa_from", "patience",
         "batch_size", "lr", "oversample", "balance", "seed"}  # settings with their own options, not for --set


def _configs(settings, topology: str, grid_hz: int, window_ms: int, denoise: bool, context_norm: bool,
             functionals: bool, training: dict):
    """(ModelConfig, TrainConfig, FeatureConfig) of the options, with --set's NAME=VALUE pairs applied."""
    from dataclasses import fields

    from ..features import FeatureConfig
    from ..model import ModelConfig
    from ..train import TrainConfig, override

    pairs = dict(item.partition("=")[::2] for item in settings)
    known = {f.name for config in (ModelConfig, TrainConfig, FeatureConfig) for f in fields(config)}
    unknown = sorted(set(pairs) - known)
    if unknown or NAMED & set(pairs) or any("=" not in item for item in settings):
        raise click.BadParameter(f"not a NAME=VALUE of a setting without its own option: "
                                 f"{', '.join(unknown or sorted(NAMED & set(pairs)) or settings)}",
                                 param_hint="--set")
    if "members" in pairs:
        raise click.BadParameter("members: sercli train makes one network; merge runs of different --seed with "
                                 "train/ship_model.py --merge", param_hint="--set")
    try:
        return (override(ModelConfig(topology=topology, grid_hz=grid_hz), pairs),
                override(TrainConfig(**training), pairs),
                override(FeatureConfig(grid_hz=grid_hz, window_ms=window_ms, denoise=denoise,
                                       context_norm=context_norm, kind="egemaps" if functionals else "spectrogram",
                                       compress_tails=functionals),
                         pairs))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


def _channels(given) -> list[str]:
    """The distinct channels of --augment-channel, canonical and in the order given."""
    from ..channels import parse_channel

    channels = []
    for text in given:
        try:
            channel = parse_channel(text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--augment-channel") from None
        if channel.startswith("room:") and importlib.util.find_spec("pyroomacoustics") is None:
            raise click.BadParameter(f"{text!r} needs pyroomacoustics: pip install 'sercli[train]'",
                                     param_hint="--augment-channel")
        if channel not in channels:
            channels.append(channel)
    return channels


def _augmentation(augment_noises, augment_snr: str, share: float, seed: int):
    """The NoiseAugmentation of --augment-noise, --augment-snr and --augment-share (None without noises)."""
    if not augment_noises:
        return None
    from ..experiment import NoiseAugmentation
    from ..noise import PROGRAMME_MUSIC, NoiseError, noise_categories

    low, _, high = augment_snr.partition(":")
    try:
        snr_range = (float(low), float(high or low))
    except ValueError:
        raise click.BadParameter(f"expected LOW:HIGH in dB, not {augment_snr!r}", param_hint="--augment-snr") from None
    try:
        sources = []
        for given in augment_noises:
            if given == "babble":
                sources.append("babble")
                continue
            found = noise_categories(given)
            if list(found.values()) == [Path(given)]:  # a folder of noise files, named: taken as it is
                if Path(given).name in PROGRAMME_MUSIC:
                    click.echo(f"warning: {given} is music `sercli evaluate --programmes` plays; this model's "
                               "programme figures will flatter it", err=True)
            else:  # a folder of such folders: the programmes' music stays out
                left_out = sorted(found.keys() & set(PROGRAMME_MUSIC))
                found = {name: folder for name, folder in found.items() if name not in PROGRAMME_MUSIC}
                if left_out:
                    click.echo(f"{given}: leaving out {', '.join(left_out)}, the music `sercli evaluate "
                               "--programmes` plays (name one of them to train with it anyway)", err=True)
                if not found:
                    raise NoiseError(f"{given}: its only noise is the music `sercli evaluate --programmes` plays; "
                                     "name one of its folders to train with it anyway")
            sources += [str(f) for f in found.values()]
        return NoiseAugmentation(tuple(dict.fromkeys(sources)), snr_range, share, seed)
    except NoiseError as exc:
        fail(str(exc), EXIT_USAGE)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--augment-snr") from None


def resolved_command(ctx: click.Context, **resolved) -> str:
    """The command as it ran: `sercli NAME` and every option with the value it resolved to (from
    the command line, a config file or its default; `resolved` overrides some), in --help's
    order, so the same line reruns the same run without the config file."""
    words = ["sercli", ctx.command.name]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or not param.expose_value:
            continue
        value = resolved.get(param.name, ctx.params.get(param.name))
        name = max((o for o in param.opts if o.startswith("--")), key=len)
        if param.is_flag and not param.multiple:
            if param.secondary_opts:
                words.append(name if value else param.secondary_opts[0])
            elif value:
                words.append(name)
            continue
        for one in (value if param.multiple else [value]):
            if one is not None:
                words += [name, format(one, "g") if isinstance(one, float) else str(one)]
    return shlex.join(words)
