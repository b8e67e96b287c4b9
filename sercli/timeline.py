"""`sercli timeline`: a file's emotions over time as one picture (PNG).

Drawn from a result's JSON object (sercli.writers.result_to_dict, or a `--format json` file read
back), so a past analysis draws without a model. Needs matplotlib (`pip install "sercli[plot]"`);
nothing else in sercli imports this module.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .spans import MERGE_GAP_S, Span, merge_spans

MAX_BINS = 600  # columns of the picture at most: a 2-hour film gets 15 s bins, a 20 s clip 0.1 s ones
BIN_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MAX_TICKS = 12
SPAN_BAND_MAX_BIN_S = 1.0  # s: with wider columns (files over 10 min) the band shows each column's top label
COLOURS = {"angry": "#d62728", "happy": "#f2b701", "neutral": "#7f8c9a", "sad": "#1f5fbf"}
OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
NO_SPEECH = "#ececec"


class TimelineError(Exception):
    """A JSON input that is not one file's sercli result."""


def bin_seconds(duration_s: float) -> float:
    """The width of one column: the smallest round step that keeps a file in MAX_BINS columns."""
    return next((step for step in BIN_STEPS_S if duration_s / step <= MAX_BINS), BIN_STEPS_S[-1])


def bin_posteriors(segments: list[dict], labels: tuple[str, ...], duration_s: float,
                   bin_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, speech, probs): bin edges (n + 1,) in seconds; the share of each bin covered by
    segments (n,); and per bin the posteriors averaged over its speech, weighted by how much of
    each segment falls in it (n, n_labels; 0 where there is no speech)."""
    n = max(1, int(np.ceil(duration_s / bin_s - 1e-9)))
    edges = np.arange(n + 1) * bin_s
    covered = np.zeros(n)
    weighted = np.zeros((n, len(labels)))
    for segment in segments:
        start, end = segment["start_s"], min(segment["end_s"], edges[-1])
        posteriors = np.array([segment["probs"][label] for label in labels])
        first, last = int(start // bin_s), min(n - 1, int(np.ceil(end / bin_s)) - 1)
        for k in range(first, last + 1):
            overlap = min(end, edges[k + 1]) - max(start, edges[k])
            if overlap > 0:
                covered[k] += overlap
                weighted[k] += overlap * posteriors
    probs = np.divide(weighted, covered[:, None], out=np.zeros_like(weighted), where=covered[:, None] > 0)
    return edges, np.minimum(covered / bin_s, 1.0), probs


def clock(seconds: float, hours: bool) -> str:
    """h:mm:ss with hours, else m:ss."""
    whole = int(round(seconds))
    if hours:
        return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
    return f"{whole // 60}:{whole % 60:02d}"


def tick_seconds(duration_s: float) -> float:
    return next((step for step in TICK_STEPS_S if duration_s / step <= MAX_TICKS), TICK_STEPS_S[-1])


def _spans_of(document: dict, merge_gap_s: float | None) -> list[Span]:
    given = document.get("summary", {}).get("spans")
    if given is not None and merge_gap_s is None:
        return [Span(s["label"], s["start_s"], s["end_s"], s["confidence"]) for s in given]
    segments = [Span(s["label"], s["start_s"], s["end_s"], s["confidence"]) for s in document["segments"]]
    return merge_spans(segments, MERGE_GAP_S if merge_gap_s is None else merge_gap_s)


def one_result(document: object, source: str) -> dict:
    """The result object of a sercli JSON document (an object, or an array of one)."""
    if isinstance(document, list):
        if len(document) != 1:
            raise TimelineError(f"{source}: holds the results of {len(document)} files; a timeline draws one "
                                "(write one JSON per input with --output-dir)")
        document = document[0]
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list) or "duration_s" not in document:
        raise TimelineError(f"{source}: not a sercli JSON result (sercli analyze --format json)")
    try:
        for segment in document["segments"]:
            float(segment["start_s"]), float(segment["end_s"]), str(segment["label"]), float(segment["confidence"])
            dict(segment["probs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TimelineError(f"{source}: a segment lacks start_s, end_s, label, confidence or probs ({exc})") from None
    return document


def draw_timeline(document: dict, out: Path, merge_gap_s: float | None = None) -> Path:
    """Write a PNG of one file's emotions over time: the posteriors of each label stacked, bin
    by bin, to the share of the bin that is speech (the rest, grey, is no speech), and below
    them the emotion spans, each shaded by its confidence (for files over 10 minutes, each
    bin's top label, shaded by its posterior). document: one file's result as in
    `--format json`. merge_gap_s: re-merge the spans with this gap (None: the document's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    from .weights import atomic_write_bytes

    segments = document["segments"]
    labels = tuple(document.get("summary", {}).get("probs") or (segments[0]["probs"] if segments else COLOURS))
    colours = {label: COLOURS.get(label, OTHER_COLOURS[i % len(OTHER_COLOURS)]) for i, label in enumerate(labels)}
    duration_s = max([float(document["duration_s"]), *(s["end_s"] for s in segments), 0.1])
    bin_s = bin_seconds(duration_s)
    edges, speech, probs = bin_posteriors(segments, labels, duration_s, bin_s)
    spans = _spans_of(document, merge_gap_s)

    figure, (stack, band) = plt.subplots(2, 1, figsize=(14, 5.2), sharex=True, constrained_layout=True,
                                         gridspec_kw={"height_ratios": [4, 1]})
    bottom = np.zeros(len(speech))
    for i, label in enumerate(labels):
        top = bottom + speech * probs[:, i]
        stack.fill_between(edges, np.append(bottom, bottom[-1]), np.append(top, top[-1]), step="post",
                           color=colours[label], linewidth=0)
        bottom = top
    stack.fill_between(edges, np.append(bottom, bottom[-1]), 1.0, step="post", color=NO_SPEECH, linewidth=0)
    stack.set_ylim(0, 1)
    stack.set_ylabel(f"share of each {f'{bin_s / 60:g} min' if bin_s >= 60 else f'{bin_s:g} s'}")
    stack.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.0%}"))
    handles = [Patch(color=colours[label], label=label) for label in labels]
    handles.append(Patch(color=NO_SPEECH, label="no speech"))
    stack.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)

    band.set_facecolor(NO_SPEECH)
    if bin_s <= SPAN_BAND_MAX_BIN_S:
        marks = [(s.label, s.start_s, s.duration_s, s.confidence) for s in spans]
        band.set_ylabel("spans", rotation=0, ha="right", va="center")
    else:  # spans a few pixels wide would be a barcode: the top label of each column instead
        marks = [(labels[int(p.argmax())], start, bin_s, float(p.max()))
                 for start, share, p in zip(edges, speech, probs) if share > 0]
        band.set_ylabel(f"top label\nper {bin_s / 60:g} min" if bin_s >= 60 else f"top label\nper {bin_s:g} s",
                        rotation=0, ha="right", va="center")
    for label in labels:
        mine = [mark for mark in marks if mark[0] == label]
        if mine:
            band.broken_barh([(start, width) for _, start, width, _ in mine], (0, 1), linewidth=0,
                             facecolors=[to_rgba(colours[label], 0.25 + 0.75 * c) for *_, c in mine])
    band.set_ylim(0, 1)
    band.set_yticks([])
    band.text(1.0, 0.5, "  shade: confidence", transform=band.transAxes, va="center", ha="left", fontsize=9)

    hours = duration_s >= 3600
    band.set_xlim(0, duration_s)
    band.xaxis.set_major_locator(MultipleLocator(tick_seconds(duration_s)))
    band.xaxis.set_major_formatter(FuncFormatter(lambda x, _: clock(x, hours)))
    band.set_xlabel("time (h:mm:ss)" if hours else "time (m:ss)")

    summary = document.get("summary", {})
    speech_s = sum(s["end_s"] - s["start_s"] for s in segments)
    title = (f"{Path(str(document.get('file', ''))).name}: {clock(duration_s, hours)}, "
             f"{clock(speech_s, hours)} of speech in {len(segments)} segments, {len(spans)} spans")
    if summary.get("label"):
        title += f"; overall {summary['label']}"
    if document.get("model"):
        title += f" (model {document['model']})"
    stack.set_title(title, loc="left", fontsize=11)
    image = io.BytesIO()
    figure.savefig(image, dpi=110, format="png")
    plt.close(figure)
    atomic_write_bytes(Path(out), image.getvalue())
    return Path(out)
