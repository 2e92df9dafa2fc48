"""Feed arrays of any ONNX tensor type to ONNX Runtime, numpy's own dtypes or not.

ONNX Runtime takes numpy arrays for numpy's dtypes only: a bfloat16, float8 or int4 array (the
``ml_dtypes`` types onnx's numpy_helper returns) fails with "Numpy_type 256 can't be converted
to MLDataType". Such arrays go in as an ``OrtValue`` of the ONNX element type instead; the 4-bit
types are packed two to a byte, as ONNX Runtime stores them. Hand-written: neither onnx nor
onnxruntime ships this mapping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# 4-bit types: ONNX Runtime holds them packed, two values per byte (low nibble first)
PACKED_4BIT = ("int4", "uint4", "float4_e2m1fn")


def is_numpy_native(dtype: np.dtype) -> bool:
    """True for dtypes numpy itself defines (ONNX Runtime accepts those arrays directly)."""
    return dtype.num < 256 and dtype.kind != "V"


def is_text(value: Any) -> bool:
    """True for a numpy array of text (str, bytes or objects: a string input's feed)."""
    return isinstance(value, np.ndarray) and value.dtype.kind in "OSU"


def is_float_dtype(dtype: np.dtype) -> bool:
    """float16/32/64 and the ml_dtypes floats (bfloat16, float8 ...)."""
    if dtype.kind == "f":
        return True
    if is_numpy_native(dtype):
        return False
    return "float" in dtype.name


def integer_bounds(dtype: np.dtype) -> tuple[int, int] | None:
    """The least and the greatest value of an integer dtype (numpy's, or ml_dtypes' int4, uint4...);
    None for any other (bool, floats, text)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    if is_numpy_native(dtype) or "int" not in dtype.name:
        return None
    import ml_dtypes

    ml_info = ml_dtypes.iinfo(dtype)
    return int(ml_info.min), int(ml_info.max)


def onnx_element_type(dtype: np.dtype) -> int:
    """The ONNX TensorProto element type of a numpy (or ml_dtypes) dtype."""
    from onnx import helper

    return int(helper.np_dtype_to_tensor_dtype(dtype))


def to_ort(array: Any) -> Any:
    """``array`` itself for numpy's dtypes, else an OrtValue of the matching ONNX type."""
    if not isinstance(array, np.ndarray) or is_numpy_native(array.dtype):
        return array
    import onnxruntime as ort

    elem = onnx_element_type(array.dtype)
    if array.dtype.name in PACKED_4BIT:
        from onnx import numpy_helper

        packed = np.frombuffer(numpy_helper.from_array(np.ascontiguousarray(array)).raw_data, np.uint8)
        buffer = np.zeros(array.shape, np.uint8)  # the OrtValue takes its shape from this buffer
        buffer.reshape(-1)[: packed.size] = packed
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(buffer, elem)
    raw = np.ascontiguousarray(array).view(np.dtype(f"u{array.dtype.itemsize}"))
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, elem)


def ort_feed(feed: Mapping[str, Any]) -> dict[str, Any]:
    """A feed dict ONNX Runtime's ``run`` accepts, whatever the arrays' element types."""
    return {name: to_ort(value) for name, value in feed.items()}


def run_views(session: Any, names: Sequence[str], feed: Mapping[str, Any]) -> list[np.ndarray]:
    """``session.run(names, feed)`` without the copy of each output: numpy arrays over the buffers
    ONNX Runtime wrote (each keeps its buffer alive; writable, not shared with a later run).

    ``run`` copies every output into a new numpy array; with every activation of PP-OCRv4's
    recognizer fetched (1.5 GB per batch of 8, calibration's statistics pass) that copy took
    two thirds of the run. Outputs numpy cannot view (a non-tensor output) come from ``run``, and
    so do all outputs of a feed holding text (a string input): ONNX Runtime makes no OrtValue of
    a str, bytes or object array ("Creation of OrtValues is currently only supported from
    non-string numpy arrays").
    """
    import onnxruntime as ort

    if any(is_text(value) for value in feed.values()):
        return [np.asarray(out) for out in session.run(list(names), ort_feed(feed))]
    values = {}
    for name, value in ort_feed(feed).items():  # OrtValues already for the types numpy lacks
        as_ort = isinstance(value, ort.OrtValue)
        values[name] = value if as_ort else ort.OrtValue.ortvalue_from_numpy(np.asarray(value))
    outputs = session.run_with_ort_values(list(names), values)
    try:
        return [np.asarray(out.numpy()) for out in outputs]
    except Exception:  # a sequence or map output: run's own conversion
        return [np.asarray(out) for out in session.run(list(names), ort_feed(feed))]
