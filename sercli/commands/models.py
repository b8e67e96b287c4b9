"""`sercli models`: the installed models and the accuracy a user can expect of each."""

from __future__ import annotations

import click


@click.command()
def models() -> None:
    """List the installed models and the accuracy a user can expect of each.

    UA is unweighted accuracy (the mean recall of the four emotions; chance 25%), WA weighted
    accuracy, both over five folds of speakers the model's recipe never saw. PROGRAMMES: films
    of several voices with music, as `sercli analyze` meets them; CLIPS: each clip analysed
    alone; SPEAKER: each test speaker normalised over all of their speech (an upper bound, not
    what a user gets). VALIDATION is the checkpoint's own selection set, not unseen speakers.
    """
    from ..weights import (DEFAULT_ANALYSIS_MODEL, ModelError, installed_models, model_dirs, model_names,
                           read_checkpoint, recorded_scores)

    found = installed_models()
    if not found:
        click.echo("no models installed (searched: " + ", ".join(str(d) for d in model_dirs()) + ")")
        return
    roles = dict(zip(model_names(DEFAULT_ANALYSIS_MODEL), ("clips", "films")))
    rows = [("MODEL", "KIND", "PROGRAMMES UA", "CLIPS UA", "SPEAKER UA/WA", "VALIDATION WA", "FILE")]
    for name, path in found.items():
        label = name + (f" (default: {roles[name]})" if name in roles else "")
        try:
            checkpoint = read_checkpoint(path)
        except ModelError as exc:
            rows.append((label, f"unusable: {exc}", "", "", "", "", str(path)))
            continue
        rows.append((label, _model_kind(checkpoint), *_model_scores(checkpoint["meta"], recorded_scores(path)),
                     str(path)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    pair = next((recorded_scores(found[name], DEFAULT_ANALYSIS_MODEL) for name in roles if name in found), None)
    measured = ""
    if pair and all((pair.get(view) or {}).get("ua") is not None for view in ("programmes", "clips")):
        measured = f" Programmes {pair['programmes']['ua']:.1f}, clips {pair['clips']['ua']:.1f} UA."
    click.echo(f"\nDefault: {DEFAULT_ANALYSIS_MODEL}, a routed pair: each segment is scored by the first where "
               "the speech around it is under 10 s (a clip alone), else by the second (a film, a podcast)." + measured)
    click.echo("UA/WA: % of utterances over five folds of unseen speakers (sercli evaluate; README, "
               "'Training and evaluation'); - not measured.")


def _model_kind(checkpoint: dict) -> str:
    from ..weights import functionals_kind

    config = checkpoint["config"]
    kind = config["topology"]
    if checkpoint["meta"].get("features", {}).get("kind") == "egemaps":
        voices = bool(checkpoint["meta"]["features"].get("context_voices"))
        return f"egemaps ({functionals_kind(config.get('members', 1), voices)})"
    if checkpoint.get("kind") == "two-step":
        kind = f"two-step ({config['topology']} + {len(checkpoint['members'])} binary)"
    if checkpoint["meta"].get("features", {}).get("denoise"):
        kind += ", denoising"
    window = checkpoint["meta"].get("features", {}).get("window_ms", config.get("window_ms"))
    return f"{kind}, {config['grid_hz']} Hz, {window} ms"


def _model_scores(meta: dict, recorded: dict | None) -> tuple[str, str, str, str]:
    """PROGRAMMES UA, CLIPS UA, SPEAKER UA/WA and VALIDATION WA cells: recorded five-fold figures,
    else a fold model's own test figures (labelled with its fold), else dashes."""
    recorded = recorded or {}

    def view(name: str, both: bool = False) -> str:
        figures = recorded.get(name)
        if not isinstance(figures, dict):
            return "-"
        return f"{figures['ua']:.1f}" + (f" / {figures['wa']:.1f}" if both else "")

    speaker = view("speaker", both=True)
    metrics = meta.get("metrics", {})
    if speaker == "-" and "test_ua" in metrics:
        fold = meta.get("training", {}).get("test_fold")
        speaker = f"{100 * metrics['test_ua']:.1f} / {100 * metrics['test_wa']:.1f} (fold {fold} only)"
    valid = f"{100 * metrics['valid_wa']:.1f}" if isinstance(metrics.get("valid_wa"), float) else "-"
    return view("programmes"), view("clips"), speaker, valid
