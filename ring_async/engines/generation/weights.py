"""Versioned weight updates in buckets: split, checksum, validate, stage, then apply all at once.

A publisher (the learner) turns its state dict into :class:`WeightBucket` s with :func:`iter_buckets`: each bucket is
a safetensors blob of whole tensors, its SHA-256, and its place in the update (version, index, count; repeated in the
safetensors metadata so a bucket cannot be replayed into another update). A receiver collects them with a
:class:`WeightUpdateAssembler` that checks every bucket as it arrives against the served model's
:class:`WeightManifest` (checksum, safetensors framing, names, shapes, dtypes, finite values, no duplicates) and
stages the tensors beside the live weights. Only a complete, fully checked update becomes :class:`StagedWeights`,
which the engine applies between two decoding steps; anything wrong raises :class:`WeightUpdateError` and the staged
tensors are dropped, so the engine keeps serving the version it had.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from ring_async.engines.generation.errors import StaleWeightVersionError, WeightUpdateError, WeightUpdateTimeout

VERSION_KEY = "ring_async.version"
BUCKET_KEY = "ring_async.bucket"
DEFAULT_BUCKET_BYTES = 8 << 20

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


SAFETENSORS_FORMAT = "safetensors"


@dataclass(frozen=True)
class WeightBucket:
    """One chunk of a versioned weight update (the ``WeightChunk`` message of the Generator service): whole tensors
    as a safetensors file, their names in header order, and the SHA-256 of the bytes."""

    version: int
    index: int
    count: int
    payload: bytes
    sha256: str
    tensor_names: tuple[str, ...] = ()
    format: str = SAFETENSORS_FORMAT

    @property
    def label(self) -> str:
        return f"weight bucket {self.index + 1}/{self.count} of version {self.version}"


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class WeightManifest:
    """The names, shapes and dtypes an update may carry. ``canonical`` folds tied aliases (an lm_head sharing the
    embedding) onto one name, so a tensor is sent once and the update must cover every canonical name."""

    specs: Mapping[str, TensorSpec]
    canonical: Mapping[str, str]

    @property
    def required(self) -> frozenset[str]:
        return frozenset(self.canonical.values())

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> "WeightManifest":
        specs: dict[str, TensorSpec] = {}
        canonical: dict[str, str] = {}
        first_name: dict[int, str] = {}
        # Parameters and persistent buffers: what save_pretrained writes, so what a learner would send.
        for name, tensor in module.state_dict(keep_vars=True).items():
            specs[name] = TensorSpec(tuple(tensor.shape), tensor.dtype)
            key = tensor.data_ptr() if tensor.numel() else id(tensor)
            canonical[name] = first_name.setdefault(key, name)
        return cls(specs, canonical)

    @classmethod
    def from_checkpoint(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "WeightManifest":
        """The manifest of a saved checkpoint, from its safetensors headers only (no tensor is loaded); floating
        tensors are expected in ``dtype`` when given (the dtype the engine serves in)."""
        files = sorted(Path(folder).glob("*.safetensors"))
        if not files:
            raise WeightUpdateError(f"{folder}: no .safetensors files to build a weight manifest from")
        specs: dict[str, TensorSpec] = {}
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    stored = _SAFETENSORS_DTYPES.get(piece.get_dtype(), torch.float32)
                    target = dtype if (dtype is not None and stored.is_floating_point) else stored
                    specs[name] = TensorSpec(tuple(piece.get_shape()), target)
        return cls(specs, {name: name for name in specs})


def state_tensors(source: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors to publish: a module's state dict (or a mapping), with tied aliases sent once."""
    tensors = source.state_dict() if isinstance(source, torch.nn.Module) else dict(source)
    seen: set[int] = set()
    unique: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        key = tensor.data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            continue
        seen.add(key)
        unique[name] = tensor
    return unique


def iter_buckets(
    source: torch.nn.Module | Mapping[str, torch.Tensor], version: int, bucket_bytes: int = DEFAULT_BUCKET_BYTES
) -> Iterator[WeightBucket]:
    """Split the weights into buckets of about ``bucket_bytes`` (a larger tensor travels alone)."""
    if bucket_bytes < 1:
        raise WeightUpdateError(f"bucket_bytes must be positive, got {bucket_bytes}")
    groups: list[list[tuple[str, torch.Tensor]]] = [[]]
    size = 0
    for name, tensor in state_tensors(source).items():
        nbytes = tensor.numel() * tensor.element_size()
        if groups[-1] and size + nbytes > bucket_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, tensor))
        size += nbytes
    count = len(groups)
    for index, group in enumerate(groups):
        metadata = {VERSION_KEY: str(version), BUCKET_KEY: f"{index}/{count}"}
        payload = save_safetensors(
            {name: tensor.detach().to("cpu").contiguous() for name, tensor in group}, metadata=metadata
        )
        names, _ = _read_header(payload)
        yield WeightBucket(version, index, count, payload, hashlib.sha256(payload).hexdigest(), tuple(names))


def _read_header(payload: bytes) -> tuple[list[str], dict[str, str]]:
    """Tensor names in header order and the ``__metadata__`` of a safetensors file (ValueError if unreadable)."""
    if len(payload) < 8:
        raise ValueError("shorter than a safetensors header")
    header_len = int.from_bytes(payload[:8], "little")
    if header_len > len(payload) - 8:
        raise ValueError(f"header of {header_len} bytes overruns the {len(payload)}-byte payload")
    header = json.loads(payload[8 : 8 + header_len])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    return list(header), metadata


@dataclass(frozen=True)
class WeightUpdateReport:
    """What an applied update did (the ``UpdateWeightsReply`` of the Generator service)."""

    version: int
    buckets: int
    tensors: int
    bytes: int
    load_s: float  # first bucket's arrival to the new weights being live


@dataclass
class StagedWeights:
    """A complete, checked update, ready to be copied into the live weights in one go."""

    version: int
    tensors: dict[str, torch.Tensor]  # canonical name -> tensor on the engine's device, in the served dtype
    buckets: int
    bytes: int
    received_s: float
    first_bucket_at: float  # clock() when the first bucket arrived (load time is measured from it)

    def report(self, now: float) -> WeightUpdateReport:
        return WeightUpdateReport(self.version, self.buckets, len(self.tensors), self.bytes, now - self.first_bucket_at)


class WeightUpdateAssembler:
    """Receives the buckets of one update, checks each, and stages the tensors (never touching the live model)."""

    def __init__(
        self,
        manifest: WeightManifest,
        served_version: int,
        *,
        device: torch.device | str = "cpu",
        check_finite: bool = True,
        require_complete: bool = True,
        deadline: float | None = None,
        clock=time.monotonic,
    ):
        self._manifest = manifest
        self._served = served_version
        self._device = torch.device(device)
        self._check_finite = check_finite
        self._require_complete = require_complete
        self._deadline = deadline
        self._clock = clock
        self._created = clock()
        self._started: float | None = None  # first bucket's arrival
        self.version: int | None = None
        self.count: int | None = None
        self._received: set[int] = set()
        self._staged: dict[str, torch.Tensor] = {}
        self._bytes = 0

    @property
    def received(self) -> int:
        return len(self._received)

    def add(self, bucket: WeightBucket) -> None:
        """Check one bucket and stage its tensors; raises :class:`WeightUpdateError` naming what is wrong."""
        self.check_deadline()
        if self._started is None:
            self._started = self._clock()
        label = _label(bucket)
        if not isinstance(bucket.payload, (bytes, bytearray, memoryview)):
            raise WeightUpdateError(f"{label}: payload is {type(bucket.payload).__name__}, not bytes")
        if bucket.format != SAFETENSORS_FORMAT:
            raise WeightUpdateError(f"{label}: format {bucket.format!r} is not supported (only {SAFETENSORS_FORMAT!r})")
        if self.version is None:
            if bucket.version <= self._served:
                raise StaleWeightVersionError(
                    f"{label}: version {bucket.version} is not newer than the served version {self._served}"
                )
            if bucket.count < 1:
                raise WeightUpdateError(f"{label}: bucket count must be at least 1")
            self.version, self.count = bucket.version, bucket.count
        if bucket.version != self.version:
            raise WeightUpdateError(f"{label}: belongs to version {bucket.version}, but this update is {self.version}")
        if bucket.count != self.count:
            raise WeightUpdateError(f"{label}: says {bucket.count} buckets, earlier buckets said {self.count}")
        if not 0 <= bucket.index < bucket.count:
            raise WeightUpdateError(f"{label}: index {bucket.index} outside 0..{bucket.count - 1}")
        if bucket.index in self._received:
            raise WeightUpdateError(f"{label}: received twice")
        if bucket.index != len(self._received):
            raise WeightUpdateError(f"{label}: out of order (expected bucket {len(self._received) + 1} next)")
        digest = hashlib.sha256(bucket.payload).hexdigest()
        if digest != bucket.sha256:
            raise WeightUpdateError(
                f"{label}: checksum mismatch (sha256 {digest[:12]}…, expected {str(bucket.sha256)[:12]}…): "
                "corrupted in transit"
            )
        tensors = self._parse(bucket, label)
        # Every tensor is checked against the served model before any is staged: a bucket of another architecture
        # is then refused for what it is (unknown tensor, shape), whatever order its header lists the tensors in,
        # not for whichever alias of a tied weight it happens to list first.
        for name, tensor in tensors.items():
            self._check(name, tensor, label)
        for name, tensor in tensors.items():
            self._stage(name, tensor, label)
        self._received.add(bucket.index)
        self._bytes += len(bucket.payload)

    def _parse(self, bucket: WeightBucket, label: str) -> dict[str, torch.Tensor]:
        payload = bytes(bucket.payload)
        try:
            names, metadata = _read_header(payload)
            tensors = load_safetensors(payload)
        except (SafetensorError, ValueError, OSError, RuntimeError, UnicodeDecodeError) as err:
            raise WeightUpdateError(f"{label}: not a safetensors payload: {err}") from None
        if list(bucket.tensor_names) != names:
            raise WeightUpdateError(
                f"{label}: tensor_names {list(bucket.tensor_names)[:4]}… disagree with the safetensors header "
                f"{names[:4]}…"
            )
        expected = {VERSION_KEY: str(bucket.version), BUCKET_KEY: f"{bucket.index}/{bucket.count}"}
        for key, value in expected.items():
            if metadata.get(key) != value:
                raise WeightUpdateError(
                    f"{label}: payload is marked {key}={metadata.get(key)!r}, expected {value!r} (mixed-up bucket)"
                )
        if not tensors:
            raise WeightUpdateError(f"{label}: holds no tensors")
        return tensors

    def _check(self, name: str, tensor: torch.Tensor, label: str) -> None:
        spec = self._manifest.specs.get(name)
        if spec is None:
            raise WeightUpdateError(f"{label}: unknown tensor {name!r} (not a weight of the served model)")
        if tuple(tensor.shape) != spec.shape:
            raise WeightUpdateError(
                f"{label}: tensor {name!r} has shape {tuple(tensor.shape)}, the served model has {spec.shape}"
            )
        if tensor.dtype != spec.dtype:
            raise WeightUpdateError(f"{label}: tensor {name!r} is {tensor.dtype}, the served model is {spec.dtype}")
        if self._check_finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightUpdateError(f"{label}: tensor {name!r} holds NaN or infinite values")

    def _stage(self, name: str, tensor: torch.Tensor, label: str) -> None:
        canonical = self._manifest.canonical[name]
        if canonical in self._staged:
            raise WeightUpdateError(f"{label}: tensor {name!r} was already sent in this update")
        self._staged[canonical] = tensor.to(self._device, non_blocking=True)

    def check_deadline(self) -> None:
        if self._deadline is not None and self._clock() > self._deadline:
            raise WeightUpdateTimeout(
                f"weight update to version {self.version if self.version is not None else '?'} timed out after "
                f"{self._clock() - self._created:.1f} s with {self.received} of {self.count or '?'} buckets received; "
                f"still serving version {self._served}"
            )

    def finish(self) -> StagedWeights:
        """The staged update, once every bucket arrived and (by default) every weight is covered."""
        if self.version is None or self.count is None:
            raise WeightUpdateError("weight update carried no buckets")
        missing_buckets = sorted(set(range(self.count)) - self._received)
        if missing_buckets:
            raise WeightUpdateError(
                f"weight update to version {self.version} is incomplete: bucket(s) {[i + 1 for i in missing_buckets]} "
                f"of {self.count} never arrived"
            )
        if self._require_complete:
            missing = sorted(self._manifest.required - set(self._staged))
            if missing:
                raise WeightUpdateError(
                    f"weight update to version {self.version} is incomplete: {len(missing)} weight(s) missing, "
                    f"e.g. {missing[:3]}"
                )
        started = self._started if self._started is not None else self._created
        return StagedWeights(self.version, self._staged, self.count, self._bytes, self._clock() - started, started)


def assemble(
    buckets: Iterable[WeightBucket],
    manifest: WeightManifest,
    served_version: int,
    *,
    device: torch.device | str = "cpu",
    check_finite: bool = True,
    timeout_s: float | None = None,
) -> StagedWeights:
    """Receive a whole update from an iterable of buckets (the synchronous path)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    assembler = WeightUpdateAssembler(
        manifest, served_version, device=device, check_finite=check_finite, deadline=deadline
    )
    for bucket in buckets:
        assembler.add(bucket)
    assembler.check_deadline()
    return assembler.finish()


def _label(bucket: WeightBucket) -> str:
    try:
        return bucket.label
    except Exception:  # a malformed bucket must still produce a readable error
        return "weight bucket"
