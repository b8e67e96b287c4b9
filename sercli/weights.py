"""Checkpoints: plain dicts, sha256-checked, found by name in the installed models or by path."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .features import CPU_SUBBATCH, FeatureConfig
from .model import FUNCTIONALS, LABELS, EmotionNet, ModelConfig, TwoStepNet, build_net, posteriors
from .outputs import write_bytes

FORMAT = "sercli-checkpoint/1"
SUFFIX = ".pt"
PLAIN_MODEL = "cnn-lstm-10hz"  # the network on normal spectrograms
DENOISE_MODEL = "cnn-lstm-10hz-denoise"  # the modified predictor, trained on the noise filter's spectrograms
FUNCTIONALS_MODEL = "egemaps-mlp"  # five MLPs on each segment's eGeMAPS functionals, standardised over the file
# The model `sercli analyze` uses without --model: the eGeMAPS MLPs, ahead of both networks on
# films, on clips alone and across corpora over the five folds, and as fast on a film
# (train/RESULTS.md, "Functionals in context"; bench/RESULTS.md, 2026-12-02).
DEFAULT_MODEL = FUNCTIONALS_MODEL
VOICES_MODEL = "egemaps-mlp-voices"  # the same MLPs trained and run with voice-typed contexts: for films
# What `sercli analyze` and `sercli evaluate` run without --model: a routed pair (ROUTE_SEPARATOR),
# the default MLPs for a segment whose context holds less speech than their prior stands for (a
# clip alone) and the voice-typed ones for the rest (a film, a podcast), each of the pair the best
# of the two on its view (train/RESULTS.md, "One model for clips, another for films").
DEFAULT_ANALYSIS_MODEL = f"{DEFAULT_MODEL}|{VOICES_MODEL}"
# --denoise without --model: the mean of both models' posteriors, ahead of the modified predictor
# alone on films with music beds (train/RESULTS.md, "The --denoise recipe with --balance corpus").
DEFAULT_DENOISE_MODEL = f"{PLAIN_MODEL}+{DENOISE_MODEL}"
MODEL_PATH_ENV = "SERCLI_MODEL_PATH"  # extra folders of models, separated like PATH


class ModelError(Exception):
    """A model cannot be found, verified or loaded; the message says which and why."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file whole or not at all (sercli.outputs: links followed, modes kept)."""
    write_bytes(path, data)


def atomic_torch_save(obj: Any, path: Path) -> bytes:
    """torch.save to `path` atomically; returns the bytes written."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return data


def save_checkpoint(path: str | Path, config: ModelConfig, state_dict: dict[str, torch.Tensor],
                    features: FeatureConfig, meta: dict[str, Any] | None = None, half: bool = False,
                    members: dict[str, tuple[ModelConfig, dict[str, torch.Tensor]]] | None = None) -> str:
    """Write `path` and `path.sha256` (sha256sum format) atomically; returns the digest.

    half: store floating-point tensors as float16 (half the size; loading casts them back).
    members: more networks in the same file, by name, making a two-step bundle: the main network
    is the four-class one, the members the binary networks of model.TWO_STEP_EMOTIONS. One
    file, one sha256, one model card.
    """
    path = Path(path)
    # Through JSON so meta holds only plain types (numpy scalars become Python ones): anything
    # else would make torch.load(weights_only=True) refuse the file.
    meta = json.loads(json.dumps(meta or {}, default=lambda o: o.item() if hasattr(o, "item") else str(o)))

    def tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
                for k, v in state.items()}

    checkpoint = {
        "format": FORMAT,
        "config": asdict(config),
        "state_dict": tensors(state_dict),
        "meta": {"labels": list(LABELS), "features": asdict(features), **meta},
    }
    if members:
        checkpoint["kind"] = "two-step"
        checkpoint["members"] = {name: {"config": asdict(c), "state_dict": tensors(state)}
                                 for name, (c, state) in members.items()}
    data = atomic_torch_save(checkpoint, path)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(checksum_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Verify `path` against its .sha256 file, then load it with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    sums = checksum_path(path)
    if not sums.is_file():
        raise ModelError(f"{path}: checksum file {sums.name} is missing "
                         f"(create it with: sha256sum {path.name} > {sums.name})")
    expected = (sums.read_text().split() or [""])[0].lower()
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(f"{path}: sha256 mismatch (file {actual[:12]}..., expected {expected[:12]}...): "
                         "the file is corrupt or was modified")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"{path}: not a sercli checkpoint ({type(exc).__name__})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ModelError(f"{path}: not a sercli checkpoint (format {checkpoint.get('format')!r})"
                         if isinstance(checkpoint, dict) else f"{path}: not a sercli checkpoint")
    return checkpoint


def model_dirs() -> list[Path]:
    """Where named models are looked up: $SERCLI_MODEL_PATH folders, then the installed ones."""
    extra = [Path(p) for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    try:
        shipped = Path(str(resources.files("sercli.pretrained")))
    except ModuleNotFoundError:  # running from a source tree that was not installed
        shipped = Path(__file__).resolve().parent.parent / "weights"
    return extra + [shipped]


SCORES_FILE = "scores.json"  # beside checkpoints: the five-fold figures of each one's recipe, by model name


def recorded_scores(path: Path, name: str | None = None) -> dict | None:
    """The five-fold figures recorded for the checkpoint at `path` in the scores.json of its folder
    (views "programmes", "clips", "speaker", each {"ua", "wa"} in % or None), or None. name: the
    entry to read instead of the file's own (a routed pair's, e.g. DEFAULT_ANALYSIS_MODEL)."""
    try:
        recorded = json.loads((path.parent / SCORES_FILE).read_text())
    except (OSError, ValueError):
        return None
    entry = recorded.get(name or path.stem) if isinstance(recorded, dict) else None
    return entry if isinstance(entry, dict) else None


def installed_models() -> dict[str, Path]:
    """Model name -> file, the first folder of model_dirs() winning on a clash."""
    found: dict[str, Path] = {}
    for folder in model_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                found.setdefault(path.stem, path)
    return found


def resolve(name_or_path: str | Path | None) -> Path:
    """A model file from a name of an installed model or a path; None means the default."""
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    models = installed_models()
    if name in models:
        return models[name]
    path = Path(name).expanduser()
    if path.suffix == SUFFIX or os.sep in name or path.exists():
        if path.is_file():
            return path
        raise ModelError(f"{path}: no such model file")
    if name_or_path is None or name == DEFAULT_MODEL:
        raise ModelError(
            f"no default model '{DEFAULT_MODEL}' is installed: pass --model with a checkpoint "
            f"from `sercli train` or set {MODEL_PATH_ENV} to a folder holding {DEFAULT_MODEL}{SUFFIX}")
    if name == PLAIN_MODEL:
        raise ModelError(
            f"no model '{PLAIN_MODEL}' is installed (--denoise runs it beside {DENOISE_MODEL}): pass --model "
            f"with a checkpoint from `sercli train`, or set {MODEL_PATH_ENV} to a folder holding {PLAIN_MODEL}{SUFFIX}")
    known = ", ".join(sorted(models)) or "none"
    raise ModelError(f"unknown model '{name}' (installed: {known}); give a name or a path to a .pt file")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is the first CUDA GPU when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device}: CUDA is not available in this torch build or machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type != "cpu":
        raise ModelError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return resolved


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: AMX/AVX-512 bf16 CPUs, Ampere and newer GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class Model:
    """A loaded network with everything needed to feed it and read its output."""

    name: str
    path: Path | None
    net: EmotionNet
    features: FeatureConfig
    labels: tuple[str, ...]
    device: torch.device
    precision: str  # "bf16" or "fp32"
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The dataclass's own repr spells out the whole network and its metadata (~20,000 characters).
        features = self.features
        topology = "two-step" if isinstance(self.net, TwoStepNet) else self.net.config.topology
        kind = f"{topology}, {features.grid_hz} Hz grid, {features.window_ms} ms window"
        if features.kind == "egemaps":
            kind = functionals_kind(self.net.config.members, features.context_voices)
        kind += ", denoising" if features.denoise else ""
        return f"<sercli Model {self.name!r}: {kind}, {'/'.join(self.labels)}, {self.device} {self.precision}>"

    @torch.inference_mode()
    def posteriors(self, spectrograms: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """(B, F, T) spectrograms on self.device -> (B, n_classes) float32 posteriors on the CPU.

        On the CPU the network sees at most CPU_SUBBATCH segments at a time: its transient arrays
        are then a quarter the size of a batch of 32's, which keeps peak memory down for a little
        speed (measured in bench/CPU_PROFILE.md)."""
        step = CPU_SUBBATCH if self.device.type == "cpu" else len(spectrograms)
        parts = []
        for first in range(0, len(spectrograms), max(step, 1)):
            parts.append(posteriors(self.net, spectrograms[first : first + step], n_frames[first : first + step],
                                    self.precision == "bf16"))
        return torch.cat(parts)


def functionals_kind(members: int, voices: bool = False) -> str:
    """How `sercli models` and a Model's repr name an eGeMAPS checkpoint of `members` MLPs
    (voices: its contexts are voice-typed, FeatureConfig.context_voices)."""
    return f"{f'{members} MLPs' if members > 1 else 'MLP'} on eGeMAPS v02 functionals" + (", voice-typed" if voices else "")


def merged_functionals(checkpoints: list[dict[str, Any]]) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """One egemaps checkpoint's config and state from several egemaps MLPs trained apart (say,
    with different seeds) on the same features: a FunctionalsNet of as many members, each
    keeping its own weights and input statistics, whose posteriors are averaged."""
    configs = [ModelConfig.from_dict(c["config"]) for c in checkpoints]
    # as FeatureConfig: a checkpoint from before a feature setting existed lacks its key (its default)
    features = [FeatureConfig(**c["meta"].get("features", {})) for c in checkpoints]
    if len(checkpoints) < 2 or any(c.topology != FUNCTIONALS or c.members != 1 for c in configs):
        raise ModelError("only two or more single eGeMAPS MLPs can be merged")
    if any(f != features[0] for f in features) or any(c != configs[0] for c in configs):
        raise ModelError("the MLPs to merge must share their features and their configuration")
    state = {f"members.{i}.{key}": value for i, c in enumerate(checkpoints) for key, value in c["state_dict"].items()}
    return replace(configs[0], members=len(checkpoints)), state


def build_network(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """The network of a checkpoint: an EmotionNet, or a TwoStepNet for a two-step bundle."""

    def network(config: dict, state: dict) -> torch.nn.Module:
        net = build_net(ModelConfig.from_dict(config))
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return net

    main = network(checkpoint["config"], checkpoint["state_dict"])
    kind = checkpoint.get("kind", "single")
    if kind == "single":
        return main
    if kind != "two-step":
        raise ValueError(f"unknown model kind {kind!r}")
    return TwoStepNet(main, {name: network(m["config"], m["state_dict"]) for name, m in checkpoint["members"].items()})


def from_checkpoint(checkpoint: dict[str, Any], name: str, path: Path | None = None,
                    device: str | torch.device = "auto", precision: str = "auto") -> Model:
    try:
        features = FeatureConfig(**checkpoint["meta"]["features"])
        net = build_network(checkpoint)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
        raise ModelError(f"{path or name}: checkpoint does not match this sercli version ({detail})") from exc
    if features.kind == "egemaps":
        from .functionals import INSTALL_HINT, available

        if not available():
            raise ModelError(f"{path or name}: this model reads eGeMAPS features, which need openSMILE: {INSTALL_HINT}")
    target = resolve_device(device)
    if precision == "auto":
        precision = "bf16" if bf16_supported(target) else "fp32"
    elif precision not in ("bf16", "fp32"):
        raise ModelError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    net.eval().to(target)
    if target.type == "cpu" and precision == "bf16":
        net.to(memory_format=torch.channels_last)  # oneDNN's fast path for bf16 convolutions
    labels = tuple(checkpoint["meta"].get("labels", LABELS))
    return Model(name, path, net, features, labels, target, precision, checkpoint["meta"])


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "auto",
               precision: str = "auto") -> Model:
    """Load an installed model by name (default: the shipped CNN-LSTM) or a checkpoint by path.

    device: "auto", "cpu", "cuda" or "cuda:N". precision: "auto" (bf16 where the hardware runs
    it fast), "bf16" or "fp32".
    """
    path = resolve(name_or_path)
    checkpoint = read_checkpoint(path)
    name = checkpoint["meta"].get("name") or path.stem
    return from_checkpoint(checkpoint, name, path, device, precision)


def require_denoising(models: list[Model], spec: object) -> None:
    """Denoising analysis (--denoise) needs a model trained on rebuilt speech among `models`."""
    if not any(m.features.denoise for m in models):
        raise ModelError(f"{spec}: trained on normal spectrograms; --denoise needs a model trained with "
                         "`sercli train --denoise` (or leave out the model: the default pair)")


ENSEMBLE_SEPARATOR = "+"  # joins models whose posteriors are averaged: cnn-lstm-10hz+cnn-lstm-10hz-denoise
# joins a routed pair, CLIPS|FILMS: each segment is scored by FILMS where its context holds at least
# as much speech as CLIPS's prior stands for (sercli.context.routes_to_second), else by CLIPS
ROUTE_SEPARATOR = "|"


def model_names(spec: str | Path | None) -> list[str | Path | None]:
    """The models a --model value names: A+B+... is an ensemble of A, B, ...; A|B a routed pair
    (is_routed); a path that exists is one model even with a '+' or '|' in its name."""
    if spec is None or isinstance(spec, Path) or Path(spec).expanduser().exists():
        return [spec]
    if ROUTE_SEPARATOR in spec:
        names = spec.split(ROUTE_SEPARATOR)
        if len(names) != 2 or not all(names) or any(ENSEMBLE_SEPARATOR in n for n in names):
            raise ModelError(f"{spec}: a routed pair is two names or paths joined by '{ROUTE_SEPARATOR}' "
                             f"(clips, then films), neither an ensemble")
        return names
    if ENSEMBLE_SEPARATOR not in spec:
        return [spec]
    names = spec.split(ENSEMBLE_SEPARATOR)
    if not all(names):
        raise ModelError(f"{spec}: an ensemble is names or paths joined by '{ENSEMBLE_SEPARATOR}', none empty")
    return names


def spec_of(names, route: bool = False) -> str:
    """The --model value that names `names` (strings) together: an ensemble, or with route a routed pair."""
    return (ROUTE_SEPARATOR if route else ENSEMBLE_SEPARATOR).join(names)


def is_routed(spec: str | Path | None) -> bool:
    """Whether `spec` names a routed pair, CLIPS|FILMS (see model_names), rather than one model or an ensemble."""
    return isinstance(spec, str) and ROUTE_SEPARATOR in spec and len(model_names(spec)) == 2


def load_models(spec: str | Path | None = None, device: str | torch.device = "auto",
                precision: str = "auto") -> list[Model]:
    """load_model for each model of `spec` (see model_names): one Model, or an ensemble's."""
    return [load_model(name, device, precision) for name in model_names(spec)]

