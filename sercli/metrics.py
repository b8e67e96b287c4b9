"""Scores of posteriors against labels: weighted and unweighted accuracy and confusion, per
segment and per utterance, and the Markdown tables that report them. Never imported by the
inference path."""

from __future__ import annotations

import numpy as np
import torch

from .model import LABELS


def mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def accuracies(truth: np.ndarray, predicted: np.ndarray, n_classes: int = len(LABELS)) -> dict:
    """Weighted accuracy (overall), unweighted accuracy (mean per-class recall), confusion matrix."""
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    for t, p in zip(truth, predicted):
        confusion[t, p] += 1
    present = confusion.sum(axis=1) > 0
    recalls = np.diag(confusion)[present] / confusion.sum(axis=1)[present]
    return {
        "wa": float(np.trace(confusion) / max(confusion.sum(), 1)),
        "ua": float(recalls.mean()) if recalls.size else 0.0,
        "count": int(confusion.sum()),
        "confusion": confusion.tolist(),  # rows: truth, columns: prediction, order LABELS
    }


def evaluate(posteriors: torch.Tensor, data) -> dict:
    """Segment-level and utterance-level (mean of its segments' posteriors) accuracies."""
    segment = accuracies(data.labels.numpy(), posteriors.argmax(1).numpy())
    ids, inverse = torch.unique(data.utterance, return_inverse=True)
    sums = torch.zeros(len(ids), posteriors.shape[1]).index_add_(0, inverse, posteriors)
    truth = torch.zeros(len(ids), dtype=torch.long).index_copy_(0, inverse, data.labels)
    return {"utterance": accuracies(truth.numpy(), sums.argmax(1).numpy()), "segment": segment}


def utterance_scores_by(posteriors: torch.Tensor, data, keys: np.ndarray) -> dict:
    """{key: utterance scores of its segments} for each key (a speaker, a corpus) in `keys`, one
    per segment of `data` (anything with .utterance and .labels), in sorted order."""
    from .dataset import SegmentSet

    out = {}
    for key in sorted(set(keys.tolist())):
        mine = torch.from_numpy(keys == key)
        part = SegmentSet(torch.empty(0), torch.empty(0), data.utterance[mine], data.labels[mine])
        out[key] = evaluate(posteriors[mine], part)["utterance"]
    return out


def group_mean_ua(posteriors: torch.Tensor, data, groups: torch.Tensor) -> float:
    """The mean over groups (speakers, corpora) of each one's utterance UA; groups: each
    segment's group id. 0 with no groups (no validation speech), as UA is with no classes."""
    scores = [s["ua"] for s in utterance_scores_by(posteriors, data, groups.numpy()).values()]
    return float(np.mean(scores)) if scores else 0.0


def mean_row(label: str, runs: list[dict]) -> tuple[str, dict]:
    keys = {"wa": ("utterance", "wa"), "ua": ("utterance", "ua"), "segment_wa": ("segment", "wa"),
            "segment_ua": ("segment", "ua")}
    values = {k: [m["test"][level][metric] for m in runs] for k, (level, metric) in keys.items()}
    cells = " | ".join(mean_std(values[k]) for k in keys)
    return f"| {label} | {cells} | | |", {k: float(np.mean(v)) for k, v in values.items()} | {
        k + "_std": float(np.std(v)) for k, v in values.items()}


def confusion_lines(name: str, confusion: list[list[int]]) -> list[str]:
    return ["", f"Confusion, {name}, utterance level (rows: truth, columns: prediction; {', '.join(LABELS)}):", "",
            *("    " + " ".join(f"{c:5d}" for c in row) for row in confusion)]


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
    lines += by_corpus_lines(results["runs"], lambda r: r.get("by_corpus"))
    for name, r in results["runs"].items():
        lines += confusion_lines(name, r["utterance"]["confusion"])
    return "\n".join(lines) + "\n"


def by_corpus_lines(runs: dict, scores_of) -> list[str]:
    """Lines of UA by corpus, per run and, with several runs, their mean; none when no run has
    several corpora. scores_of: a run's {corpus: {wa, ua, count}} or None."""
    found = {name: scores_of(r) for name, r in runs.items() if scores_of(r)}
    if not found:
        return []
    lines = ["", "UA by corpus (utterances):"]
    for name, corpora in found.items():
        lines.append(f"- {name}: " + ", ".join(f"{c} {100 * s['ua']:.1f} ({s['count']})" for c, s in corpora.items()))
    if len(found) > 1:
        names = sorted({c for corpora in found.values() for c in corpora})
        means = {c: np.mean([corpora[c]["ua"] for corpora in found.values() if c in corpora]) for c in names}
        lines.append("- mean: " + ", ".join(f"{c} {100 * m:.1f}" for c, m in means.items()))
    return lines


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
