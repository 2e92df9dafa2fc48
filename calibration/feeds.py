"""The data-source vocabulary every source shares: a feed, a checked source, batching.

A feed is one batch ``{input_name: np.ndarray}``; a :class:`DataSource` yields checked feeds
and describes itself for cache keys. :mod:`calibration.sources` (files, scripts, random data)
and :mod:`calibration.images` (image folders) both build on these.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.errors import DataError
from calibration.modelinfo import TensorSpec, batch_names, refuse_non_tensor_inputs, shape_text
from calibration.ortvalues import integer_bounds, is_float_dtype, is_numpy_native

Feed = dict[str, np.ndarray]


def feed_rows(feed: Feed, inputs: Sequence[TensorSpec] = ()) -> int:
    """The samples in one feed: the rows of its first input along that input's batch axis
    (:func:`batch_axes` of the model's ``inputs``; dim 0 when they are not given or do not tell),
    1 for a scalar or no input. A time-first GRU's ``x[12, N, 8]`` holds N samples, not 12."""
    axes = _axes_or_dim0(inputs)
    for name, arr in feed.items():
        axis = axes.get(name, 0)
        if axis is not None and np.ndim(arr) > axis:
            return int(np.shape(arr)[axis])
    return 1


def batch_axes(inputs: Sequence[TensorSpec]) -> dict[str, int | None]:
    """Each input's batch axis, the one its samples are counted, cut and stacked along: the axis
    that carries the model's batch name (:func:`calibration.modelinfo.batch_names`, dim 0 as
    export declares it, or axis 1 of a GRU's state ``h0[1, B, 16]``), else a dynamic dim 0, else
    dim 0 of a model whose inputs are all fixed (its fixed batch). None for an input that holds
    no batch: a scalar, or a fixed shape beside a dynamic batch (``scale[8]`` beside ``x[N, 8]``),
    which every sample shares.

    A fixed dim 0 beside dynamic dims (captcha-rec's ``input1[1, 1, 64, image_width]``) is a fixed
    batch like an all-fixed shape, when no input has a dynamic batch. Beside one, it is not told
    (``h0[1, ?, 16]`` beside ``x[B, 10, 8]``, no name shared): cutting it on dim 0 split its layers,
    not its samples, and DataError names it."""
    names = batch_names(inputs)
    axes: dict[str, int | None] = {}
    unclear: list[TensorSpec] = []
    for spec in inputs:
        named = [axis for axis, dim in enumerate(spec.shape) if dim in names]
        if spec.kind is not None or (spec.rank_known and not spec.shape):
            axes[spec.name] = None
        elif not spec.rank_known:
            axes[spec.name] = 0
        elif named:
            axes[spec.name] = named[0]
        elif not isinstance(spec.shape[0], int):
            axes[spec.name] = 0
        elif all(isinstance(d, int) for d in spec.shape):
            axes[spec.name] = -1  # settled below: a fixed batch, or none
        else:
            axes[spec.name] = -1  # a fixed batch unless another input has a dynamic one (below)
            unclear.append(spec)
    by_name = {spec.name: spec for spec in inputs}
    dynamic = any(
        a is not None and a >= 0 and not (by_name[n].rank_known and isinstance(by_name[n].shape[a], int))
        for n, a in axes.items()
    )
    if unclear and dynamic:
        spec = unclear[0]
        raise DataError(
            f"input '{spec.name}' ({spec.describe()}): which of its axes holds the samples cannot be "
            "told (the model names no batch dim it shares with the other inputs), so the data cannot "
            "be counted or batched; name the batch dim alike on every input (export does), or feed "
            "whole batches from a load_data() script"
        )
    return {n: (None if dynamic else 0) if a == -1 else a for n, a in axes.items()}


def _axes_or_dim0(inputs: Sequence[TensorSpec]) -> dict[str, int | None]:
    """:func:`batch_axes`, or none (dim 0 everywhere) where they cannot be told."""
    try:
        return batch_axes(inputs)
    except DataError:
        return {}


def check_feed(feed: Feed, inputs: Sequence[TensorSpec], origin: str) -> Feed:
    """Check one feed against the model's inputs; return it with arrays made contiguous.

    Refuses missing or unknown names, wrong rank, static dims that differ, dtypes that do not
    convert safely or values their cast would change (:func:`_cast_exactly`), and NaN/Inf, each with a
    message naming the input and both shapes or dtypes.
    """
    if not isinstance(feed, dict):
        raise DataError(f"{origin}: expected a dict of input name -> array, got {type(feed).__name__}")
    by_name = {spec.name: spec for spec in inputs}
    _check_names(feed, inputs, origin)
    checked: Feed = {}
    for name, spec in by_name.items():
        arr = np.asarray(feed[name])
        _check_shape(arr, spec, origin)
        arr = _as_input_dtype(arr, spec, origin)
        if is_float_dtype(arr.dtype) and not np.all(np.isfinite(_as_float(arr))):
            raise DataError(f"{origin}: input '{name}' contains NaN or Inf")
        # not np.ascontiguousarray alone: it makes a scalar (silero-vad's sr, shape []) 1-D, [1]
        checked[name] = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    _check_named_dims(checked, inputs, origin)
    return checked


def _check_names(feed: Feed, inputs: Sequence[TensorSpec], origin: str) -> None:
    """Refuse a feed that names an array no input of the model has, or lacks one of its inputs."""
    names = [spec.name for spec in inputs]
    unknown = sorted(set(feed) - set(names))
    if unknown:
        raise DataError(
            f"{origin}: unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(names)}"
        )
    missing = [n for n in names if n not in feed]
    if missing:
        raise DataError(f"{origin}: missing input(s) {', '.join(missing)}")


def _as_input_dtype(arr: np.ndarray, spec: TensorSpec, origin: str) -> np.ndarray:
    """``arr`` in the dtype of input ``spec``: text decoded for a string input, a dtype that converts
    safely cast exactly (:func:`_cast_exactly`); any other refused, naming ``origin`` and the input."""
    name, want_dtype = spec.name, spec.np_dtype
    if want_dtype.kind == "O" and (not_text := _not_text(arr)):
        raise DataError(f"{origin}: input '{name}' takes text (tensor(string)): got {not_text}")
    if want_dtype.kind == "O" and arr.dtype.kind in "OS":
        arr = _decoded(arr, f"{origin}: input '{name}' takes text")
    if arr.dtype != want_dtype:
        both_integers = integer_bounds(arr.dtype) is not None and integer_bounds(want_dtype) is not None
        if not both_integers and (
            not np.can_cast(arr.dtype, want_dtype, casting="same_kind")
            or (arr.dtype.kind == "f" and want_dtype.kind in "iub")
        ):
            raise DataError(f"{origin}: input '{name}' expects dtype {want_dtype.name}, got {arr.dtype.name}")
        arr = _cast_exactly(arr, want_dtype, f"{origin}: input '{name}'")
    return arr


def _check_shape(arr: np.ndarray, spec: TensorSpec, origin: str, batch_axis: int | None = None) -> None:
    """Refuse ``arr`` for input ``spec`` at another rank or with another size on a dim the model fixes,
    naming both shapes; ``batch_axis``: a dim not compared (the samples of a data file, any number)."""
    if spec.rank_known and arr.ndim != len(spec.shape):  # else the model says nothing of its shape
        raise DataError(
            f"{origin}: input '{spec.name}' expects shape {spec.describe()}, got {list(arr.shape)} "
            f"(rank {arr.ndim})"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=spec.rank_known)):
        if axis != batch_axis and isinstance(want, int) and want > 0 and want != got:
            raise DataError(
                f"{origin}: input '{spec.name}' expects shape {spec.describe()}, got {list(arr.shape)}"
            )


def check_file_shapes(feed: Feed, inputs: Sequence[TensorSpec], origin: str) -> Feed:
    """``feed``, the arrays of one data file (``origin``), with those the model's inputs refuse for
    their rank or a fixed dim refused before :func:`rebatch` cuts them into samples: named as the file
    holds them (``[3, 8, 8]``), not as the batch made of its rows (``[8, 8, 8]``). The batch axis
    (:func:`batch_axes`) is not compared: a file holds any number of samples. Dtypes too, each array
    cast to its input's as :func:`check_feed` casts it, so a file of a dtype the input refuses is named
    (rebatch joined it with the next file's rows, and the batch was named). Names too: rebatch stacks
    the rows of several files by the first one's names, and a file without one of them died of a
    KeyError. And a file of 0 samples: rebatch passed it on ahead of the rows before it, and the
    folder was named with a batch. NaN/Inf are :func:`check_feed`'s, batch by batch."""
    _check_names(feed, inputs, origin)
    axes = _axes_or_dim0(inputs)
    checked = dict(feed)
    for spec in inputs:
        if spec.name in feed and spec.kind is None:
            arr = np.asarray(feed[spec.name])
            _check_shape(arr, spec, origin, axes.get(spec.name, 0))
            checked[spec.name] = _as_input_dtype(arr, spec, origin)
    if _no_samples({k: np.asarray(v) for k, v in checked.items()}, inputs):
        raise DataError(f"{origin} holds 0 samples")
    return checked


def _cast_exactly(arr: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``arr`` cast to an input's ``dtype``, refused (DataError, naming the first value) where the cast
    would change a value beyond rounding: an integer the input's integer type cannot hold, which a cast
    wraps (int64 4294967297 became int32 1, uint16 300 uint8 44), or a finite value that overflows a
    float type (float64 70000 is float16 inf). Polygraphy refuses any dtype but the input's."""
    bounds = integer_bounds(dtype)
    if bounds is not None and integer_bounds(arr.dtype) is not None and not np.can_cast(arr.dtype, dtype):
        changed = (arr < bounds[0]) | (arr > bounds[1])
        if np.any(changed):
            raise DataError(
                f"{where} expects dtype {dtype.name}, got {arr.dtype.name} holding {_first(arr, changed)}, "
                f"which {dtype.name} cannot hold ({bounds[0]}..{bounds[1]}): not wrapped into it"
            )
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, by its value
        cast = arr.astype(dtype)
    if is_float_dtype(dtype) and (arr.dtype.kind in "iu" or is_float_dtype(arr.dtype)):
        changed = np.isfinite(_as_float(arr)) & ~np.isfinite(_as_float(cast))
        if np.any(changed):
            raise DataError(
                f"{where} expects dtype {dtype.name}, got {arr.dtype.name} holding {_first(arr, changed)}, "
                f"which overflows {dtype.name}"
            )
    return cast


def _first(arr: np.ndarray, where: np.ndarray) -> Any:
    """The first value of ``arr`` (in C order) where the mask ``where`` holds, as Python prints it."""
    return arr.ravel()[int(np.argmax(where.ravel()))].item()


def _not_text(arr: np.ndarray) -> str | None:
    """What ``arr`` holds where a string input takes text (str or bytes, in an object or fixed-width
    array), else None. ONNX Runtime reads any object as its str(): numbers given for text (token
    ids, a wrong file) would run as "17" and "1.0", words no vocabulary knows."""
    if arr.dtype.kind in "SU":
        return None
    if arr.dtype.kind != "O":
        return arr.dtype.name
    for item in arr.ravel().tolist():
        if not isinstance(item, (str, bytes)):
            return f"an object array holding {type(item).__name__}"
    return None


def _decoded(arr: np.ndarray, where: str) -> np.ndarray:
    """Text holding bytes as an object array of str, the bytes read as UTF-8 (``arr`` itself when it
    holds none). ONNX Runtime's Python API feeds str only: a bytes item ran as its repr ("b'a'"),
    and a fixed-width bytes array as text read past its items."""
    items = arr.ravel().tolist()
    if not any(isinstance(v, bytes) for v in items):
        return arr
    text = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        try:
            text[i] = item.decode() if isinstance(item, bytes) else item
        except UnicodeDecodeError:
            raise DataError(
                f"{where}: {item[:40]!r} is not UTF-8, and ONNX Runtime's Python API feeds text as str only"
            ) from None
    return text.reshape(arr.shape)


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
    # the details cannot vouch for the data (a loader script's feeds depend on what it reads, which
    # its own sha256 does not cover): describe() adds the sha256 of the feeds themselves
    hash_feeds: bool = False
    _feeds_sha256: str | None = field(default=None, init=False, repr=False, compare=False)
    # the first feed, as the first read of the source yielded it (a copy): see first_feed()
    _first: Feed | None = field(default=None, init=False, repr=False, compare=False)
    # a folder where a source whose feeds are hashed (a loader script) keeps the feeds of its first
    # read to the end, which the reads after it replay instead of running the loader again: set by
    # who opens it for several readers (a run's stages); the folder is theirs to remove
    keep_in: Path | None = field(default=None, init=False, repr=False, compare=False)
    # the kept feeds: npz files, or their bytes (:meth:`replay`, a read of another process)
    _kept: list[Path] | list[bytes] | None = field(default=None, init=False, repr=False, compare=False)
    # replaying the first of the kept feeds only (:meth:`replay`): what a reader of
    # :meth:`first_feed` alone was sent; a read of them all is refused, never cut short
    _first_only: bool = field(default=False, init=False, repr=False, compare=False)

    def __iter__(self) -> Iterator[Feed]:
        if self._kept is not None:
            if self._first_only:
                raise RuntimeError(f"only the first feed of {self.spec} was replayed here, not all of them")
            yield from self._replay(self._kept)
            return
        # when the data is read, not when the source is opened: an fp16 build, which needs no
        # data, skips its range analysis on seeded random data it cannot make (a sequence input)
        refuse_non_tensor_inputs(self.inputs)
        digest = hashlib.sha256() if self.hash_feeds else None
        keeping = Path(tempfile.mkdtemp(prefix="feeds.", dir=self.keep_in)) if self._keeps() else None
        kept: list[Path] | None = []
        count = 0
        try:
            for index, feed in enumerate(self._make()):
                if self.limit is not None and count >= self.limit:
                    break
                checked = check_feed(feed, self.inputs, f"{self.spec} (batch {index})")
                if _no_samples(checked, self.inputs):  # a gate over no values would pass
                    raise DataError(f"data source '{self.spec}' (batch {index}) holds 0 samples")
                if digest is not None:
                    _hash_feed(digest, checked)
                if index == 0 and self._first is None:
                    self._first = {k: v.copy() for k, v in checked.items()}
                if keeping is not None and kept is not None:
                    kept = _keep(checked, keeping / f"{index:06d}.npz", kept)
                yield checked
                count += 1
            if count == 0:
                raise DataError(f"data source '{self.spec}' yielded no samples")
            if digest is not None:  # read to its end: describe() need not read it again
                self._feeds_sha256 = digest.hexdigest()
            if keeping is not None and kept is not None:  # read to its end: the next reads replay it
                self._kept, keeping = kept, None
        finally:
            if keeping is not None:  # a read stopped before the end (or a feed _savable refused)
                shutil.rmtree(keeping, ignore_errors=True)

    def kept_files(
        self, as_paths: bool = False, first_only: bool = False
    ) -> tuple[list[bytes] | list[Path], str] | None:
        """The feeds a read to the end kept and their sha256: what :meth:`replay` takes in another
        process; None when nothing was kept. ``as_paths``: the npz files themselves, for a process
        on this machine, which reads them while their folder lasts (in :attr:`keep_in`, which its
        opener removes when done); else their bytes, for one that may run on another machine (a
        copy of the data per task: 100 MB of feeds sent to 7 local tasks of a 4-cell matrix took
        ~300 MB of TMPDIR and ~200 MB more memory at its peak than the paths). ``first_only``: the
        first feed's file alone, for a reader of :meth:`first_feed` only (a matrix cell's build),
        with the sha256 of them all: the data the reader is keyed by is the same."""
        if self._kept is None or self._feeds_sha256 is None:
            return None
        kept = self._kept[:1] if first_only else self._kept
        paths = [p for p in kept if isinstance(p, Path)]
        if as_paths and len(paths) == len(kept):
            return paths, self._feeds_sha256
        files = [p if isinstance(p, bytes) else p.read_bytes() for p in kept]
        if not first_only:
            self._kept = files  # read once: the next callers (a matrix's every cell) share these bytes
        return files, self._feeds_sha256

    def replay(self, files: list[bytes] | list[Path], feeds_sha256: str, first_only: bool = False) -> None:
        """Read the feeds of another process's read of this source (:meth:`kept_files`) instead
        of the source itself: its loader script is not run again, and the digest is of them.
        ``first_only``: ``files`` is the first feed's alone, for :meth:`first_feed`; a read of
        the source is then refused (it would end after that feed)."""
        self._kept, self._feeds_sha256, self._first_only = files[:], feeds_sha256, first_only
        first = next(self._replay(self._kept))
        self._first = {k: v.copy() for k, v in first.items()}

    def forget_kept(self) -> None:
        """Stop keeping and replaying feeds (their folder is being removed): the next read reads
        the source itself again. What the reads learnt (the first feed, the feeds' digest) stays."""
        self.keep_in = None
        self._kept, self._first_only = None, False

    def _keeps(self) -> bool:
        return self.hash_feeds and self.keep_in is not None

    def _replay(self, kept: list[Path] | list[bytes]) -> Iterator[Feed]:
        """The feeds :meth:`__iter__` kept, as it yielded them (checked, in its order)."""
        dtypes = {spec.name: spec.np_dtype for spec in self.inputs}  # what check_feed made them
        for path in kept:
            with np.load(io.BytesIO(path) if isinstance(path, bytes) else path, allow_pickle=False) as data:
                yield {
                    name: _restored(data[f"arr_{i}"], dtype, data.get(f"len_{i}"))
                    for i, (name, dtype) in enumerate(dtypes.items())
                }

    def first_feed(self) -> Feed:
        """The source's first feed: kept from the read that yielded it (a build runs its artifact on
        the batch its precision step read, without opening the data again), else read now."""
        if self._first is None and self._keeps():  # one read to the end, kept for the next ones
            for _ in self:
                pass
        elif self._first is None:
            next(iter(self), None)
        assert self._first is not None  # an empty source raised DataError
        return self._first

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

    def identity(self) -> dict[str, Any]:
        """:meth:`describe` without the spec, for cache keys: what the data is (files by name in
        their folder and sha256, a script by its hash, random data by its seed), not how its path
        was written (``in/calib``, ``/abs/in/calib`` and ``./in/../in/calib`` recalibrated), nor
        the samples a fixed batch left out (the data used is the same). Where the feeds are hashed
        (a loader script), their sha256 says which samples were read: not the cap on them, which
        made ``--samples 100`` of a loader that yields 20 a new key for the same 20."""
        left = ("spec", "samples_dropped", *(("limit", "samples") if self.hash_feeds else ()))
        return {k: v for k, v in self.describe().items() if k not in left}

    def describe(self) -> dict[str, Any]:
        """What the data is, for cache keys and manifests: kind, spec, files or generator and seed."""
        described = {
            "kind": self.kind,
            "spec": self.spec,
            "synthetic": self.synthetic,
            "limit": self.limit,
            **self.details,
        }
        if self.hash_feeds:
            if self._feeds_sha256 is None:
                for _ in self:  # reads the feeds once, which sets their digest
                    pass
            described["feeds_sha256"] = self._feeds_sha256
        return described


def _keep(feed: Feed, path: Path, kept: list[Path]) -> list[Path] | None:
    """``kept`` with ``feed`` saved to ``path`` (its arrays in the order of the model's inputs, as
    :func:`_savable` makes them: ``arr_I``, and ``len_I`` beside text that needs its lengths), or
    None for a feed that cannot be kept exactly (an object array of other than text, say)."""
    arrays: dict[str, Any] = {}  # Any: savez takes allow_pickle by keyword too
    for index, arr in enumerate(feed.values()):
        saved = _savable(arr)
        if saved is None:
            return None
        arrays[f"arr_{index}"], lengths = saved
        if lengths is not None:
            arrays[f"len_{index}"] = lengths
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return [*kept, path]


def _savable(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``arr`` in a form numpy saves without pickles, with the lengths of its text where that form
    drops some of it, from which :func:`_restored` makes ``arr`` again; or None. ml_dtypes'
    bfloat16, float8 and int4, which numpy reads back as raw bytes, are kept as unsigned integers
    of their size; text (an object array of str or of bytes, as a string input takes it) as numpy's
    fixed-width str or bytes with, where an item ends in NUL, the lengths (:func:`fixed_width_text`)."""
    if not is_numpy_native(arr.dtype):
        return arr.view(np.dtype(f"u{arr.dtype.itemsize}")), None
    if arr.dtype.kind != "O":
        return (arr, None) if arr.dtype.kind in "biufcSU" else None
    return fixed_width_text(arr)


def fixed_width_text(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """An object array of str (or of bytes), as a string input's feed holds it, as numpy's
    fixed-width str (bytes), which np.load reads without pickles, and, where an item ends in NUL
    (which those drop), each item's length (int64, of ``arr``'s shape; else None), from which
    :func:`_restored` makes ``arr`` again. None for an array of other objects."""
    items = arr.ravel().tolist()
    for kind, fixed in ((str, "U"), (bytes, "S")):
        if all(isinstance(v, kind) for v in items):
            text = arr.astype(fixed)
            if text.ravel().tolist() == items:
                return text, None
            lengths = np.array([len(v) for v in items], np.int64).reshape(arr.shape)
            return (text, lengths) if _restored(text, arr.dtype, lengths).ravel().tolist() == items else None
    return None


def _restored(arr: np.ndarray, dtype: np.dtype, lengths: np.ndarray | None = None) -> np.ndarray:
    """A kept array (:func:`_savable`) as the feed held it, of the input's ``dtype``; ``lengths``:
    the items' lengths, when kept, to which their trailing NULs are put back."""
    if arr.dtype == dtype:
        return arr
    if dtype.kind != "O":
        return arr.view(dtype)
    restored = arr.astype(object)
    if lengths is not None:
        nul = "\0" if arr.dtype.kind == "U" else b"\0"
        flat = restored.reshape(-1)
        for i, (item, length) in enumerate(zip(flat.tolist(), lengths.ravel().tolist(), strict=True)):
            flat[i] = item + nul * (length - len(item))
    return restored


def feed_sha256(feed: Feed) -> str:
    """The sha256 of one feed (its inputs' names, dtypes, shapes and values), as the feeds of a
    source whose feeds are hashed are (:attr:`DataSource.hash_feeds`)."""
    digest = hashlib.sha256()
    _hash_feed(digest, feed)
    return digest.hexdigest()


def _hash_feed(digest: Any, feed: Feed) -> None:
    """Add one feed to ``digest``: each input's name, dtype, shape and values."""
    for name in sorted(feed):
        arr = feed[name]
        values = repr(arr.tolist()).encode() if arr.dtype.kind == "O" else arr.tobytes()
        digest.update(f"{name}|{arr.dtype.str}|{arr.shape}|{len(values)}|".encode())
        digest.update(values)


def static_batch(inputs: Sequence[TensorSpec]) -> int | None:
    """The model's fixed batch size (its inputs' batch axes, :func:`batch_axes`), or None when the
    batch is dynamic: an input fixed beside a dynamic batch (a recurrent state [layers, batch,
    hidden], as silero-vad's, on its batch axis 1) does not fix it."""
    axes = _axes_or_dim0(inputs)
    dims = [
        s.shape[axis]
        for s in inputs
        if s.shape and (axis := axes.get(s.name, 0)) is not None and axis < len(s.shape)
    ]
    if any(not isinstance(d, int) for d in dims):
        return None
    static = {d for d in dims if isinstance(d, int) and d > 0}
    return int(next(iter(static))) if static else None


RUN_ROWS = 8  # calibration runs the model on at most this many samples at a time (see split_runs)


def dynamic_batch(inputs: Sequence[TensorSpec]) -> bool:
    """Whether the model's batch is dynamic and every input's batch axis is known (or it has
    none): the feeds :func:`split_runs` cuts into runs."""
    try:
        axes = batch_axes(inputs)
    except DataError:
        return False
    return bool(inputs) and any(a is not None for a in axes.values()) and static_batch(inputs) is None


def _rows(arr: np.ndarray, axis: int | None, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of ``arr`` along its batch ``axis`` (a view); all of it with no axis."""
    if axis is None:
        return arr
    return arr[(slice(None),) * axis + (slice(start, stop),)]


def _length(arr: np.ndarray, axis: int | None) -> int | None:
    """``arr``'s samples along ``axis``: None with no axis, 0 when it has too few dims."""
    if axis is None:
        return None
    return int(np.shape(arr)[axis]) if np.ndim(arr) > axis else 0


def split_runs(feeds: Iterable[Feed], inputs: Sequence[TensorSpec], rows: int = RUN_ROWS) -> Iterator[Feed]:
    """Each feed of more than ``rows`` samples as consecutive pieces of ``rows`` samples (the last
    may be shorter; views, not copies), where the model's batch is dynamic (:func:`dynamic_batch`)
    and the feed's arrays all have its number of samples along their batch axes; other feeds as
    they are.

    Calibration fetches every activation of a run at once: at ``--batch-size 64`` magika's runs
    were hundreds of MB each, and its calibration took 9.2 s against 1.6 s at 8 on the same 64
    samples; and a source of fewer than 4 batches leaves ``auto`` no held-out batch (it judged its
    candidates on the samples they came from). A source batched by a multiple of ``rows``
    calibrates exactly as one batched by ``rows``."""
    batched = dynamic_batch(inputs)
    axes = _axes_or_dim0(inputs)
    for feed in feeds:
        lengths = {n for k, v in feed.items() if (n := _length(v, axes.get(k, 0))) is not None}
        if not batched or len(lengths) != 1 or (total := lengths.pop()) <= rows:
            yield feed
            continue
        for start in range(0, total, rows):
            yield {k: _rows(v, axes.get(k, 0), start, start + rows) for k, v in feed.items()}


def _stack(buffer: list[Feed], axes: dict[str, int | None]) -> Feed:
    """The samples of ``buffer`` as one feed, each input's joined along its batch axis; an input
    with none (a scalar every sample shares) as the samples give it, which must be one value."""
    stacked: Feed = {}
    for k in buffer[0]:
        axis = axes.get(k, 0)
        if axis is None:
            if any(not np.array_equal(b[k], buffer[0][k]) for b in buffer[1:]):
                raise DataError(
                    f"input '{k}' holds no batch, and the samples give it different values: they "
                    "cannot share a batch; give a batch size of 1"
                )
            stacked[k] = buffer[0][k]
            continue
        try:
            stacked[k] = np.concatenate([b[k] for b in buffer], axis=axis)
        except ValueError:
            shapes = sorted({tuple(int(d) for d in np.delete(np.shape(b[k]), axis)) for b in buffer})
            raise DataError(
                f"samples of different shapes cannot share a batch ({', '.join(map(shape_text, shapes))}): "
                "give same-sized data (images: a preprocessing resize), or a batch size of 1"
            ) from None
    return stacked


def sample_limit(samples: int | None, inputs: Sequence[TensorSpec]) -> int | None:
    """The samples a data file or folder is read for at most, and what its description records:
    ``samples``, or where the model's batch is fixed, the whole batches they make, one at least
    (ONNX's test_mish, X[10000], on the default 512 samples: 10000), as random data gives a whole
    batch; a rest short of a batch cannot feed the model and is not read. The data must still hold
    them."""
    static = static_batch(inputs)
    return max(samples - samples % static, static) if samples is not None and static else samples


def rest_not_read(
    spec: str, inputs: Sequence[TensorSpec], offered: int | None, read: int | None
) -> str | None:
    """The warning of a fixed batch that leaves out the rest of the ``offered`` samples (those the
    data holds, or the fewer asked for) short of a whole batch, ``read`` being read
    (:func:`sample_limit`); None when none is left out or the counts are not known."""
    static = static_batch(inputs)
    if not static or offered is None or read is None or read >= offered:
        return None
    return (
        f"{spec}: the model takes a fixed batch of {static}, so {read} of the {offered} samples are used "
        f"and {offered - read} left out (they do not fill a batch)"
    )


def left_out(inputs: Sequence[TensorSpec], offered: int | None, read: int | None) -> dict[str, int]:
    """What a data source's description records beside its ``samples`` of the samples a fixed batch
    left out (:func:`rest_not_read`): ``samples_dropped``, when any were (not in its cache key,
    :meth:`DataSource.identity`)."""
    if rest_not_read("", inputs, offered, read) is None or offered is None or read is None:
        return {}
    return {"samples_dropped": offered - read}


def join_notes(*notes: str | None) -> str | None:
    """A source's notes (:attr:`DataSource.note`) as one, in ``; ``; None when there is none."""
    said = [n for n in notes if n]
    return "; ".join(said) if said else None


def rebatch(
    samples: Iterable[Feed], batch_size: int, inputs: Sequence[TensorSpec], max_samples: int | None = None
) -> Iterator[Feed]:
    """Split stacked arrays into single samples and re-stack them ``batch_size`` at a time, each
    input along its batch axis (:func:`batch_axes`: a GRU's ``h0[1, B, 16]`` along axis 1).

    A model with a static batch dim gets that batch size whatever was asked; at most
    ``max_samples`` samples are yielded (the last batch may be partial where the batch is dynamic),
    but one whole fixed batch at least (:func:`sample_limit`).
    Raises DataError, when read, for a model with an input whose batch axis cannot be told: its
    samples can be neither counted nor cut.
    """
    axes = batch_axes(inputs)
    static = static_batch(inputs)
    if static:
        batch_size = static
    max_samples = sample_limit(max_samples, inputs)
    buffer: list[Feed] = []
    taken = 0
    yielded = 0
    for stacked in samples:
        lengths = {n for k, v in stacked.items() if (n := _length(v, axes.get(k, 0))) is not None}
        if len(lengths) != 1 or 0 in lengths:
            yield stacked  # let check_feed report the mismatch
            continue
        for i in range(lengths.pop()):
            if max_samples is not None and taken >= max_samples:
                break
            buffer.append({k: _rows(np.asarray(v), axes.get(k, 0), i, i + 1) for k, v in stacked.items()})
            taken += 1
            if len(buffer) == batch_size:
                yield _stack(buffer, axes)
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
        yield _stack(buffer, axes)


def fixed_batches(
    feeds: Iterable[Feed], inputs: Sequence[TensorSpec], fixed: Sequence[TensorSpec]
) -> Iterable[Feed]:
    """``feeds`` made for a model with ``inputs``, as a copy of it fixed at one batch (``fixed``: the
    copy's inputs) takes them: re-stacked at that batch and a short last batch dropped, as
    :func:`rebatch` drops it when the model read for is fixed itself (the data of 64 samples for
    a candidate fixed at 5 ended in a batch of 4 the candidate refused); ``feeds`` as they are
    where the copy's batch is not fixed or the model's batch is not dynamic (:func:`dynamic_batch`)."""
    batch = static_batch(fixed)
    if batch is None or not dynamic_batch(inputs):
        return feeds
    return rebatch(feeds, batch, fixed)
