"""TensorRT calibration caches: header encoding, round trip, TensorRT's own file, cache -> Q/DQ."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.errors import CalibrationError
from calibration.trt_cache import (
    cache_to_qdq,
    decode_version,
    encode_version,
    hex_to_scale,
    loads,
    make_cache,
    read_cache,
    scale_to_hex,
)
from tests.conftest import assert_clean_input_error, files_under, run_cli

REAL_CACHE = Path(__file__).parent / "data" / "trt-8600-entropy2-yolov5.cache"


@pytest.mark.parametrize(
    ("version", "number"), [("8.6.1", 8601), ("8.5.2", 8502), ("10.3.0", 100300), ("10.13.0", 101300)]
)
def test_header_version_is_encoded_per_tensorrt_major(version: str, number: int) -> None:
    assert encode_version(version) == number
    assert decode_version(number) == version


def test_tensorrt_11_has_no_cache_and_says_why() -> None:
    with pytest.raises(CalibrationError, match=r"removed in 11\.0"):
        encode_version("11.1.0")
    with pytest.raises(CalibrationError, match="older than any"):
        encode_version("7.0.0")
    with pytest.raises(CalibrationError, match=r"8\.x and 10\.x"):  # written as TRT-90909 before
        encode_version("9.9.9")


@pytest.mark.parametrize("bits", ["7fc00000", "7f800000", "bf800000"])  # NaN, +Inf, -1.0
def test_a_cache_scale_that_is_not_a_finite_positive_number_is_refused(bits: str) -> None:
    """--from-cache wrote NaN, Inf or a clamped negative scale into the Q/DQ model, exit 0."""
    with pytest.raises(CalibrationError, match=r"line 3: tensor 'b' has scale .* a scale is a finite"):
        loads(f"TRT-8601-EntropyCalibration2\na: 3c010a14\nb: {bits}\n")


def test_scale_is_written_as_big_endian_float32_bits() -> None:
    assert scale_to_hex(1.0) == "3f800000"
    assert hex_to_scale("3c010a14") == struct.unpack(">f", bytes.fromhex("3c010a14"))[0]


def test_cache_round_trips_to_float32_precision() -> None:
    rng = np.random.default_rng(0)
    amax = {f"/layer.{i}/Relu_output_0": float(v) for i, v in enumerate(rng.uniform(0.01, 50, 40))}
    cache = make_cache(amax, "10.3.0", "entropy")
    text = cache.dumps()
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    back = loads(text)
    assert back.version == "10.3.0" and back.algorithm == "EntropyCalibration2"
    for name, value in amax.items():
        assert np.float32(back.scales[name]) == np.float32(value / 127.0)
    assert make_cache(amax, "8.6.1", "max").header == "TRT-8601-MinMaxCalibration"


def test_reads_a_cache_written_by_tensorrt_itself() -> None:
    cache = read_cache(REAL_CACHE)
    assert cache.version == "8.6.0" and cache.algorithm == "EntropyCalibration2"
    assert len(cache.scales) == 197
    assert cache.scales["images"] == pytest.approx(struct.unpack(">f", bytes.fromhex("3c00f9f4"))[0])
    assert all(0 < s < 1e3 for s in cache.scales.values())
    # written back with the same header, it is byte-identical line for line
    assert cache.dumps().splitlines() == [ln for ln in REAL_CACHE.read_text().splitlines() if ln.strip()]


def test_malformed_cache_names_the_line() -> None:
    with pytest.raises(CalibrationError, match="line 3"):
        loads("TRT-8601-EntropyCalibration2\na: 3f800000\nb 3f800000\n")
    with pytest.raises(CalibrationError, match="not a TensorRT cache header"):
        loads("hello\n")


REAL_LINES = REAL_CACHE.read_text().splitlines()


def _edited(line: int, text: str | None, insert: str | None = None) -> str:
    """The real cache with its 1-based ``line`` replaced by ``text`` (dropped if None), ``insert``
    put after it, and everything after the edited line kept (no final newline when cut there)."""
    lines = list(REAL_LINES)
    lines[line - 1 : line] = [t for t in (text, insert) if t is not None]
    return "\n".join(lines) + "\n"


IMAGES = r"line 2: tensor 'images' has scale"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # cut mid-value as a truncated copy leaves it: 3e87 was read as 0x00003e87 = 2.2e-41
        ("\n".join(REAL_LINES[:3]) + "\n" + REAL_LINES[3][:-4], r"line 4: .*'3e87'.* 8 hex digits"),
        (_edited(2, "images: 0"), r"line 2: .*'0'.* 8 hex digits"),
        (_edited(2, "", "images: 3c00f9"), r"line 3: .*'3c00f9'"),  # a blank line is counted
        (_edited(2, "images: 3c00f9f4a"), r"line 2: .* 8 hex digits"),
        (_edited(2, "images: 00000000"), IMAGES + r" 0\.0 \(00000000\).* positive normal"),
        (_edited(2, "images: 80000000"), IMAGES + r" -0\.0"),
        (_edited(2, "images: 00000001"), IMAGES + r" 1\.4\d*e-45 .* positive normal"),
        (_edited(2, "images: 007fffff"), IMAGES + r" 1\.17\d*e-38"),
        (_edited(2, "images: 3c00f9f4", "images: 3f800000"), r"line 3: tensor 'images' is listed again"),
        (_edited(1, "TRT-8600-EntropyCalibration9"), r"line 1: unknown calibration algorithm 'EntropyCal"),
        # saved by an editor that adds a byte-order mark: refused as "first line 'TRT-8600-Entropy...'
        # is not a TensorRT cache header", the mark invisible in the line it quoted
        ("\ufeff" + "\n".join(REAL_LINES) + "\n", r"^c\.cache: line 1 starts with a UTF-8 byte-order mark"),
    ],
    ids=[
        "cut",
        "short",
        "blank",
        "long",
        "zero",
        "-zero",
        "denormal",
        "denormal2",
        "twice",
        "algorithm",
        "bom",
    ],
)
def test_a_cut_or_edited_cache_is_refused_naming_the_line(text: str, message: str) -> None:
    """--from-cache read a value cut short (3e87 as 2.2e-41, floored to 1e-12: output cosine
    -0.097), a tensor listed twice (the last won), a scale of 0 or a denormal (floored to 1e-12) and
    an algorithm TensorRT has not got, and wrote a broken INT8 model, exit 0. A byte-order mark is
    named, not quoted invisibly in a header that reads as TensorRT's."""
    with pytest.raises(CalibrationError, match=message):
        loads(text, "c.cache")


@pytest.mark.parametrize(
    "algorithm", ["EntropyCalibration", "EntropyCalibration2", "MinMaxCalibration", "LegacyCalibration"]
)
def test_every_algorithm_tensorrt_writes_is_read(algorithm: str) -> None:
    """TensorRT's four calibration algorithms, legacy, entropy, entropy 2 and min-max, on TensorRT
    8.x and 10.x (docs/tensorrt-facts.md, "The TensorRT calibration cache")."""
    assert loads(_edited(1, f"TRT-8600-{algorithm}")).algorithm == algorithm
    assert loads("TRT-8601-MinMaxCalibration\nx: 00800000\n").scales["x"] == pytest.approx(1.1754944e-38)


def test_calibrate_from_a_truncated_cache_exits_2_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "trunc.cache"
    cache.write_text("\n".join(REAL_LINES[:3]) + "\n" + REAL_LINES[3][:-4])
    out = tmp_path / "out"
    args = ["--from-cache", cache, "--target", "jetson-orin-nx", "-o", out]
    result = run_cli("calibrate", _yolo_head(tmp_path), *args)
    assert_clean_input_error(result, "trunc.cache line 4", "'3e87'")
    assert files_under(out) == set()


def _yolo_head(tmp_path: Path, named: bool = True) -> Path:
    """Two Convs with the real cache's first tensor names (its output 'out' is not in the cache);
    ``named=False``: the nodes have no names."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w"], ["/model.0/conv/Conv_output_0"], name="c0"),
            helper.make_node(
                "Relu", ["/model.0/conv/Conv_output_0"], ["/model.0/act/Mul_output_0"], name="r0"
            ),
            helper.make_node("Conv", ["/model.0/act/Mul_output_0", "w2"], ["out"], name="c1"),
        ],
        "yolo_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 12, 12])],
        [w, w2],
    )
    if not named:
        for node in graph.node:
            node.name = ""
    model_path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model_path)
    return model_path


def test_a_cache_becomes_a_qdq_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    qdq, uncovered, _ = cache_to_qdq(_yolo_head(tmp_path), REAL_CACHE)
    assert uncovered == []
    onnx.checker.check_model(qdq)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    q_nodes = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear"]
    assert {n.input[0] for n in q_nodes} == {"images", "/model.0/act/Mul_output_0"}
    scale = inits[next(n.input[1] for n in q_nodes if n.input[0] == "images")]
    assert float(scale) == pytest.approx(read_cache(REAL_CACHE).scales["images"], rel=1e-6)
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"images": rng.random((1, 3, 16, 16), dtype=np.float32)})


def _float_and_int8_convs(qdq: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """The Convs of ``qdq`` whose weight is a float initializer, and those reading a dequantized one."""
    dequantized = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in qdq.graph.node if n.op_type == "Conv"]
    return [n.output[0] for n in convs if n.input[1] not in dequantized], [
        n.output[0] for n in convs if n.input[1] in dequantized
    ]


@pytest.mark.parametrize("named", [True, False])
def test_a_cpu_target_leaves_a_conv_in_float_when_the_cache_lacks_its_output(
    tmp_path: Path, named: bool
) -> None:
    """--from-cache --target x86-64-cpu: the CPU placement quantizes a Conv's output too, and the
    graph output 'out' (read by no node) is in no TensorRT cache: "no calibration threshold for
    tensor(s) out", exit 2, where tensors the cache does not cover are left in float."""
    qdq, uncovered, _ = cache_to_qdq(_yolo_head(tmp_path, named), REAL_CACHE, placement="onnxruntime")
    assert uncovered == ["out"]
    onnx.checker.check_model(qdq)
    assert _float_and_int8_convs(qdq) == (["out"], ["/model.0/conv/Conv_output_0"])
    assert "out" not in {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    session = ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    (result,) = session.run(None, {"images": rng.random((1, 3, 16, 16), dtype=np.float32)})
    assert result.shape == (1, 8, 12, 12) and np.isfinite(result).all()


def test_a_cpu_target_leaves_both_sides_of_an_uncovered_tensor_in_float(tmp_path: Path) -> None:
    """A tensor between two quantized Convs that the cache lacks: its reader and (as the CPU
    placement quantizes outputs) its producer stay in float, the rest of the model is int8."""
    scales = read_cache(REAL_CACHE).scales
    kept = ["images", "/model.0/conv/Conv_output_0"]
    cache = tmp_path / "part.cache"
    lines = [f"{t}: {scale_to_hex(scales[t])}" for t in kept]
    cache.write_text("\n".join(["TRT-8600-EntropyCalibration2", *lines, ""]))
    tmp_path.joinpath("model").mkdir()
    qdq, uncovered, _ = cache_to_qdq(_yolo_head(tmp_path / "model"), cache, placement="onnxruntime")
    assert set(uncovered) == {"/model.0/act/Mul_output_0", "out"}
    assert _float_and_int8_convs(qdq) == (["out"], ["/model.0/conv/Conv_output_0"])
    quantized = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized == {"images", "/model.0/conv/Conv_output_0"}
    ort.InferenceSession(qdq.SerializeToString(), providers=["CPUExecutionProvider"])


def test_calibrate_from_cache_for_a_cpu_target_reports_what_it_left_in_float(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--from-cache", REAL_CACHE, "--target", "x86-64-cpu", "-o", out, "--json", tmp_path / "m.json"]
    result = run_cli("calibrate", _yolo_head(tmp_path), *args)
    assert result.code == 0, result.stderr
    assert "1 tensor(s) not in the cache were left in float: out" in result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["artifact"]["left_in_float"] == ["out"]
    onnx.checker.check_model(onnx.load(out / "m.int8.onnx"))
