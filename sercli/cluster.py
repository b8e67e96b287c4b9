"""`sercli analyze --ray`: the same analysis spread over a Ray cluster.

Each input file is a Ray task on a CPU: decoding, speech detection and spectrograms. The network
runs in Ray actors (one per GPU, or CPU actors) that take batches of segments coming from many
files, reading the spectrograms straight from Ray's object store. The driver only routes small
messages, puts segments back together per file and hands finished files back in input order,
so the command line writes them exactly as in local mode (atomically, once each).

Ray retries a task whose worker died and restarts a dead actor and retries its calls; a file's
result is assembled once, on the driver, from one posterior per segment, so a retry can neither
lose nor duplicate output. Ray is an optional extra: `pip install "sercli[ray]"`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import traceback
from collections import deque
from dataclasses import asdict
from typing import Callable, Iterable, Iterator

import numpy as np

from .context import context_prior
from .predict import FileFailure, FileResult, SegmentResult
from .segment import SegmentationConfig

RAY_INSTALL = 'sercli --ray needs Ray: pip install "sercli[ray]"'
FILES_IN_FLIGHT_PER_CPU = 2  # featurising tasks kept queued per cluster CPU
BATCHES_WAITING_PER_ACTOR = 4  # scored batches queued per model actor before more files start
TASK_RETRIES = 3  # a file's task is rerun this often when its worker dies
ACTOR_RESTARTS = 3  # a classifier actor is restarted this often, its calls retried


class ClusterError(Exception):
    """Ray is missing or the cluster cannot be reached; one line for the user."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(RAY_INSTALL) from exc
    return ray


def connect(address: str) -> None:
    """Start a local Ray ("local"), attach to the running one ("auto") or to ADDRESS."""
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        raise ClusterError(f"cannot connect to Ray at {address}: {' '.join(str(exc).split())[:200]}") from exc


def _featurise(name: str, segmentation: dict, features: dict, audio_stream: int, prior=None):
    """Runs in a Ray task: (metadata, spectrograms (N, F, T) float16 or None) of one file;
    context-normalised over the file for a model that wants it (prior: see ContextStats)."""
    import torch

    from .audio import AudioError, DecodeReport, stream_audio
    from .context import normalise_segments
    from .features import FeatureConfig, log_spectrograms, pitch_tracker
    from .heap import retain_freed_memory
    from .segment import segment_stream

    torch.set_num_threads(1)
    retain_freed_memory()
    config = FeatureConfig(**features)
    report = DecodeReport()
    try:
        segments = list(segment_stream(stream_audio(name, audio_stream, report=report),
                                       SegmentationConfig(**segmentation), pitch=pitch_tracker(config)))
        parts = [log_spectrograms([s.samples for s in segments[i : i + 32]], config,
                                  f0=[s.f0 for s in segments[i : i + 32]]).half()
                 for i in range(0, len(segments), 32)]
        n_frames = [config.frames_for(len(s.samples)) for s in segments]
        if config.context_norm and parts:
            parts = [normalise_segments(torch.cat(parts), torch.tensor(n_frames), prior, [s.start_s for s in segments],
                                        config.context_window_s / 2).half()]
    except AudioError as exc:
        return {"name": name, "error": str(exc)}, None
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        return {"name": name, "error": f"unexpected error: {type(exc).__name__}: {exc}",
                "detail": traceback.format_exc()}, None
    meta = {"name": name, "duration_s": report.duration_s, "warnings": report.warnings,
            "times": [(s.start_s, s.end_s) for s in segments],
            "n_frames": n_frames}
    return meta, (torch.cat(parts).numpy() if parts else None)


class _Classifier:
    """A Ray actor holding the network; scores batches gathered from several files.

    The checkpoint comes with every call, as a reference into the object store (nothing is
    copied), and is loaded on the first: a restarted actor simply loads it again."""

    def __init__(self, digest: str, device: str, precision: str) -> None:
        self.digest, self.device, self.precision = digest, device, precision
        self.model = None

    def _load(self, checkpoint_ref) -> None:
        import ray
        import torch

        from .heap import retain_freed_memory
        from .weights import ModelError, from_checkpoint

        retain_freed_memory()
        data = ray.get(checkpoint_ref)
        if hashlib.sha256(data).hexdigest() != self.digest:
            raise ModelError("checkpoint corrupted in transit")
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.model = from_checkpoint(checkpoint, checkpoint["meta"].get("name", "model"), None, self.device,
                                     self.precision)

    def classify(self, checkpoint: list, parts: list) -> np.ndarray:
        """Posteriors (N, classes) of a batch. checkpoint: [object ref of the checkpoint's bytes];
        parts: (spectrogram object ref, first segment, stop, n_frames of those segments) per file slice."""
        import ray
        import torch

        if self.model is None:
            self._load(checkpoint[0])
        arrays = [ray.get(ref)[first:stop] for ref, first, stop, _ in parts]
        x = torch.from_numpy(np.concatenate(arrays)).to(self.model.device).float()
        n = torch.tensor([f for part in parts for f in part[3]])
        return self.model.posteriors(x, n).numpy()


class _File:
    def __init__(self, name: str) -> None:
        self.name = name
        self.meta: dict | None = None
        self.posteriors: list[np.ndarray | None] = []
        self.unscored = 0
        self.failure: FileFailure | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or (self.meta is not None and self.unscored == 0)


def run(sources: Iterable[str], checkpoint_path, model, segmentation: SegmentationConfig, batch_size: int,
        audio_stream: int, device: str, precision: str, actors: int | None = None,
        on_audio: Callable[[float], None] | None = None) -> Iterator[FileResult | FileFailure]:
    """Analyse files on the connected Ray cluster; yields results in input order, like
    predict.Pipeline.run. `model` is the loaded Model (for its name, labels and features),
    `checkpoint_path` its verified file, shipped to the actors through the object store."""
    ray = import_ray()

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    use_gpu = gpus > 0 and device != "cpu"
    count = actors or (gpus if use_gpu else max(1, cpus // 4))
    data = open(checkpoint_path, "rb").read()
    blob = ray.put(data)
    # CPU actors together leave at least one CPU to the file tasks, or nothing would feed them.
    actor_cpus = 0 if use_gpu else min(1.0, max(0.0, (cpus - 1) / count))
    actor_class = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=actor_cpus,
                             max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)(_Classifier)
    idle = [actor_class.remote(hashlib.sha256(data).hexdigest(), "cuda" if use_gpu else "cpu", precision)
            for _ in range(count)]
    featurise = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_featurise).options(num_returns=2)
    segmentation_dict, features_dict = asdict(segmentation), asdict(model.features)
    prior = context_prior(model.meta) if model.features.context_norm else None

    order: deque[_File] = deque()
    featurising: dict = {}  # metadata ref -> (file, spectrogram ref)
    scoring: dict = {}  # classify ref -> (actor, [(file, first segment, stop)])
    ready_batches: deque = deque()  # (slices, parts) waiting for an idle actor
    buffer: list[tuple[_File, object, int, int]] = []  # segments not yet making a full batch
    buffered = 0
    inputs = iter(sources)
    exhausted = False
    limit = FILES_IN_FLIGHT_PER_CPU * cpus

    def close_batch() -> None:
        nonlocal buffer, buffered
        slices = [(f, first, stop) for f, _, first, stop in buffer]
        parts = [(ref, first, stop, f.meta["n_frames"][first:stop]) for f, ref, first, stop in buffer]
        ready_batches.append((slices, parts))
        buffer, buffered = [], 0

    def add_segments(file: _File, ref, first: int, stop: int) -> None:
        nonlocal buffered
        while first < stop:
            take = min(stop - first, batch_size - buffered)
            buffer.append((file, ref, first, first + take))
            buffered += take
            first += take
            if buffered >= batch_size:
                close_batch()

    while True:
        # Backpressure: no new file while the actors have batches enough waiting, so spectrograms
        # never pile up in the object store faster than the network scores them.
        while not exhausted and len(featurising) < limit and len(ready_batches) < BATCHES_WAITING_PER_ACTOR * count:
            try:
                name = next(inputs)
            except StopIteration:
                exhausted = True
                break
            file = _File(name)
            order.append(file)
            meta_ref, spectrogram_ref = featurise.remote(name, segmentation_dict, features_dict, audio_stream, prior)
            featurising[meta_ref] = (file, spectrogram_ref)
        if buffer and not ready_batches and (idle or not featurising):
            close_batch()  # an actor would idle, or nothing else will fill the batch: score what waits
        while ready_batches and idle:
            slices, parts = ready_batches.popleft()
            actor = idle.pop()
            scoring[actor.classify.remote([blob], parts)] = (actor, slices)
        while order and order[0].finished:
            yield _result(order.popleft(), model)
        if not featurising and not scoring:
            if exhausted and not order:
                return
            continue
        done, _ = ray.wait([*featurising, *scoring], num_returns=1)
        for ref in done:
            if ref in featurising:
                file, spectrogram_ref = featurising.pop(ref)
                meta = ray.get(ref)
                if "error" in meta:
                    file.failure = FileFailure(file.name, meta["error"], meta.get("detail", ""))
                    continue
                file.meta = meta
                if on_audio is not None:
                    on_audio(meta["duration_s"])
                n = len(meta["times"])
                file.posteriors = [None] * n
                file.unscored = n
                add_segments(file, spectrogram_ref, 0, n)
            else:
                actor, slices = scoring.pop(ref)
                idle.append(actor)
                posteriors = ray.get(ref)
                row = 0
                for file, first, stop in slices:
                    for i in range(first, stop):
                        if file.posteriors[i] is None:  # each slot is filled once
                            file.posteriors[i] = posteriors[row]
                            file.unscored -= 1
                        row += 1


def _result(file: _File, model) -> FileResult | FileFailure:
    if file.failure is not None:
        return file.failure
    segments = [SegmentResult.scored(start, end, p, model.labels)
                for (start, end), p in zip(file.meta["times"], file.posteriors)]
    return FileResult(file.name, round(file.meta["duration_s"], 3), model.name, segments, model.labels,
                      file.meta["warnings"])
