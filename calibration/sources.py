"""Data sources: generators of feed dicts ``{input_name: np.ndarray}``, shared by every stage.

One convention for compare, calibration and range analysis, taken from Polygraphy: a source
yields feed dicts, and users can hand in their own ``load_data()`` script. Sources are lazy
(files are read one at a time), so memory does not grow with the number of samples, and each
one can ``describe()`` itself (files and hashes, or generator and seed) for cache keys and
manifests. Every feed is checked against the model's inputs before it is used.

Spec strings accepted by :func:`open_source`:

- ``random`` or ``random:SEED``: seeded synthetic data, shapes from the model (marked synthetic)
- ``FILE.npz``: arrays named after the inputs, first axis = samples
- ``FILE.npy``: one array, first axis = samples (single-input models)
- ``DIR``: a folder of .npz/.npy files (read in name order) or of images (with a preprocessing spec)
- ``SCRIPT.py``: a Polygraphy-style data loader defining ``load_data()`` that yields feed dicts
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.atomic import sha256_file
from calibration.errors import DataError
from calibration.modelinfo import TensorSpec
from calibration.ortvalues import is_float_dtype

Feed = dict[str, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")


def check_feed(feed: Feed, inputs: Sequence[TensorSpec], origin: str) -> Feed:
    """Check one feed against the model's inputs; return it with arrays made contiguous.

    Refuses missing or unknown names, wrong rank, static dims that differ, dtypes that do not
    convert safely, and NaN/Inf, each with a message naming the input and both shapes.
    """
    if not isinstance(feed, dict):
        raise DataError(f"{origin}: expected a dict of input name -> array, got {type(feed).__name__}")
    by_name = {spec.name: spec for spec in inputs}
    unknown = sorted(set(feed) - set(by_name))
    if unknown:
        raise DataError(
            f"{origin}: unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(by_name)}"
        )
    missing = [n for n in by_name if n not in feed]
    if missing:
        raise DataError(f"{origin}: missing input(s) {', '.join(missing)}")
    checked: Feed = {}
    for name, spec in by_name.items():
        arr = np.asarray(feed[name])
        expected = spec.describe()
        if arr.ndim != len(spec.shape):
            raise DataError(
                f"{origin}: input '{name}' expects shape {expected}, got {list(arr.shape)} (rank {arr.ndim})"
            )
        for want, got in zip(spec.shape, arr.shape, strict=True):
            if isinstance(want, int) and want > 0 and want != got:
                raise DataError(f"{origin}: input '{name}' expects shape {expected}, got {list(arr.shape)}")
        want_dtype = spec.np_dtype
        if arr.dtype != want_dtype:
            if not np.can_cast(arr.dtype, want_dtype, casting="same_kind") or (
                arr.dtype.kind == "f" and want_dtype.kind in "iub"
            ):
                raise DataError(
                    f"{origin}: input '{name}' expects dtype {want_dtype.name}, got {arr.dtype.name}"
                )
            arr = arr.astype(want_dtype)
        if is_float_dtype(arr.dtype) and not np.all(np.isfinite(_as_float(arr))):
            raise DataError(f"{origin}: input '{name}' contains NaN or Inf")
        checked[name] = np.ascontiguousarray(arr)
    return checked


def _as_float(arr: np.ndarray) -> np.ndarray:
    """numpy floats as they are; bfloat16 and float8 (ml_dtypes) widened for np.isfinite."""
    return arr if arr.dtype.kind == "f" else arr.astype(np.float32)


@dataclass
class DataSource:
    """A named, describable, re-iterable stream of checked feed dicts."""

    kind: str
    spec: str
    inputs: Sequence[TensorSpec]
    _make: Callable[[], Iterable[Feed]]
    details: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False
    limit: int | None = None  # number of feeds at most

    def __iter__(self) -> Iterator[Feed]:
        count = 0
        for index, feed in enumerate(self._make()):
            if self.limit is not None and count >= self.limit:
                return
            yield check_feed(feed, self.inputs, f"{self.spec} (batch {index})")
            count += 1
        if count == 0:
            raise DataError(f"data source '{self.spec}' yielded no samples")

    def describe(self) -> dict[str, Any]:
        """What the data is, for cache keys and manifests: kind, spec, files or generator and seed."""
        return {
            "kind": self.kind,
            "spec": self.spec,
            "synthetic": self.synthetic,
            "limit": self.limit,
            **self.details,
        }


def static_batch(inputs: Sequence[TensorSpec]) -> int | None:
    """The model's fixed batch size (dim 0 of its inputs), or None when the batch is dynamic."""
    static = {s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    return int(next(iter(static))) if static else None


def _stack(buffer: list[Feed]) -> Feed:
    try:
        return {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
    except ValueError:
        shapes = sorted({str(list(np.asarray(b[k]).shape[1:])) for b in buffer for k in b})
        raise DataError(
            f"samples of different shapes cannot share a batch ({', '.join(shapes)}): "
            "give same-sized data, or a batch size of 1"
        ) from None


def _rebatch(
    samples: Iterable[Feed], batch_size: int, inputs: Sequence[TensorSpec], max_samples: int | None = None
) -> Iterator[Feed]:
    """Split stacked arrays into single samples and re-stack them ``batch_size`` at a time.

    A model with a static batch dim gets that batch size whatever was asked; at most
    ``max_samples`` samples are yielded (the last batch may be partial where the batch is dynamic).
    """
    static = static_batch(inputs)
    if static:
        batch_size = static
    buffer: list[Feed] = []
    taken = 0
    yielded = 0
    for stacked in samples:
        lengths = {np.asarray(v).shape[0] if np.ndim(v) else 0 for v in stacked.values()}
        if len(lengths) != 1 or 0 in lengths:
            yield stacked  # let check_feed report the mismatch
            continue
        for i in range(lengths.pop()):
            if max_samples is not None and taken >= max_samples:
                break
            buffer.append({k: np.asarray(v)[i : i + 1] for k, v in stacked.items()})
            taken += 1
            if len(buffer) == batch_size:
                yield _stack(buffer)
                yielded += 1
                buffer = []
        if max_samples is not None and taken >= max_samples:
            break
    if buffer:
        if static and len(buffer) != batch_size:
            if not yielded:
                raise DataError(
                    f"the model takes a fixed batch of {static} but the data has only {len(buffer)} "
                    f"sample(s); give at least {static}, or export the model with a dynamic batch"
                )
            return  # a partial batch cannot feed a static-batch model
        yield _stack(buffer)


def _random_source(
    spec: str,
    inputs: Sequence[TensorSpec],
    seed: int,
    batch_size: int,
    samples: int,
    shapes: dict[str, tuple[int, ...]] | None,
) -> DataSource:
    batch_size = static_batch(inputs) or batch_size
    dynamic = static_batch(inputs) is None

    def make() -> Iterator[Feed]:
        rng = np.random.default_rng(seed)
        left = samples
        while left > 0:
            size = min(batch_size, left) if dynamic else batch_size
            left -= size
            feed: Feed = {}
            for s in inputs:
                shape = s.concrete_shape(size, shapes)
                dt = s.np_dtype
                if is_float_dtype(dt):
                    feed[s.name] = rng.standard_normal(shape).astype(dt)
                elif dt.kind == "b":
                    feed[s.name] = rng.integers(0, 2, shape).astype(dt)
                else:
                    feed[s.name] = rng.integers(0, 10, shape).astype(dt)
            yield feed

    return DataSource(
        "random",
        spec,
        inputs,
        make,
        {
            "generator": "numpy.default_rng.standard_normal",
            "seed": seed,
            "batch_size": batch_size,
            "samples": samples,
            "shapes": {s.name: list(s.concrete_shape(batch_size, shapes)) for s in inputs},
        },
        synthetic=True,
    )


def _load_array_file(path: Path, inputs: Sequence[TensorSpec]) -> Feed:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                names = [s.name for s in inputs]
                if all(n in data.files for n in names):  # extra arrays (labels, ids) are ignored
                    return {n: data[n] for n in names}
                return {k: data[k] for k in data.files}
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if len(inputs) != 1:
        raise DataError(
            f"{path}: a .npy file feeds single-input models only; use .npz with keys "
            f"{', '.join(s.name for s in inputs)}"
        )
    return {inputs[0].name: arr}


def _array_files_source(
    spec: str, files: list[Path], inputs: Sequence[TensorSpec], batch_size: int, samples: int | None
) -> DataSource:
    def make() -> Iterator[Feed]:
        return _rebatch((_load_array_file(p, inputs) for p in files), batch_size, inputs, samples)

    details = {
        "files": [{"name": p.name, "sha256": sha256_file(p)} for p in files],
        "batch_size": static_batch(inputs) or batch_size,
        "samples": samples,
    }
    return DataSource("arrays", spec, inputs, make, details)


def load_script_function(path: Path, function: str = "load_data") -> Callable[..., Any]:
    """Import a user's data loader script and return its ``load_data`` (or another) function."""
    module_name = f"_edgedeploy_user_loader_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DataError(f"cannot import data loader script {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        raise DataError(f"data loader script {path} failed to import: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise DataError(f"data loader script {path} defines no {function}() function")
    return fn  # type: ignore[no-any-return]


def _script_source(
    spec: str, path: Path, inputs: Sequence[TensorSpec], samples: int | None, function: str
) -> DataSource:
    fn = load_script_function(path, function)

    def make() -> Iterator[Feed]:
        try:
            yield from fn()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"data loader script {path} raised {type(exc).__name__}: {exc}") from None

    return DataSource(
        "script",
        spec,
        inputs,
        make,
        {"script": path.name, "sha256": sha256_file(path), "function": function},
        limit=samples,
    )


def _parse_random(spec: str, default_seed: int) -> int | None:
    if spec == "random":
        return default_seed
    if spec.startswith("random:"):
        value = spec.split(":", 1)[1]
        if value.startswith("seed="):
            value = value[5:]
        try:
            return int(value)
        except ValueError:
            raise DataError(f"bad data spec '{spec}': expected random or random:SEED") from None
    return None


def open_source(
    spec: str,
    inputs: Sequence[TensorSpec],
    *,
    samples: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
    image_options: Any = None,
) -> DataSource:
    """Open a data spec (see the module docstring) for a model with ``inputs``.

    ``samples`` caps the number of samples (random data defaults to 8); ``shapes`` fixes
    dynamic dims for synthetic data; ``image_options`` is a preprocessing spec for image folders.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    if samples is not None and samples < 1:
        raise DataError(f"number of samples must be >= 1, got {samples}")
    rnd_seed = _parse_random(spec, seed)
    if rnd_seed is not None:
        return _random_source(spec, inputs, rnd_seed, batch_size, samples or 8, shapes)
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data not found: {spec} (expected random, a .npz/.npy file, a folder or a .py loader)"
        )
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if p.is_file())
        arrays = [p for p in entries if p.suffix in (".npz", ".npy")]
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if arrays:
            return _array_files_source(spec, arrays, inputs, batch_size, samples)
        if images:
            from calibration import images as image_mod

            return image_mod.image_folder_source(spec, images, inputs, batch_size, samples, image_options)
        raise DataError(f"data folder {spec} holds no .npz, .npy or image files")
    if path.suffix in (".npz", ".npy"):
        return _array_files_source(spec, [path], inputs, batch_size, samples)
    if path.suffix == ".py":
        return _script_source(spec, path, inputs, samples, "load_data")
    raise DataError(f"unsupported data file {spec}: use .npz, .npy, a folder of them, or a .py loader")


def parse_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:SHAPE`` items such as ``images:1x3x224x224`` or ``ids:1,128``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, shape = item.rpartition(":")
        if not sep or not name:
            raise DataError(f"bad input shape '{item}': expected NAME:SHAPE, e.g. images:1x3x224x224")
        try:
            dims = tuple(int(d) for d in shape.replace(",", "x").split("x") if d)
        except ValueError:
            raise DataError(f"bad input shape '{item}': dims must be integers") from None
        if not dims or any(d < 1 for d in dims):
            raise DataError(f"bad input shape '{item}': dims must be positive")
        shapes[name] = dims
    return shapes
