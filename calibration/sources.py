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
import importlib.machinery
import importlib.util
import os
import sys
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calibration.atomic import sha256_file
from calibration.errors import DataError, LoaderFailed, raised
from calibration.feeds import (
    DataSource,
    Feed,
    _axes_or_dim0,
    _rows,
    batch_axes,
    check_file_shapes,
    feed_rows,
    join_notes,
    left_out,
    rebatch,
    rest_not_read,
    sample_limit,
    static_batch,
)
from calibration.images import image_folder_source
from calibration.modelinfo import TensorSpec, is_named
from calibration.modelinfo import batch_names as named_batches
from calibration.ortvalues import is_float_dtype

ARRAY_SUFFIXES = (".npz", ".npy")  # compared lower-cased, as IMAGE_SUFFIXES are
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")


def _random_source(
    spec: str,
    inputs: Sequence[TensorSpec],
    seed: int,
    batch_size: int,
    samples: int,
    shapes: dict[str, tuple[int, ...]] | None,
    batch_from_shapes: bool = True,
) -> DataSource:
    batch_size = static_batch(inputs) or batch_size
    dynamic = static_batch(inputs) is None
    # an input shape given for a dynamic batch: its dim 0 is the batch, as trtexec's --shapes,
    # unless the batch size was given too (not batch_from_shapes), which replaces it there as
    # profile's --batch-sizes does
    over = shapes or {}
    given = {
        s.name: over[s.name][0]
        for s in inputs
        if s.shape and not isinstance(s.shape[0], int) and over.get(s.name)
    }
    if dynamic and given and not batch_from_shapes:
        over = {**over, **{name: (batch_size, *over[name][1:]) for name in given}}
        shapes, given = over, dict.fromkeys(given, batch_size)
    if dynamic and given:
        if len(set(given.values())) > 1:
            raise DataError(
                "--input: dim 0 is the batch and differs between inputs ("
                + ", ".join(f"{n} {d}" for n, d in given.items())
                + ")"
            )
        batch_size = next(iter(given.values()))
    named = named_dims(inputs, over)
    # the name of a dynamic batch dim (``batch`` of input[batch, T]) is the batch wherever another
    # input names it too (silero-vad's state[2, batch, 128]); a shape given for that input fixes it
    batch_names = named_batches(inputs) if dynamic else set()
    fixed = [named[n] for n in batch_names if n in named]
    if fixed and not given and batch_from_shapes:
        batch_size = fixed[0]
    named = {**named, **dict.fromkeys(batch_names, batch_size)}
    bounded: dict[str, tuple[int, int]] = {}  # Gather indices, within the input's dtype too
    for spec_ in inputs:
        if spec_.index_bound is not None and spec_.kind is None and spec_.np_dtype.kind in "iu":
            top = integer_range(spec_.np_dtype)[1] if spec_.np_dtype.itemsize <= 2 else spec_.index_bound
            bounded[spec_.name] = (0, min(spec_.index_bound, top))

    def make() -> Iterator[Feed]:
        rng = np.random.default_rng(seed)
        left = samples
        while left > 0:
            size = min(batch_size, left) if dynamic else batch_size
            left -= size
            feed: Feed = {}
            here = {**named, **dict.fromkeys(batch_names, size)}  # the last batch may be short
            for s in inputs:
                shape = s.concrete_shape(size, shapes, here)
                if s.name in given:  # the last batch may be short
                    shape = (size, *shape[1:])
                dt = s.np_dtype
                if is_float_dtype(dt):
                    feed[s.name] = rng.standard_normal(shape).astype(dt)
                elif dt.kind == "b":
                    feed[s.name] = rng.integers(0, 2, shape).astype(dt)
                elif dt.kind == "O":  # a string tensor: numbers as text ("0".."9"), numpy's str_
                    feed[s.name] = rng.integers(0, 10, shape).astype(np.str_)
                elif s.name in bounded:  # Gather indices: within the table they index
                    feed[s.name] = np.asarray(rng.integers(*bounded[s.name], shape)).astype(dt)
                elif not shape:  # an integer scalar is a size, step or count: never 0 (ONNX Runtime
                    # divides by some, STFT's frame_step for one, and dies of SIGFPE on zero)
                    feed[s.name] = np.asarray(rng.integers(1, 10)).astype(dt)
                else:
                    low, high = integer_range(dt)
                    feed[s.name] = rng.integers(low, high, shape).astype(dt)
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
            "samples": samples if dynamic else -(-samples // batch_size) * batch_size,  # whole batches
            "shapes": {s.name: list(s.concrete_shape(batch_size, shapes, named)) for s in inputs},
            # the integers drawn for Gather indices (high exclusive); the others: integer_range
            **({"integer_ranges": {n: list(r) for n, r in bounded.items()}} if bounded else {}),
        },
        synthetic=True,
        fed_as_one=tuple(
            f"{s.name} {'x'.join(map(str, s.concrete_shape(batch_size, shapes, named)))}"
            for s in inputs
            if s.name not in over and any(not isinstance(d, int) and d not in named for d in s.shape[1:])
        ),
    )


def named_dims(inputs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """The lengths the given shapes (``--input``) fix for the dims the model names (``T`` of
    ``a[N,T,8]`` given as 2x5x8): the other inputs that name the same dim take that length, as
    the model says they must, instead of 1. Not dim 0, which the batch size decides."""
    named: dict[str, int] = {}
    for s in inputs:
        for axis, dim in enumerate(s.shape):
            if axis > 0 and is_named(dim) and s.name in shapes and axis < len(shapes[s.name]):
                named.setdefault(dim, int(shapes[s.name][axis]))
    return named


def integer_range(dtype: np.dtype) -> tuple[int, int]:
    """The values random data draws for an integer input (high exclusive). 8- and 16-bit inputs
    are data (pixels, PCM samples): their whole range, or a uint8 image calibrates on 0-9, 4 % of
    it, and the default compare of that broken int8 model passes on the same narrow data. Wider
    ones are ids, indices and counts, which a small range keeps valid: 0-9. An input used as the
    indices of a Gather (:attr:`TensorSpec.index_bound`) takes 0 to the table's length instead."""
    if dtype.itemsize <= 2:
        try:
            info = np.iinfo(dtype)
        except ValueError:  # int4/uint4 (ml_dtypes): the ids' range is in theirs
            return 0, 8
        return int(info.min), int(info.max) + 1
    return 0, 10


def _load_array_file(path: Path, inputs: Sequence[TensorSpec]) -> Feed:
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):  # a zip (.npz) or an array
        # (numpy takes anything else for a pickle and says "allow_pickle=False", not the problem)
        raise DataError(f"{path} is not a NumPy file: neither a .npz archive nor a .npy array")
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as data:
                names = [s.name for s in inputs]
                if all(n in data.files for n in names):  # extra arrays (labels, ids) are ignored
                    return {n: data[n] for n in names}
                return {k: data[k] for k in data.files}
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "Object arrays cannot be loaded" not in str(exc):
            raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
        # text as a string input's feed holds it: numpy saved it as a pickle, which can run code
        raise DataError(
            f"cannot read {path}: it holds an object array, which NumPy saves as a pickle and edgedeploy "
            "does not load (a pickle can run code); save text as NumPy strings (arr.astype(str)), or "
            "yield it from a load_data() script"
        ) from None
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
    batch_axes(inputs)  # refuses, before any work, a model whose samples cannot be told apart

    def make() -> Iterator[Feed]:
        feeds = (check_file_shapes(_load_array_file(p, inputs), inputs, str(p)) for p in files)
        return rebatch(feeds, batch_size, inputs, samples)

    read, offered = _samples_read(files, inputs, samples)  # what is read: a fixed batch whole
    details = {
        "files": [{"name": p.name, "sha256": sha256_file(p)} for p in files],
        "batch_size": static_batch(inputs) or batch_size,
        "samples": read,
        **left_out(inputs, offered, read),
    }
    note = join_notes(rest_not_read(spec, inputs, offered, read), integers_for_floats(files[0], inputs))
    return DataSource("arrays", spec, inputs, make, details, note=note)


def _samples_read(
    files: Sequence[Path], inputs: Sequence[TensorSpec], samples: int | None
) -> tuple[int | None, int | None]:
    """The samples :func:`rebatch` reads from ``files`` capped at ``samples``: the cap (a fixed batch's
    whole batches, :func:`sample_limit`), or what the files hold when that is fewer (20 of the 50 asked
    for), counted from their arrays' headers without reading the data; the cap where a file's count
    cannot be told so (its arrays disagree, or it is not read as these are: the read refuses it).
    Second: the samples offered, ``samples`` or what the files hold when fewer, of which a fixed
    batch reads whole batches only (None where the count cannot be told)."""
    limit = sample_limit(samples, inputs)
    axes = batch_axes(inputs)
    held = 0
    for path in files:
        shapes = _array_shapes(path)
        if shapes is None:
            return limit, None
        if not all(s.name in shapes for s in inputs):  # a .npy, or keys that name no input
            shapes = {inputs[0].name: next(iter(shapes.values()))} if len(shapes) == 1 else {}
        lengths = {
            shape[axis]
            for s in inputs
            if (shape := shapes.get(s.name)) is not None
            and (axis := axes.get(s.name, 0)) is not None
            and len(shape) > axis
        }
        if len(lengths) != 1:
            return limit, None
        held += lengths.pop()
    offered = held if samples is None else min(samples, held)
    static = static_batch(inputs)
    if static:
        held -= held % static  # a short rest cannot feed the model and is not read
    return (held if limit is None else min(limit, held)), offered


def _array_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """The shapes of the arrays of a .npz (by key) or .npy file, read from their headers only; None
    where they cannot be read so."""
    try:
        if path.suffix.lower() != ".npz":
            with open(path, "rb") as fh:
                return {"": _npy_shape(fh)}
        with zipfile.ZipFile(path) as archive:
            shapes = {}
            for member in archive.namelist():
                if member.endswith(".npy"):
                    with archive.open(member) as fh:
                        shapes[member.removesuffix(".npy")] = _npy_shape(fh)
            return shapes
    except Exception:  # not a NumPy file, or one numpy cannot read: the read says why
        return None


def _npy_shape(fh: Any) -> tuple[int, ...]:
    """The shape in the header of the .npy array ``fh`` is at the start of."""
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, _ = read(fh)
    return tuple(int(d) for d in shape)


def integers_for_floats(path: Path, inputs: Sequence[TensorSpec]) -> str | None:
    """A warning when the first array file gives integers (uint8 images, say) for a float input.

    They are fed as floats with the values they have: a model that expects normalized inputs
    then calibrates and compares on values 255 times too large, with nothing refused. Polygraphy
    refuses a dtype other than the input's; a cast of whole numbers loses nothing, and models fed
    0..255 as float exist, so the data is taken and the user told."""
    feed = _load_array_file(path, inputs)
    found = []
    for spec in inputs:
        arr = feed.get(spec.name)
        if arr is not None and arr.dtype.kind in "iub" and spec.np_dtype.kind == "f" and arr.size:
            found.append(
                f"input '{spec.name}' is {spec.np_dtype.name} and the data gives {arr.dtype.name} "
                f"(values {arr.min()}..{arr.max()})"
            )
    if not found:
        return None
    return (
        f"{path.name}: {'; '.join(found)}: fed with these values, not scaled; if the model expects "
        "normalized inputs, normalize the arrays first (or use an image folder with a "
        "preprocessing)"
    )


def python_file_spec(path: Path, module_name: str) -> importlib.machinery.ModuleSpec | None:
    """The import spec of the Python file ``path`` as ``module_name``, whatever the case of its .py
    (a data loader script here, a model source in stages/export.py): its source loader named, as
    ``spec_from_file_location`` picks a loader by the suffix as written and finds none for
    LOADER.PY."""
    loader = importlib.machinery.SourceFileLoader(module_name, str(path))
    return importlib.util.spec_from_file_location(module_name, path, loader=loader)


def load_script_function(path: Path, function: str = "load_data") -> Callable[..., Any]:
    """Import a user's data loader script and return its ``load_data`` (or another) function."""
    module_name = f"_edgedeploy_user_loader_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = python_file_spec(path, module_name)
    if spec is None or spec.loader is None:
        raise DataError(f"cannot import data loader script {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # a loader's sys.exit() must not end the run as a success
        raise LoaderFailed(f"data loader script {path} failed to import: {raised(exc)}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise LoaderFailed(f"data loader script {path} defines no {function}() function")
    return fn  # type: ignore[no-any-return]


def _script_source(
    spec: str, path: Path, inputs: Sequence[TensorSpec], samples: int | None, function: str
) -> DataSource:
    fn = load_script_function(path, function)
    limit = sample_limit(samples, inputs)

    def make() -> Iterator[Feed]:
        batch = 0  # the one the script is making: named as check_feed names a batch (0 the first)
        try:
            for feed in _first_samples(fn(), inputs, limit):
                yield feed
                batch += 1
        except DataError:
            raise
        except (Exception, SystemExit) as exc:
            said = f"data loader script {path} (batch {batch}): {function}() {raised(exc)}"
            raise LoaderFailed(said) from None

    return DataSource(
        "script",
        spec,
        inputs,
        make,
        {"script": path.name, "sha256": sha256_file(path), "function": function, "samples": limit},
        limit=samples,  # feeds: each holds one sample at least
        hash_feeds=True,  # the script's hash leaves out the files it reads
    )


def _first_samples(feeds: Iterable[Any], inputs: Sequence[TensorSpec], limit: int | None) -> Iterator[Any]:
    """The first ``limit`` samples of a loader script's ``feeds`` (:func:`sample_limit`: whole
    batches where the model's batch is fixed), the feed that passes it cut along the batch axes
    as an .npz file is, and the script not run past it; all of them without a limit. A feed that
    is not a dict is passed on for check_feed to refuse."""
    taken = 0
    axes = _axes_or_dim0(inputs)
    for feed in feeds:
        if limit is not None and isinstance(feed, dict):
            keep = limit - taken
            if feed_rows(feed, inputs) > keep:
                feed = {
                    k: _rows(v, axes.get(k, 0), 0, keep) if isinstance(v, np.ndarray) else v
                    for k, v in feed.items()
                }
            taken += feed_rows(feed, inputs)
        yield feed
        if limit is not None and taken >= limit:
            return


def _parse_random(spec: str, default_seed: int) -> int | None:
    if spec == "random":
        seed = default_seed
    elif spec.startswith("random:"):
        value = spec.split(":", 1)[1]
        if value.startswith("seed="):
            value = value[5:]
        try:
            seed = int(value)
        except ValueError:
            raise DataError(f"bad data spec '{spec}': expected random or random:SEED") from None
    else:
        return None
    if seed < 0:  # numpy's generator takes no negative seed, and failed at the first batch
        raise DataError(f"bad data spec '{spec}': the seed must be >= 0, got {seed}")
    return seed


def is_random_spec(spec: str) -> bool:
    """Whether the data spec names seeded random data (``random`` or ``random:SEED``)."""
    return spec == "random" or spec.startswith("random:")


def check_spec(spec: str) -> None:
    """Refuse what no model could be fed, before any work: a ``random:SEED`` whose seed is not an
    integer >= 0 (files are checked when opened, against the model)."""
    _parse_random(spec, 0)


def seed_unused(spec: str, seed: int, names: tuple[str, str] = ("--data", "--seed")) -> str | None:
    """For a seed the user gave beside the data spec: a warning when the data is not random
    (files have no seed), None when it is the seed used; a spec naming another seed (``random:5``
    beside 7) is refused rather than one of them silently dropped. ``names``: what the user
    calls the data and the seed (options, or config keys)."""
    written = _parse_random(spec, seed)
    if written is None:
        return f"{names[1]} {seed}: used by random data only, not by {spec}"
    if written != seed:
        raise DataError(f"{names[0]} {spec} and {names[1]} {seed} name two seeds: give one")
    return None


def shapes_unused(
    spec: str, shapes: Mapping[str, Sequence[int]], names: tuple[str, str] = ("--data", "--input")
) -> None:
    """Refuse input shapes the user gave (``--input``) beside data that is not random: files, an
    image folder or a loader script feed the shapes they hold, and shapes that differ from them
    were dropped without a word (a trtexec user expects the shapes given to be the shapes run).
    ``names``: what the user calls the data and the shapes."""
    if not shapes or _parse_random(spec, 0) is not None:
        return
    given = " ".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())
    raise DataError(
        f"{names[1]} {given}: shapes for random data only; {names[0]} {spec} is fed in the shapes it "
        f"holds: drop {names[1]}"
    )


def check_shapes(shapes: Mapping[str, Sequence[int]], ranks: Mapping[str, int | None]) -> None:
    """Given input shapes (``--input``) name the model's inputs (``ranks``: input -> its number
    of dims, None when the model does not say), at their rank: a misspelt name would otherwise
    leave its input at the guessed dims without a word."""
    for name, dims in shapes.items():
        if name not in ranks:
            raise DataError(
                f"--input {name}:{'x'.join(map(str, dims))}: the model has no input '{name}' "
                f"(its inputs: {', '.join(ranks)})"
            )
        if ranks[name] is not None and len(dims) != ranks[name]:
            raise DataError(
                f"--input {name}:{'x'.join(map(str, dims))}: the model's input '{name}' has "
                f"{ranks[name]} dims, not {len(dims)}"
            )


def check_fixed_dims(shapes: Mapping[str, Sequence[int]], inputs: Sequence[TensorSpec]) -> None:
    """Given input shapes (``--input``, checked by :func:`check_shapes`) agree with every dim the
    model fixes: a shape that asks another size there is refused, naming the input, the axis, the
    fixed size and the one asked for (an ONNX file's export ran its check on it and went on)."""
    by_name = {s.name: s for s in inputs}
    for name, dims in shapes.items():
        spec = by_name.get(name)
        if spec is None or spec.rank != len(dims):
            continue
        for axis, (fixed, asked) in enumerate(zip(spec.shape, dims, strict=True)):
            if isinstance(fixed, int) and fixed != asked:
                raise DataError(
                    f"--input {name}:{'x'.join(map(str, dims))}: the model's input '{name}' fixes axis "
                    f"{axis} at {fixed}, not {asked}"
                )


def open_source(
    spec: str | os.PathLike[str],
    inputs: Sequence[TensorSpec],
    *,
    samples: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
    image_options: Any = None,
    declare_preprocess: str = "--preprocess FILE",
    batch_from_shapes: bool = True,
) -> DataSource:
    """Open a data spec (see the module docstring) for a model with ``inputs``.

    ``samples`` caps the number of samples (random data defaults to 8); ``shapes`` fixes
    dynamic dims for synthetic data, dim 0 of a dynamic batch the batch size unless
    ``batch_from_shapes`` is False (the user gave ``batch_size``: it replaces dim 0, as profile's
    --batch-sizes does); ``image_options`` is a preprocessing spec for image folders,
    and ``declare_preprocess`` how the command opening the data declares one (the advice of an
    image folder read without).
    A path object is taken as its text.
    """
    spec = os.fspath(spec)
    if not spec.strip():  # Path('') is the current folder, not data the user named
        raise DataError("the data spec is empty: name a file or folder (or random)")
    if not inputs:
        raise DataError(
            "the model has no inputs (its outputs are constants): there is no data to compare, "
            "calibrate or analyse it on"
        )
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    if samples is not None and samples < 1:
        raise DataError(f"number of samples must be >= 1, got {samples}")
    if isinstance(image_options, Mapping):  # checked whatever the data: a typo is not kept for later
        from calibration.images import Preprocess

        Preprocess.from_dict(image_options)
    check_shapes(shapes or {}, {s.name: s.rank for s in inputs})
    rnd_seed = _parse_random(spec, seed)
    if rnd_seed is not None:
        return _random_source(spec, inputs, rnd_seed, batch_size, samples or 8, shapes, batch_from_shapes)
    path = Path(spec)
    if not path.exists():
        raise DataError(
            f"data not found: {spec} (expected random, a .npz/.npy file, a folder or a .py loader)"
        )
    if path.is_dir():
        # hidden files (macOS's ._name AppleDouble files and .DS_Store) are not data, here as in subfolders
        entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        arrays = [p for p in entries if p.suffix.lower() in ARRAY_SUFFIXES]  # X.NPZ as X.PNG
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if arrays:
            source = _array_files_source(spec, arrays, inputs, batch_size, samples)
            if images:  # a folder of both: which one was read is not obvious
                mixed = (
                    f"data folder {spec} holds {len(arrays)} .npz/.npy and {len(images)} image file(s): "
                    "the arrays were read, the images were not"
                )
                source.note = f"{mixed}; {source.note}" if source.note else mixed
            return source
        if images:
            source = image_folder_source(
                spec, images, inputs, batch_size, samples, image_options,
                root=path, declare=declare_preprocess,
            )  # fmt: skip
            beside = _subfolders_unread(spec, path, len(images))
            if beside:  # class subfolders beside the images: which were read is not obvious
                source.note = f"{beside}; {source.note}" if source.note else beside
            return source
        # class subfolders (torchvision's ImageFolder layout: calib/cat/1.jpg)
        images = _interleaved(_files_under(path, IMAGE_SUFFIXES, path))
        if images:
            return image_folder_source(
                spec, images, inputs, batch_size, samples, image_options,
                root=path, declare=declare_preprocess,
            )  # fmt: skip
        # .npz/.npy files in subfolders, which are read for images only: "nor do its subfolders" was untrue
        named = _subfolders_holding(path, ARRAY_SUFFIXES)
        if named:
            raise DataError(
                f"data folder {spec} holds no .npz, .npy or image files; its subfolders {named} hold "
                ".npz/.npy files, which are read at the top level only: give one subfolder as the data, "
                "or move the files up"
            )
        raise DataError(
            f"data folder {spec} holds no .npz, .npy or image files ({', '.join(IMAGE_SUFFIXES)}), "
            "nor do its subfolders"
        )
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return _array_files_source(spec, [path], inputs, batch_size, samples)
    if path.suffix.lower() == ".py":  # LOADER.PY too, as X.NPZ is an array file
        return _script_source(spec, path, inputs, samples, "load_data")
    raise DataError(f"unsupported data file {spec}: use .npz, .npy, a folder of them, or a .py loader")


def _subfolders_unread(spec: str, path: Path, count: int) -> str | None:
    """The note for ``count`` images at the top of folder ``path`` beside subfolders of images,
    which are not read (None when there are none)."""
    named = _subfolders_holding(path, IMAGE_SUFFIXES)
    if not named:
        return None
    return (
        f"data folder {spec} holds {count} image file(s) beside subfolders of images ({named}): "
        "the top-level images were read, the subfolders were not"
    )


def _subfolders_holding(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The subfolders of ``path`` that hold files with one of ``suffixes`` (:func:`_files_under`),
    named for a line (``a/, b/, c/, ...``: three at most), or None when none does."""
    holding = [
        f"{d.name}/"
        for d in sorted(path.iterdir())
        if d.is_dir() and next(_files_under(d, suffixes, path), None)
    ]
    return ", ".join(holding[:3]) + (", ..." if len(holding) > 3 else "") if holding else None


def _files_under(folder: Path, suffixes: tuple[str, ...], root: Path) -> Iterator[Path]:
    """The files with one of ``suffixes`` (image or array files) anywhere under ``folder``, but for
    the hidden ones and those in hidden folders (names from ``root`` on starting with ".")."""
    for p in folder.rglob("*"):
        if (
            p.suffix.lower() in suffixes
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ):
            yield p


def _interleaved(files: Iterable[Path]) -> list[Path]:
    """``files`` one subfolder at a time, in turn (each in name order): the first N of them, what
    ``--calib-samples N`` reads, come from every class folder, not from the first classes only."""
    folders: dict[Path, list[Path]] = {}
    for f in sorted(files):
        folders.setdefault(f.parent, []).append(f)
    queues = [folders[k] for k in sorted(folders)]
    return [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]


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
        if not dims or any(d < 0 for d in dims) or dims[0] == 0:
            raise DataError(f"bad input shape '{item}': dims must be >= 0, the first (the batch) >= 1")
        if name in shapes:
            raise DataError(f"input shape '{item}': '{name}' is given a shape twice")
        shapes[name] = dims
    return shapes
