"""sercli: speech emotion recognition for any audio or video file, segment by segment.

    import sercli
    model = sercli.load_model()               # the shipped model, or a name or .pt path
    result = sercli.analyze("talk.mp3", model=model)
    for segment in result.segments:
        print(segment.start_s, segment.end_s, segment.label, segment.probs)
    print(result.summary.label)
    for span in result.spans:                 # same-label segments joined: Span(label, start_s, end_s, confidence)
        print(span.label, span.start_s, span.end_s)
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "load_models", "analyze", "AnalysisError", "ModelError", "FileResult",
           "SegmentResult", "Summary", "Span", "merge_spans"]


def __getattr__(name):
    # Keep `import sercli` (and so `sercli --help`) free of torch until something needs it.
    if name in ("load_model", "load_models", "ModelError"):
        from . import weights

        return getattr(weights, name)
    if name == "analyze":
        from . import analysis

        return analysis.analyze
    if name in ("AnalysisError", "FileResult", "SegmentResult", "Summary"):
        from . import results

        return getattr(results, name)
    if name in ("Span", "merge_spans"):
        from . import spans

        return getattr(spans, name)
    raise AttributeError(f"module 'sercli' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
