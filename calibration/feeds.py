"""The data-source vocabulary every source shares: a feed, a checked source, batching.

A feed is one batch ``{input_name: np.ndarray}``; a :class:`DataSource` yields checked feeds
and describes itself for cache keys. :mod:`calibration.sources` (files, scripts, random data)
and :mod:`calibration.images` (image folders) both build on these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.errors import DataError
from calibration.modelinfo import TensorSpec, refuse_non_tensor_inputs
from calibration.ortvalues import is_float_dtype

Feed = dict[str, np.ndarray]


def feed_rows(feed: Feed) -> int:
    """The samples in one feed: first-axis rows of its first input (1 for a scalar or no input)."""
    first = next(iter(feed.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


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
        if spec.rank_known and arr.ndim != len(spec.shape):  # else the model says nothing of its shape
            raise DataError(
                f"{origin}: input '{name}' expects shape {expected}, got {list(arr.shape)} (rank {arr.ndim})"
            )
        for want, got in zip(spec.shape, arr.shape, strict=spec.rank_known):
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
        # not np.ascontiguousarray alone: it makes a scalar (silero-vad's sr, shape []) 1-D, [1]
        checked[name] = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    _check_named_dims(checked, inputs, origin)
    return checked


def _check_named_dims(feed: Feed, inputs: Sequence[TensorSpec], origin: str) -> None:
    """Dims the model names alike (``batch`` on two inputs) must have one length in a feed: a
    data file whose arrays hold different numbers of rows reaches ONNX Runtime as a kernel's
    shape error otherwise."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in inputs:
        for axis, dim in enumerate(spec.shape):
            if not isinstance(dim, str) or dim in ("", "?") or dim.startswith("unk__"):
                continue  # a named dim; not the unknown ones ("?", shape inference's unk__N)
            length = int(feed[spec.name].shape[axis])
            first = seen.setdefault(dim, (spec.name, length))
            if first[1] != length:
                raise DataError(
                    f"{origin}: inputs '{first[0]}' and '{spec.name}' share the dim '{dim}' but have "
                    f"{first[1]} and {length} along it"
                )


def _no_samples(feed: Feed, inputs: Sequence[TensorSpec]) -> bool:
    """Whether a feed holds no samples: an input empty along dim 0, which the model does not fix
    at 0. A dim the model fixes at 0 (an empty list of boxes beside the image) is its shape."""
    for spec in inputs:
        arr = feed[spec.name]
        if arr.ndim and arr.shape[0] == 0 and not (spec.shape and spec.shape[0] == 0):
            return True
    return False


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
    # synthetic data: the inputs whose dynamic dims beyond the batch were fed as 1, as ``name 1x1``
    # (no shape given for them), which an error the model raises on them can name
    fed_as_one: tuple[str, ...] = ()
    # what the source assumed that the user may not have meant (an image folder's preprocessing
    # when none was declared), or an option it did not use: said by :meth:`guessed`
    note: str | None = None

    def __iter__(self) -> Iterator[Feed]:
        # when the data is read, not when the source is opened: an fp16 build, which needs no
        # data, skips its range analysis on seeded random data it cannot make (a sequence input)
        refuse_non_tensor_inputs(self.inputs)
        count = 0
        for index, feed in enumerate(self._make()):
            if self.limit is not None and count >= self.limit:
                return
            checked = check_feed(feed, self.inputs, f"{self.spec} (batch {index})")
            if _no_samples(checked, self.inputs):  # a gate over no values would pass
                raise DataError(f"data source '{self.spec}' (batch {index}) holds 0 samples")
            yield checked
            count += 1
        if count == 0:
            raise DataError(f"data source '{self.spec}' yielded no samples")

    def guessed(self) -> str | None:
        """A warning naming the dynamic dims this synthetic data fed as 1 (trtexec refuses dynamic
        shapes without --shapes; figures on 1x1 images mean little), or the source's :attr:`note`,
        or None."""
        if not self.fed_as_one:
            return self.note
        return (
            f"random data fed dynamic dims as 1 ({', '.join(self.fed_as_one)}): give the shapes with "
            "--input NAME:SHAPE, or [model] inputs in a config"
        )

    def notes(self, preprocess: str | None = None) -> list[str]:
        """What to warn about this source: what it guessed (:meth:`guessed`), and ``preprocess`` (the
        option that declared an image preprocessing, when one did) given for data that is not an
        image folder, where it changes nothing."""
        notes = [note] if (note := self.guessed()) else []
        if preprocess and self.kind != "images":
            notes.append(
                f"{preprocess}: preprocessing applies to image folders, and the data ({self.spec}) is not "
                "one: not used"
            )
        return notes

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
    """The model's fixed batch size (dim 0 of its inputs), or None when the batch is dynamic: when
    any input's dim 0 is, an input whose dim 0 is fixed beside it is not batched on that axis (a
    recurrent state [layers, batch, hidden], as silero-vad's) and does not fix the batch."""
    if any(s.shape and not isinstance(s.shape[0], int) for s in inputs):
        return None
    static = {s.shape[0] for s in inputs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    return int(next(iter(static))) if static else None


RUN_ROWS = 8  # calibration runs the model on at most this many samples at a time (see split_runs)


def batched_on_dim0(inputs: Sequence[TensorSpec]) -> bool:
    """Whether every input of the model is batched on a dynamic dim 0: the feeds :func:`split_runs`
    cuts into runs."""
    return bool(inputs) and all(s.shape and not isinstance(s.shape[0], int) for s in inputs)


def split_runs(feeds: Iterable[Feed], inputs: Sequence[TensorSpec], rows: int = RUN_ROWS) -> Iterator[Feed]:
    """Each feed of more than ``rows`` samples as consecutive pieces of ``rows`` samples (the last
    may be shorter; views, not copies), where every input of the model is batched on a dynamic dim
    0 and the feed's arrays all have its number of rows; other feeds as they are.

    Calibration fetches every activation of a run at once: at ``--batch-size 64`` magika's runs
    were hundreds of MB each, and its calibration took 9.2 s against 1.6 s at 8 on the same 64
    samples; and a source of fewer than 4 batches leaves ``auto`` no held-out batch (it judged its
    candidates on the samples they came from). A source batched by a multiple of ``rows``
    calibrates exactly as one batched by ``rows``."""
    batched = batched_on_dim0(inputs)
    for feed in feeds:
        n = feed_rows(feed)
        if not batched or n <= rows or any(np.ndim(v) == 0 or np.shape(v)[0] != n for v in feed.values()):
            yield feed
            continue
        for start in range(0, n, rows):
            yield {k: v[start : start + rows] for k, v in feed.items()}


def _stack(buffer: list[Feed]) -> Feed:
    try:
        return {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
    except ValueError:
        shapes = sorted({str(list(np.asarray(b[k]).shape[1:])) for b in buffer for k in b})
        raise DataError(
            f"samples of different shapes cannot share a batch ({', '.join(shapes)}): "
            "give same-sized data (images: a preprocessing resize), or a batch size of 1"
        ) from None


def rebatch(
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


def fixed_batches(
    feeds: Iterable[Feed], inputs: Sequence[TensorSpec], fixed: Sequence[TensorSpec]
) -> Iterable[Feed]:
    """``feeds`` made for a model with ``inputs``, as a copy of it fixed at one batch (``fixed``: the
    copy's inputs) takes them: re-stacked at that batch and a short last batch dropped, as
    :func:`rebatch` drops it when the model read for is fixed itself (the data of 64 samples for
    a candidate fixed at 5 ended in a batch of 4 the candidate refused); ``feeds`` as they are
    where the copy's batch is not fixed or an input of the model is not batched on a dynamic dim 0."""
    batch = static_batch(fixed)
    if batch is None or not batched_on_dim0(inputs):
        return feeds
    return rebatch(feeds, batch, fixed)
