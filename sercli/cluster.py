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

from .context import context_prior, voice_context
from .results import FileFailure, FileResult, SegmentResult
from .segment import SegmentationConfig

RAY_INSTALL = 'sercli --ray needs Ray: pip install "sercli[ray]"'
FILES_IN_FLIGHT_PER_CPU = 2  # featurising tasks kept queued per cluster CPU
BATCHES_WAITING_PER_ACTOR = 4  # scored batches queued per model actor before more files start or stream on
PARTS_AHEAD = 2  # parts a file task featurises ahead of what the driver has taken (Ray's generator backpressure)
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


def _featurise(name: str, segmentation: dict, features: dict, audio_stream: int, prior, part_size: int,
               voices=None):
    """Runs in a Ray task, as a generator: one file streamed in parts of at most part_size
    segments, like local mode (sercli.features.featurise, then a context-normalised model's
    sercli.context.ContextWindow over the file), so the task holds about one context window of
    spectrograms however long the file is. Yields, for each part in time order, its metadata
    {"times", "n_frames"} and then its spectrograms (N, F, T) float16; last the file's
    {"duration_s", "warnings"}, or {"error"} (its parts so far are then void)."""
    import torch

    from .audio import AudioError, DecodeReport, stream_audio
    from .context import ContextWindow
    from .features import FeatureConfig, pitch_tracker
    from .heap import retain_freed_memory
    from .segment import segment_stream

    torch.set_num_threads(1)
    retain_freed_memory()
    config = FeatureConfig(**features)
    window = ContextWindow(config.n_bins, prior, config.context_window_s / 2, voices) if config.context_norm else None
    report = DecodeReport()
    waiting = []
    try:
        for segment in segment_stream(stream_audio(name, audio_stream, report=report),
                                      SegmentationConfig(**segmentation), pitch=pitch_tracker(config)):
            waiting.append(segment)
            if len(waiting) == part_size:
                yield from _parts(waiting, config, window, part_size, ended=False)
                waiting = []
        yield from _parts(waiting, config, window, part_size, ended=True)
    except AudioError as exc:
        yield {"error": str(exc)}
        return
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
        yield {"error": f"unexpected error: {type(exc).__name__}: {exc}", "detail": traceback.format_exc()}
        return
    yield {"duration_s": report.duration_s, "warnings": report.warnings}


def _parts(segments: list, config, window, part_size: int, ended: bool):
    """The featurised segments (plain model), or those whose context window is complete
    (context-normalised: all of them once the file has ended), as (metadata, spectrograms) pairs."""
    import torch

    from .context import standardise_frames
    from .features import featurise

    if segments:
        x, n_frames = featurise(segments, config)
        if window is None:
            yield {"times": [(s.start_s, s.end_s) for s in segments], "n_frames": n_frames.tolist()}
            yield x.half().numpy()
            return
        for segment, spectrogram, n in zip(segments, x, n_frames):
            window.add((segment.start_s, segment.end_s), segment.start_s, spectrogram[:, :n].half())
    if window is None:
        return
    released = window.release(segments[-1].start_s if segments else -np.inf, ended)
    for first in range(0, len(released), part_size):
        part = released[first : first + part_size]
        n_frames = torch.tensor([spectrogram.shape[1] for _, spectrogram, _, _ in part])
        x = torch.zeros(len(part), config.n_bins, config.n_frames)
        for k, (_, spectrogram, _, _) in enumerate(part):
            x[k, :, : spectrogram.shape[1]] = spectrogram.float()
        mean = torch.from_numpy(np.stack([m for _, _, m, _ in part])).float()
        std = torch.from_numpy(np.stack([s for _, _, _, s in part])).float()
        standardise_frames(x, n_frames, mean, std, in_place=True)
        yield {"times": [key for key, _, _, _ in part], "n_frames": n_frames.tolist()}
        yield x.half().numpy()


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
        self.times: list[tuple[float, float]] = []
        self.part_frames: list[int] = []  # each segment's valid frames
        self.posteriors: list[np.ndarray | None] = []
        self.unscored = 0
        self.part: dict | None = None  # the metadata of the part whose spectrograms come next
        self.end: dict | None = None  # duration and warnings, once the task has streamed the whole file
        self.failure: FileFailure | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or (self.end is not None and self.unscored == 0)


def run(sources: Iterable[str], checkpoint_path, model, segmentation: SegmentationConfig, batch_size: int,
        audio_stream: int, device: str, precision: str, actors: int | None = None,
        on_audio: Callable[[float], None] | None = None) -> Iterator[FileResult | FileFailure]:
    """Analyse files on the connected Ray cluster; yields results in input order, like
    predict.Pipeline.run. `model` is the loaded Model (for its name, labels and features),
    `checkpoint_path` its verified file, shipped to the actors through the object store."""
    scheduler = _Scheduler(import_ray(), checkpoint_path, model, segmentation, batch_size, audio_stream, device,
                           precision, actors, on_audio)
    inputs = iter(sources)
    exhausted = False
    while True:
        # Backpressure: no new file while the actors have batches enough waiting, so spectrograms
        # never pile up in the object store faster than the network scores them. The parts of
        # files already started are always taken: a paused task would keep its CPU, and a model
        # actor restarted after a crash could then find none to run on.
        while not exhausted and scheduler.wants_files():
            try:
                scheduler.start(next(inputs))
            except StopIteration:
                exhausted = True
        scheduler.dispatch()
        while scheduler.order and scheduler.order[0].finished:
            yield _result(scheduler.order.popleft(), model)
        if not scheduler.featurising and not scheduler.scoring:
            if exhausted and not scheduler.order:
                return
            continue
        scheduler.wait()


class _Scheduler:
    """The driver's side of a Ray analysis: file tasks streaming parts of spectrograms, their
    segments gathered into batches, batches handed to idle model actors, posteriors put back
    into their files' slots."""

    def __init__(self, ray, checkpoint_path, model, segmentation: SegmentationConfig, batch_size: int,
                 audio_stream: int, device: str, precision: str, actors: int | None,
                 on_audio: Callable[[float], None] | None) -> None:
        self.ray, self.batch_size, self.audio_stream, self.on_audio = ray, batch_size, audio_stream, on_audio
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        use_gpu = gpus > 0 and device != "cpu"
        self.count = actors or (gpus if use_gpu else max(1, cpus // 4))
        data = open(checkpoint_path, "rb").read()
        self.blob = ray.put(data)
        # CPU actors together leave at least one CPU to the file tasks, or nothing would feed them.
        actor_cpus = 0 if use_gpu else min(1.0, max(0.0, (cpus - 1) / self.count))
        actor_class = ray.remote(num_gpus=1 if use_gpu else 0, num_cpus=actor_cpus,
                                 max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)(_Classifier)
        self.idle = [actor_class.remote(hashlib.sha256(data).hexdigest(), "cuda" if use_gpu else "cpu", precision)
                     for _ in range(self.count)]
        # Each part is two objects (metadata, spectrograms): a task runs PARTS_AHEAD parts ahead at most.
        self.featurise = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_featurise).options(
            num_returns="streaming", _generator_backpressure_num_objects=2 * PARTS_AHEAD)
        self.segmentation, self.features = asdict(segmentation), asdict(model.features)
        self.prior = context_prior(model.meta) if model.features.context_norm else None
        self.voices = voice_context(model.meta) if model.features.context_norm else None
        self.order: deque[_File] = deque()
        self.featurising: dict = {}  # file task's generator -> file
        self.scoring: dict = {}  # classify ref -> (actor, [(file, first segment, stop)])
        self.ready_batches: deque = deque()  # (slices, parts) waiting for an idle actor
        self.buffer: list[tuple[_File, object, int, int, int]] = []  # (file, part ref, first row, stop row, first segment)
        self.buffered = 0
        self.limit = FILES_IN_FLIGHT_PER_CPU * cpus

    def wants_files(self) -> bool:
        return (len(self.ready_batches) < BATCHES_WAITING_PER_ACTOR * self.count
                and len(self.featurising) < self.limit)

    def start(self, name: str) -> None:
        file = _File(name)
        self.order.append(file)
        self.featurising[self.featurise.remote(name, self.segmentation, self.features, self.audio_stream, self.prior,
                                               self.batch_size, self.voices)] = file

    def dispatch(self) -> None:
        """Hand the waiting batches to idle actors (closing a partial one if an actor would idle)."""
        if self.buffer and not self.ready_batches and (self.idle or not self.featurising):
            self._close_batch()  # an actor would idle, or nothing else will fill the batch: score what waits
        while self.ready_batches and self.idle:
            slices, parts = self.ready_batches.popleft()
            actor = self.idle.pop()
            self.scoring[actor.classify.remote([self.blob], parts)] = (actor, slices)

    def wait(self) -> None:
        """Take whatever comes next: a file task's object, or a batch's posteriors."""
        done, _ = self.ray.wait([*self.featurising, *self.scoring], num_returns=1)
        for ready in done:
            if ready in self.featurising:
                file = self.featurising[ready]
                try:
                    self._take(file, ready)
                except StopIteration:  # the task has streamed everything
                    del self.featurising[ready]
                    if file.end is None and file.failure is None:
                        file.failure = FileFailure(file.name, "the file's task ended without its results")
                if file.failure is not None and ready in self.featurising:
                    del self.featurising[ready]
            else:
                actor, slices = self.scoring.pop(ready)
                self.idle.append(actor)
                posteriors = self.ray.get(ready)
                row = 0
                for file, first, stop in slices:
                    for i in range(first, stop):
                        if file.posteriors[i] is None:  # each slot is filled once
                            file.posteriors[i] = posteriors[row]
                            file.unscored -= 1
                        row += 1

    def _close_batch(self) -> None:
        slices = [(f, index, index + stop - first) for f, _, first, stop, index in self.buffer]
        parts = [(ref, first, stop, [f.part_frames[index + k] for k in range(stop - first)])
                 for f, ref, first, stop, index in self.buffer]
        self.ready_batches.append((slices, parts))
        self.buffer, self.buffered = [], 0

    def _add_segments(self, file: _File, ref, rows: int, index: int) -> None:
        first = 0
        while first < rows:
            take = min(rows - first, self.batch_size - self.buffered)
            self.buffer.append((file, ref, first, first + take, index + first))
            self.buffered += take
            first += take
            if self.buffered >= self.batch_size:
                self._close_batch()

    def _take(self, file: _File, gen) -> None:
        """The next object of a file's task: a part's metadata, its spectrograms, or the end."""
        ref = next(gen)
        if file.part is not None:  # spectrograms of the part announced last
            n = len(file.part["times"])
            index = len(file.posteriors)
            file.times += file.part["times"]
            file.part_frames += file.part["n_frames"]
            file.posteriors += [None] * n
            file.unscored += n
            file.part = None
            if file.failure is None:
                self._add_segments(file, ref, n, index)
            return
        item = self.ray.get(ref)
        if "error" in item:
            file.failure = FileFailure(file.name, item["error"], item.get("detail", ""))
        elif "times" in item:
            file.part = item
        else:
            file.end = item
            if self.on_audio is not None:
                self.on_audio(item["duration_s"])


def _result(file: _File, model) -> FileResult | FileFailure:
    if file.failure is not None:
        return file.failure
    segments = [SegmentResult.scored(start, end, p, model.labels)
                for (start, end), p in zip(file.times, file.posteriors)]
    return FileResult(file.name, round(file.end["duration_s"], 3), model.name, segments, model.labels,
                      file.end["warnings"])
