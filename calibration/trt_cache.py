"""TensorRT implicit-INT8 calibration caches: write them, read them (ours or TensorRT's own).

Format (TensorRT 8.x and 10.x; TensorRT 11 removed implicit calibration): a header line
``TRT-<version>-<algorithm>`` (we write EntropyCalibration2 or MinMaxCalibration; TensorRT also
EntropyCalibration and LegacyCalibration), then one line per tensor ``name: 3c010a14`` holding
the float32 scale (amax / 127) as big-endian IEEE-754 bits, always 8 hex digits, a positive
normal float32. A cache that is not so (cut short, edited, a tensor twice) is refused, not read.
TensorRT 8 encodes the version as major*1000 + minor*100 + patch (8.6.1 -> 8601), TensorRT 10
as major*10000 + minor*100 + patch (10.3.0 -> 100300); TensorRT ignores a cache whose header
does not match the running version and algorithm, so the header is written for the target's
TensorRT. Hand-written: no library writes this format without TensorRT itself.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from calibration.errors import CalibrationError
from calibration.graphs import upgrade_ir
from calibration.qdq import (
    QuantizeOptions,
    activation_scale,
    convert_opset,
    fold_computed_weights,
    node_pattern,
    plan_quantization,
    tensor_readers,
    write_qdq,
)

if TYPE_CHECKING:
    import onnx

ALGORITHM_NAMES = {"entropy": "EntropyCalibration2", "max": "MinMaxCalibration"}
# every header algorithm TensorRT writes -> the calibrator that reads it
# (docs/tensorrt-facts.md, "The TensorRT calibration cache")
CALIBRATORS = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
    "LegacyCalibration": "IInt8LegacyCalibrator",
}
_HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{8}$")  # TensorRT writes all 8 digits: fewer is a cut or edited line
FLOAT32_MIN_NORMAL = 2.0**-126  # a smaller scale (0, a denormal) is none TensorRT computed


def parse_version(version: str) -> tuple[int, int, int]:
    parts = version.strip().split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise CalibrationError(f"bad TensorRT version '{version}': expected X.Y.Z, e.g. 8.6.1") from None
    if not 1 <= len(nums) <= 4 or any(n < 0 for n in nums):
        raise CalibrationError(f"bad TensorRT version '{version}': expected X.Y.Z, e.g. 8.6.1")
    nums += [0] * (3 - len(nums))
    return nums[0], nums[1], nums[2]


def encode_version(version: str) -> int:
    """The number TensorRT writes in a cache header for ``version``."""
    major, minor, patch = parse_version(version)
    if major < 8:  # no target lists one (docs/tensorrt-facts.md: JetPack 4.6 ships 8.0.1)
        raise CalibrationError(
            f"TensorRT {version} is older than any edgedeploy writes a cache for (8.x and 10.x)"
        )
    if major >= 11:
        raise CalibrationError(
            f"TensorRT {version} has no implicit INT8 calibration (removed in 11.0): "
            "build the Q/DQ model instead of using a calibration cache"
        )
    if major == 9:  # no target ships it, and its header encoding is not confirmed (docs/tensorrt-facts.md)
        raise CalibrationError(
            f"TensorRT {version}: edgedeploy writes caches for 8.x and 10.x (9.x was a limited release)"
        )
    if minor > (99 if major >= 10 else 9) or patch > 99:
        raise CalibrationError(f"TensorRT version {version} cannot be encoded in a cache header")
    if major >= 10:  # major*10000 from 10 (docs/tensorrt-facts.md)
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def decode_version(number: int) -> str:
    if number >= 90000:
        return f"{number // 10000}.{(number % 10000) // 100}.{number % 100}"
    return f"{number // 1000}.{(number % 1000) // 100}.{number % 100}"


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


@dataclass
class CalibrationCache:
    version: str  # TensorRT version, e.g. "8.6.1"
    algorithm: str  # header name: EntropyCalibration2 or MinMaxCalibration (or another TensorRT wrote)
    scales: dict[str, float] = field(default_factory=dict)  # tensor -> float32 scale (amax / 127)

    @property
    def header(self) -> str:
        return f"TRT-{encode_version(self.version)}-{self.algorithm}"

    def amax(self) -> dict[str, float]:
        return {name: scale * 127.0 for name, scale in self.scales.items()}

    def dumps(self) -> str:
        lines = [self.header]
        for name, scale in self.scales.items():
            if "\n" in name:
                raise CalibrationError(f"tensor name {name!r} cannot be written to a calibration cache")
            lines.append(f"{name}: {scale_to_hex(scale)}")
        return "\n".join(lines) + "\n"


def cache_algorithm(algorithm: str) -> str:
    """TensorRT's calibrator name for one of ours: entropy -> EntropyCalibration2, else MinMax."""
    return ALGORITHM_NAMES.get(algorithm, "MinMaxCalibration")


def make_cache(thresholds: Mapping[str, float], version: str, algorithm: str) -> CalibrationCache:
    """A cache from tensor thresholds (amax); ``algorithm`` is ours (entropy, max, ...)."""

    encode_version(version)  # refuse TensorRT 11+ early
    # the same floor as the Q/DQ model: an all-zero tensor must not get a scale of 0
    scales = {
        name: float(struct.unpack(">f", struct.pack(">f", activation_scale(amax, 127)))[0])
        for name, amax in thresholds.items()
    }
    return CalibrationCache(
        version=".".join(map(str, parse_version(version))),
        algorithm=cache_algorithm(algorithm),
        scales=scales,
    )


def loads(text: str, origin: str = "calibration cache") -> CalibrationCache:
    """A cache's text, refused (naming the line) unless every line is as TensorRT writes it."""
    numbered = [(n, ln.rstrip("\r")) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not numbered:
        raise CalibrationError(f"{origin} is empty")
    header_number, header = numbered[0]
    # a byte-order mark, quoted in the refusal below, is invisible: the header read as TensorRT's
    # (a header TensorRT does not match is ignored: docs/tensorrt-facts.md)
    if header.startswith("\ufeff"):
        raise CalibrationError(
            f"{origin}: line {header_number} starts with a UTF-8 byte-order mark, which an editor "
            "added: TensorRT writes none, and ignores a cache whose header it does not match; save the "
            "file without it"
        )
    match = _HEADER.match(header.strip())
    if not match:
        raise CalibrationError(
            f"{origin}: first line '{header[:60]}' is not a TensorRT cache header "
            "(expected TRT-<version>-<algorithm>)"
        )
    if match.group(2) not in CALIBRATORS:
        raise CalibrationError(
            f"{origin} line {header_number}: unknown calibration algorithm '{match.group(2)}' "
            f"(TensorRT writes {', '.join(CALIBRATORS)})"
        )
    scales: dict[str, float] = {}
    seen: dict[str, int] = {}
    for number, line in numbered[1:]:
        name, sep, value = line.rpartition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise CalibrationError(
                f"{origin} line {number}: expected 'tensor: 8 hex digits', got '{line[:80]}'"
            )
        if not _HEX.match(value):
            raise CalibrationError(
                f"{origin} line {number}: tensor '{name[:80]}' has '{value[:20]}', not 8 hex digits as "
                "TensorRT writes a scale: the file was cut short or edited"
            )
        scale = hex_to_scale(value)
        # NaN, Inf, a sign, 0 or a denormal: no scale TensorRT computed
        if not (math.isfinite(scale) and scale >= FLOAT32_MIN_NORMAL):
            raise CalibrationError(
                f"{origin} line {number}: tensor '{name[:80]}' has scale {scale} ({value}): a scale is a "
                "finite, positive normal float32 (>= 1.18e-38)"
            )
        if name in seen:
            raise CalibrationError(
                f"{origin} line {number}: tensor '{name[:80]}' is listed again (line {seen[name]} "
                "gave it already): TensorRT writes each tensor once"
            )
        seen[name] = number
        scales[name] = scale
    return CalibrationCache(decode_version(int(match.group(1))), match.group(2), scales)


def read_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise CalibrationError(f"calibration cache not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration cache {path}: {exc}") from None
    return loads(text, os.fspath(path))


def cache_to_qdq(
    model_path: str | os.PathLike[str],
    cache_path: str | os.PathLike[str],
    placement: str = "tensorrt",
    weight_bits: int = 8,
) -> tuple[onnx.ModelProto, list[str], str | None]:
    """A Q/DQ model from a TensorRT cache (weights from the model); returns it, the uncovered tensors,
    and why the model's opset conversion could not be checked (:func:`calibration.qdq.convert_opset`;
    None where it was, or the model needed none).

    Nodes whose activation tensors the cache does not cover are left in float: the nodes that read
    such a tensor and, where the placement quantizes outputs too (ONNX Runtime's QLinear kernels:
    a Conv's output, a graph output read by no node), the node that writes it.
    """
    import onnx

    cache = read_cache(cache_path)
    model = onnx.load(os.fspath(model_path))
    upgrade_ir(model)
    # plan on the graph that is written (conversion moves indices); one that changes the outputs is refused
    model, unchecked = convert_opset(model, name=os.path.basename(model_path))
    fold_computed_weights(model)  # as calibrate does: such a weight is quantized like a stored one
    amax = cache.amax()
    nodes = model.graph.node
    readers = {name: {i for i, _ in reads} for name, reads in tensor_readers(nodes).items()}
    producer = {name: i for i, node in enumerate(nodes) for name in node.output}
    uncovered: list[str] = []
    excluded: set[int] = set()
    while True:
        options = QuantizeOptions(
            placement=placement,
            weight_bits=weight_bits,
            exclude_nodes=tuple(node_pattern(nodes[i], i) for i in sorted(excluded)),
        )
        plan = plan_quantization(model, options)
        missing = [t for t in plan.calibrated_tensors() if t not in amax]
        if not missing:
            break
        uncovered += [t for t in missing if t not in uncovered]
        # the nodes that read it in float; where they already are (or none does) and the tensor is
        # still quantized, its producer quantizes its output (the CPU placement): that one too
        more: set[int] = set()
        for tensor in missing:
            more |= (readers.get(tensor, set()) - excluded) or ({producer.get(tensor, -1)} - excluded - {-1})
        if not more:
            raise CalibrationError(
                f"calibration cache {cache_path} lacks tensor(s) {', '.join(missing[:5])}, "
                "which cannot be left in float"
            )
        excluded |= more
    if not plan.calibrated_tensors():
        raise CalibrationError(
            f"calibration cache {cache_path} covers none of the model's quantizable tensors"
        )
    return write_qdq(model, plan, amax), uncovered, unchecked
