"""Device scripts against trtexec's real flags and output per TensorRT release.

The fake trtexec (tests/device/fakes/trtexec) knows each release's flags (tests/data/trtexec-flags.json:
8.2.1, 8.4.1, 8.5.3, 8.6.1, 10.3.0, 10.13.0, 11.0 and 11.1, where they come from is in
docs/tensorrt-facts.md), refuses others as trtexec does, reports the inference settings it ran with, and
writes --exportOutput as trtexec does.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FAKES, Device, make_dense_bundle
from onnx import TensorProto, helper, numpy_helper

from calibration.modelinfo import TensorSpec
from edgedeploy.backends.trt_sidecar import check_loadable, read_sidecar
from edgedeploy.device import bundle_helper, verify_outputs
from edgedeploy.stages.bundle import BundleArtifact, make_bundle
from edgedeploy.targets import load_target

R35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref"
L4T_36_2 = "# R36 (release), REVISION: 2.0, GCID: 35084178, BOARD: generic, EABI: aarch64"  # JetPack 6.0 DP


def trt_header(root: Path, version: str) -> None:
    """The device's NvInferVersion.h (bundle_helper reads the TensorRT version there first)."""
    folder = root / "usr/include/aarch64-linux-gnu"
    folder.mkdir(parents=True, exist_ok=True)
    parts = dict(zip(("MAJOR", "MINOR", "PATCH"), version.split("."), strict=True))
    (folder / "NvInferVersion.h").write_text(
        "".join(f"#define NV_TENSORRT_{k} {v}\n" for k, v in parts.items())
    )


PROFILE = {"input": {"min": [1, 1, 8, 8], "opt": [4, 1, 8, 8], "max": [8, 1, 8, 8]}}


def script(bundle: Path, name: str) -> Path:
    return bundle / "scripts" / name


@pytest.fixture(scope="module")
def plan_bundle_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp16 bundle whose precision plan keeps one layer in fp32, built with a profile and TF32 off."""
    return make_dense_bundle(
        tmp_path_factory.mktemp("plan-bundle"),
        batch=4,
        precision_plan={"fp32_nodes": ["head/Gemm"]},
        build={"profiles": [PROFILE], "tf32": False},
    )


@pytest.fixture
def plan_bundle(plan_bundle_src: Path, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(plan_bundle_src, dest)
    return dest


def test_tensorrt_8_trtexec_build_pins_fp32_layers_and_uses_the_bundles_profile(
    plan_bundle: Path, device: Device
) -> None:
    device.set_board(release=R35, cuda="11.4.315")
    res = device.run(script(plan_bundle, "build_engine.sh"), FAKE_TRT_VERSION="8601")
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--fp16" in argv and "--stronglyTyped" not in argv
    assert "--precisionConstraints=obey" in argv
    assert "--layerPrecisions=head/Gemm:fp32" in argv and "--layerOutputTypes=head/Gemm:fp32" in argv
    assert "--noTF32" in argv  # the bundle was built with TF32 cleared
    assert "--minShapes=input:1x1x8x8" in argv and "--optShapes=input:4x1x8x8" in argv
    assert "--maxShapes=input:8x1x8x8" in argv


def test_tensorrt_10_trtexec_build_writes_a_sidecar_edgedeploy_compare_reads(
    bundle: Path, device: Device
) -> None:
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--noTF32" not in argv  # TF32 stays at trtexec's default
    engine = bundle / "device" / "engines" / "dense.fp16.engine"
    built = read_sidecar(engine)  # edgedeploy's own reader: format, fields
    assert built is not None and built["tensorrt"] == "10.3.0" and built["compute_capability"] == "8.7"
    assert built["plan"]["profiles"] == [{"input": [[1, 1, 8, 8], [16, 1, 8, 8], [16, 1, 8, 8]]}]
    here = {"tensorrt": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}
    assert check_loadable(engine, built, here) == []


FAKE_EDGEDEPLOY = """#!/usr/bin/env python3
import hashlib, json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("edgedeploy " + " ".join(args) + "\\n")
out = Path(args[args.index("-o") + 1])
out.mkdir(parents=True, exist_ok=True)
model = Path(args[1])
engine = out / (model.name.removesuffix(".onnx") + ".engine")
engine.write_text(json.dumps({"fake_plan": True, "onnx": str(model.resolve())}))
# as edgedeploy build records the model: by path from the sidecar's folder (trt_sidecar.relative_record)
record = {"path": os.path.relpath(os.path.realpath(str(model)), os.path.realpath(str(out))),
          "relative_to": "sidecar", "sha256": hashlib.sha256(model.read_bytes()).hexdigest()}
sidecar = {"format": "edgedeploy.engine/1", "tensorrt": "10.3.0", "compute_capability": "8.7",
           "plan": {"version_compatible": False}, "tf32": "--no-tf32" not in args,
           "inputs": {"model": record},
           "timing_cache": args[args.index("--timing-cache") + 1] if "--timing-cache" in args else None}
(out / (engine.name + ".json")).write_text(json.dumps(sidecar))
"""


def path_with_fake_edgedeploy(device: Device, tmp_path: Path) -> str:
    """The device's PATH with FAKE_EDGEDEPLOY first on it as `edgedeploy`."""
    tool = tmp_path / "bin" / "edgedeploy"
    tool.parent.mkdir()
    tool.write_text(FAKE_EDGEDEPLOY)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return os.pathsep.join([str(tool.parent), device.env["PATH"]])


def test_edgedeploy_path_gets_the_bundles_profile_and_tf32_and_keeps_its_sidecar(
    plan_bundle: Path, device: Device, tmp_path: Path
) -> None:
    path = path_with_fake_edgedeploy(device, tmp_path)
    res = device.run(script(plan_bundle, "build_engine.sh"), "--tool", "edgedeploy", PATH=path)
    assert res.returncode == 0, res.stdout + res.stderr
    call = device.calls("edgedeploy")[0].split()
    assert "--profile=input:1x1x8x8,4x1x8x8,8x1x8x8" in call and "--no-tf32" in call
    engine = plan_bundle / "device" / "engines" / "dense.fp16.engine"
    built = read_sidecar(engine)
    assert built is not None and built["tf32"] is False and built["tool"] == "edgedeploy"
    assert built["board"] == "NVIDIA Jetson Orin Nano Developer Kit"  # this device's keys merged in
    assert not list(engine.parent.glob(".build.*"))


def _benchmark(
    bundle: Path, device: Device, version: str, *flags: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """benchmark.sh for 0.2 s without warm-up on TensorRT ``version`` (its FAKE_TRT_VERSION), which
    must succeed: its result and the JSON file it wrote."""
    out = bundle / "device" / "results" / "bench.json"
    res = device.run(
        script(bundle, "benchmark.sh"),
        *("--duration", "0.2", "--warmup", "0", "--out", str(out), *flags),
        FAKE_TRT_VERSION=version,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res, out


@pytest.mark.parametrize(
    ("version", "graph", "transfers"),
    [("8502", True, True), ("100300", True, True), ("110100", True, True), ("110100", False, False)],
)
def test_benchmark_makes_trtexec_run_what_its_json_says_on_every_release(
    bundle: Path, device: Device, version: str, graph: bool, transfers: bool
) -> None:
    """trtexec 11 turned data transfers off and CUDA graph and spin wait on by default."""
    if version == "8502":
        device.set_board(release=R35, cuda="11.4.315")
    assert device.run(script(bundle, "build_engine.sh"), FAKE_TRT_VERSION=version).returncode == 0
    flags = ([] if graph else ["--no-cuda-graph"]) + ([] if transfers else ["--no-data-transfers"])
    _, out = _benchmark(bundle, device, version, *flags)
    settings = json.loads(out.read_text())["settings"]
    log = (bundle / "device" / "results" / "bench.trtexec.log").read_text()
    said = {True: "Enabled", False: "Disabled"}
    assert settings["cuda_graph"] is graph and f"CUDA Graph: {said[graph]}" in log
    assert settings["data_transfers"] is transfers and f"Data transfers: {said[transfers]}" in log
    assert settings["spin_wait"] is True and "Spin-wait: Enabled" in log


def test_verify_reports_nan_and_inf_from_trtexec_as_a_failure_not_a_traceback(
    bundle: Path, device: Device
) -> None:
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    res = device.run(script(bundle, "verify.sh"), FAKE_TRTEXEC_NAN="1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "3 NaN/Inf value(s) unlike the reference's" in res.stdout and "Traceback" not in res.stderr
    report = json.loads((bundle / "device/results/verify-fp16.json").read_text())  # still JSON
    assert report["passed"] is False and report["outputs"]["logits"]["nan_inf"] == 3


# trtexec's --exportOutput file, line by line, with its values through `os << float`, so NaN/Inf print
# as nan, -nan, inf (docs/tensorrt-facts.md, "trtexec", --exportOutput).
TRTEXEC_EXPORT = """[
  { "name" : "logits"
  , "dimensions" : "1x4"
  , "values" : [ 0.25, nan, -nan, inf ]
  }
, { "name" : "boxes:0"
  , "dimensions" : "2"
  , "values" : [ -inf, 1e-07 ]
  }
]
"""


def test_trtexec_export_is_read_with_its_literal_nan_and_inf(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text(TRTEXEC_EXPORT)
    got = verify_outputs.load_trtexec_outputs(path)
    assert got["logits"].shape == (1, 4) and got["logits"][0, 0] == 0.25
    assert np.isnan(got["logits"][0, 1]) and np.isnan(got["logits"][0, 2]) and got["logits"][0, 3] == np.inf
    assert got["boxes:0"].tolist() == [-np.inf, 1e-07]
    path.write_text('[ { "name" : "x" , "values" : [ 1, banana ] } ]')
    with pytest.raises(verify_outputs.OutputsProblem, match="no number"):
        verify_outputs.load_trtexec_outputs(path)


def test_device_verdict_on_class_ids_and_sizes_is_the_hosts() -> None:
    """trtexec writes every output as numbers: a class-id output is read back as floats and gated,
    as compare gates it on the host, on its share of equal elements; a data-dependent output of
    another size fails the gate (exit 1) instead of stopping the script as an error (exit 2)."""
    ref = np.array([3, 1, 7, 7, 2, 9, 5, 5, 8, 6] * 5, np.int64)
    got = ref.astype(np.float32)
    got[0] = 4.0
    m = verify_outputs.metrics(ref, got, {"min_cosine": 0.999})
    assert m["cosine"] > 0.999 and m["equal_share"] == 0.98
    assert m["failures"] == ["equal elements 0.9800 < 0.999 (a bool/integer output)"]
    short = verify_outputs.metrics(ref, got[:40], {"min_cosine": 0.999})
    assert short["failures"] == ["another shape than the reference's (40 values, reference 50)"]
    flat = verify_outputs.metrics(ref.reshape(5, 10).astype(np.float32), got, {"min_cosine": 0.9})
    assert flat["equal_share"] is None and not flat["failures"]  # trtexec's flat copy of a float output


def manifest(shape: list[object], profiles: list[dict] | None = None) -> dict:
    data: dict = {"io": {"inputs": [{"name": "images", "shape": shape}]}}
    if profiles is not None:
        data["build"] = {"profiles": profiles}
    return data


def test_dynamic_spatial_dims_take_their_sizes_from_the_bundles_profile() -> None:
    profile = {"images": {"min": [1, 3, 320, 320], "opt": [2, 3, 640, 640], "max": [4, 3, 1280, 1280]}}
    m = manifest(["batch", 3, "height", "width"], [profile])
    assert bundle_helper.input_profile(m, 8) == {
        "images": [[1, 3, 320, 320], [2, 3, 640, 640], [8, 3, 1280, 1280]]  # max batch widened to 8
    }
    assert bundle_helper._io_shapes(m, 2) == {"images": [2, 3, 640, 640]}  # benchmark: opt H x W
    with pytest.raises(bundle_helper.BundleProblem, match=r"dynamic dims .* records no shape profile"):
        bundle_helper.input_profile(manifest(["batch", 3, "height", "width"]), 8)
    assert bundle_helper.input_profile(manifest(["batch", 3, 224, 224]), 8) == {
        "images": [[1, 3, 224, 224], [8, 3, 224, 224], [8, 3, 224, 224]]
    }


def test_int8_on_tensorrt_8_sets_fp16_beside_int8_like_edgedeploy() -> None:
    target = {"precisions": ["fp32", "fp16", "int8"], "default_workspace_mb": 1024}
    art = {"precision": "int8", "calibration_cache": "models/dense.calib.cache"}
    flags = bundle_helper.build_flags({"target": target}, art, "8.6.2", None)
    assert flags[:3] == ["--fp16", "--int8", "--calib={bundle}/models/dense.calib.cache"]
    assert "--stronglyTyped" in bundle_helper.build_flags({"target": target}, art, "10.3.0", None)
    with pytest.raises(bundle_helper.BundleProblem, match="cannot carry"):
        bundle_helper.build_flags({"target": target}, {"precision": "fp16"}, "8.6.2", None, ["a,b"])


@pytest.mark.parametrize(
    ("version", "graph", "transfers", "expected"),
    [
        ("8.6.2", True, True, ["--useCudaGraph", "--useSpinWait"]),
        ("10.3.0", False, False, ["--noDataTransfers", "--useSpinWait"]),
        ("11.1.0", True, True, ["--includeDataTransfers"]),
        ("11.1.0", False, False, ["--noCudaGraph"]),
    ],
)
def test_run_flags_per_trtexec_release(
    version: str, graph: bool, transfers: bool, expected: list[str]
) -> None:
    assert bundle_helper.run_flags(version, cuda_graph=graph, data_transfers=transfers) == expected


# ---------------------------------------------------------------- TensorRT 8.2 (JetPack 4: Nano, TX2)

NANO = "NVIDIA Jetson Nano Developer Kit"
R32 = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64"


def test_trtexec_8_2_builds_without_the_layer_precision_flags_it_lacks_and_says_so(
    tmp_path: Path, device: Device
) -> None:
    """trtexec 8.2.1 has no --layerPrecisions/--layerOutputTypes (they come with 8.4.1) and
    refuses unknown options: the build goes on without them and says so in one line."""
    (tmp_path / "src").mkdir()
    bundle = make_dense_bundle(
        tmp_path / "src", batch=4, precision_plan={"fp32_nodes": ["head/Gemm"]}, target="jetson-nano"
    )
    device.set_board(model=NANO, release=R32, cuda="10.2.300")
    device.env.update(FAKE_GPU_NAME="NVIDIA Tegra X1", FAKE_GPU_CC="5.3")  # the Nano's GPU, as trtexec says
    res = device.run(script(bundle, "build_engine.sh"), FAKE_TRT_VERSION="8201")
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--fp16" in argv and not [a for a in argv if a.startswith(("--layer", "--precisionConstraints"))]
    assert any(a.startswith("--workspace=") for a in argv)  # --memPoolSize came with 8.4
    said = [ln for ln in res.stderr.splitlines() if "fp32 layer" in ln]
    assert len(said) == 1 and "trtexec 8.2.1 cannot keep the 1 fp32 layer(s)" in said[0], res.stderr
    assert "verify.sh" in said[0]
    assert device.run(script(bundle, "verify.sh"), FAKE_TRT_VERSION="8201").returncode == 0


def test_trtexec_8_4_keeps_the_fp32_layers(plan_bundle: Path, device: Device) -> None:
    device.set_board(
        release="# R35 (release), REVISION: 1.0, GCID: 31346300, BOARD: t186ref", cuda="11.4.239"
    )
    res = device.run(script(plan_bundle, "build_engine.sh"), FAKE_TRT_VERSION="8401")
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--layerPrecisions=head/Gemm:fp32" in argv and "fp32 layer" not in res.stderr


def test_benchmark_on_trtexec_8_2_runs_whole_seconds_and_records_them(bundle: Path, device: Device) -> None:
    """--duration is an int32 on trtexec 8.2 (std::stoi: 0.2 would run as 0): rounded up, recorded."""
    device.set_board(release=R32, cuda="10.2.300")
    assert device.run(script(bundle, "build_engine.sh"), FAKE_TRT_VERSION="8201").returncode == 0
    res, out = _benchmark(bundle, device, "8201")
    run = next(c for c in device.calls("trtexec") if "--loadEngine=" in c).split()
    assert "--duration=1" in run and "--duration=0.2" not in run
    settings = json.loads(out.read_text())["settings"]
    assert settings["duration_s"] == 1.0 and "--duration=1" in settings["command"]
    assert "Duration: 1s" in (bundle / "device" / "results" / "bench.trtexec.log").read_text()
    assert "--duration 0.2 runs as 1" in res.stderr


@pytest.mark.parametrize(("version", "expected"), [("8.2.1", "3"), ("8.2.1", "2"), ("8.6.2", "0.2")])
def test_trtexec_duration_per_release(version: str, expected: str) -> None:
    asked = {"3": "2.5", "2": "2", "0.2": "0.2"}[expected]
    assert bundle_helper.trtexec_duration(version, asked) == expected


def test_fake_trtexec_takes_the_nearest_older_flag_table_and_refuses_older_releases(
    bundle: Path, device: Device
) -> None:
    """The flag tables are compared as numbers (a string minimum was "10.13.0"); a release older than
    every table has no known flags."""
    onnx_file = next((bundle / "models").glob("*.onnx"))
    trtexec = Path(__file__).parent / "fakes" / "trtexec"
    for version, flag, refused in (
        ("8401", "--layerPrecisions=a:fp32", False),
        ("8201", "--layerPrecisions=a:fp32", True),
    ):
        res = subprocess.run(
            [str(trtexec), f"--onnx={onnx_file}", flag],
            capture_output=True,
            text=True,
            timeout=60,
            env={**device.env, "FAKE_TRT_VERSION": version},
        )
        assert (res.returncode != 0 and "Unknown option: --layerPrecisions" in res.stdout) is refused, (
            res.stdout
        )
    res = subprocess.run(
        [str(trtexec), f"--onnx={onnx_file}", "--stronglyTyped"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**device.env, "FAKE_TRT_VERSION": "7103"},
    )
    assert res.returncode == 1 and "no flag table for TensorRT 7.1" in res.stdout


# ---------------------------------------------------------------- int64 inputs (8.x parses them as int32)


def token_model() -> onnx.ModelProto:
    """ids[batch,8] int64 -> Gather(embedding 100x16) -> ReduceMean -> MatMul(16x5) -> logits."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((100, 16)).astype(np.float32)
    w = rng.standard_normal((16, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], axis=0, name="emb"),
        helper.make_node("ReduceMean", ["e"], ["p"], axes=[1], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["p", "W"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tok",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_token_bundle(work: Path, ids: np.ndarray) -> Path:
    """A jetson-orin-nano bundle of the token model whose reference inputs are ``ids``."""
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tok.onnx"
    onnx.save(token_model(), model)
    try:
        (y,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    except Exception:  # indices outside the embedding: the reference is never reached
        y = np.zeros((ids.shape[0], 5), np.float32)
    out = work / "out" / "tok"
    make_bundle(
        out,
        model_name="tok",
        model_source=str(model),
        model_sha256="0" * 64,
        target=load_target("jetson-orin-nano"),
        inputs=[TensorSpec("ids", ("batch", 8), "int64")],
        outputs=[TensorSpec("logits", ("batch", 5), "float32")],
        artifacts=[BundleArtifact("fp32", "onnxruntime", model, compare={"passed": True})],
        gates={"min_cosine": 0.999, "min_top1": 0.99},
        reference_inputs={"ids": ids},
        reference_outputs={"logits": y},
        primary="fp32",
    )
    return out


@pytest.mark.parametrize(("version", "release", "itemsize"), [("8602", L4T_36_2, 4), ("100300", None, 8)])
def test_verify_feeds_int64_inputs_in_the_type_the_engine_takes(
    tmp_path: Path, device: Device, version: str, release: str | None, itemsize: int
) -> None:
    """TensorRT 8.x's parser makes an INT64 input int32 (no INT64 before 10.0; docs/tensorrt-facts.md)
    and trtexec reads the file as that many bytes: int64 bytes would be half-read as garbage."""
    ids = np.random.default_rng(0).integers(0, 100, (2, 8)).astype(np.int64)
    bundle = make_token_bundle(tmp_path / "src", ids)
    if release:
        device.set_board(release=release)
    assert device.run(script(bundle, "build_engine.sh"), FAKE_TRT_VERSION=version).returncode == 0
    res = device.run(script(bundle, "verify.sh"), FAKE_TRT_VERSION=version)
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(c for c in device.calls("trtexec") if "--loadInputs=" in c)
    assert "--loadInputs=ids:" in run
    out = tmp_path / "w"
    helper_cmd = [sys.executable, str(bundle / "scripts" / "bundle_helper.py"), "--bundle", str(bundle)]
    env = {**device.env, "FAKE_TRT_VERSION": version}
    done = subprocess.run(
        [
            *helper_cmd,
            "--trtexec",
            str(FAKES / "trtexec"),
            "ref-inputs",
            "--out",
            str(out),
            "--precision",
            "fp32",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "ids.bin").stat().st_size == ids.size * itemsize
    assert np.array_equal(np.fromfile(out / "ids.bin", dtype=f"<i{itemsize}").reshape(2, 8), ids)


def test_an_int64_input_beyond_int32_is_refused_in_one_line_on_tensorrt_8(
    tmp_path: Path, device: Device
) -> None:
    ids = np.full((1, 8), 2**40, np.int64)
    bundle = make_token_bundle(tmp_path / "src", ids)
    device.set_board(release=L4T_36_2)
    trt_header(device.root, "8.6.2")
    cmd = [sys.executable, str(bundle / "scripts" / "bundle_helper.py"), "--bundle", str(bundle)]
    res = subprocess.run(
        [*cmd, "ref-inputs", "--out", str(tmp_path / "w"), "--precision", "fp32"],
        capture_output=True,
        text=True,
        env=device.env,
        timeout=60,
    )
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"value {2**40} does not fit int32" in res.stderr and "TensorRT 8.6.2" in res.stderr


def test_fake_trtexec_refuses_an_input_file_of_another_size(bundle: Path, device: Device) -> None:
    """The fake stands for trtexec's loadFromFile, which reads exactly the binding's bytes."""
    assert device.run(script(bundle, "build_engine.sh")).returncode == 0
    engine = bundle / "device" / "engines" / "dense.fp16.engine"
    short = bundle / "device" / "short.bin"
    np.zeros((1, 1, 8, 8), np.float32).tofile(short)
    res = subprocess.run(
        [
            str(FAKES / "trtexec"),
            f"--loadEngine={engine}",
            f"--loadInputs=input:{short}",
            "--shapes=input:2x1x8x8",
            "--iterations=1",
            "--warmUp=0",
            "--duration=0",
        ],
        capture_output=True,
        text=True,
        env=device.env,
        timeout=60,
    )
    assert res.returncode == 1 and "Expected: 512 bytes but the file has 256 bytes" in res.stdout


# ---------------------------------------------------------------- --tool auto asks edgedeploy itself


def test_auto_builds_with_trtexec_when_edgedeploys_own_python_lacks_tensorrt(
    bundle: Path, device: Device, tmp_path: Path
) -> None:
    """JetPack's python3 has tensorrt, edgedeploy's venv does not: `import tensorrt` in $PYTHON said
    yes, and the edgedeploy build failed; edgedeploy's own doctor decides now."""
    site = tmp_path / "system-site"
    site.mkdir()
    (site / "tensorrt.py").write_text("__version__ = '10.3.0'\n")
    pythonpath = os.pathsep.join(filter(None, [str(site), device.env.get("PYTHONPATH")]))
    res = device.run(script(bundle, "build_engine.sh"), PYTHONPATH=pythonpath)
    assert res.returncode == 0, res.stdout + res.stderr
    assert device.calls("edgedeploy") and device.calls("edgedeploy")[0].startswith("edgedeploy doctor --json")
    assert not [c for c in device.calls("edgedeploy") if c.startswith("edgedeploy build")]
    assert [c for c in device.calls("trtexec") if "--onnx=" in c]
    assert "edgedeploy cannot use TensorRT here (tensorrt: not installed" in res.stdout


def test_auto_builds_with_edgedeploy_when_its_python_has_tensorrt(bundle: Path, device: Device) -> None:
    """The reverse: $PYTHON (system python3) lacks tensorrt, the interpreter edgedeploy runs on has it."""
    res = device.run(script(bundle, "build_engine.sh"), FAKE_EDGEDEPLOY_TRT="1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [c for c in device.calls("edgedeploy") if c.startswith("edgedeploy build")]
    assert not [c for c in device.calls("trtexec") if "--onnx=" in c]
    built = read_sidecar(bundle / "device" / "engines" / "dense.fp16.engine")
    assert built is not None and built["tool"] == "edgedeploy"


def test_edgedeploy_usable_reads_the_real_doctor_report(bundle: Path, tmp_path: Path) -> None:
    """The checks the helper needs are named as edgedeploy doctor names them."""
    import dataclasses

    from edgedeploy.fileio import atomic_write_json
    from edgedeploy.pipeline.doctor import _gpu_checks

    checks = _gpu_checks()
    assert set(bundle_helper.EDGEDEPLOY_NEEDS) <= {c.name for c in checks}

    def verdict(report: list[object]) -> str:
        atomic_write_json(tmp_path / "doctor.json", report)
        cmd = [sys.executable, str(bundle / "scripts" / "bundle_helper.py"), "--bundle", str(bundle)]
        done = subprocess.run(
            [*cmd, "edgedeploy-usable", str(tmp_path / "doctor.json")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    missing = [dataclasses.replace(c, ok=False, detail="not installed") for c in checks]
    assert verdict(missing).startswith("no: tensorrt: not installed; pycuda: not installed")
    assert verdict([dataclasses.replace(c, ok=True) for c in checks]) == "yes"
    (tmp_path / "doctor.json").unlink()
    done = subprocess.run(
        [
            sys.executable,
            str(bundle / "scripts" / "bundle_helper.py"),
            "--bundle",
            str(bundle),
            "edgedeploy-usable",
            str(tmp_path / "doctor.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("no: ")


# ---------------------------------------------------------------- the calibration cache's header


def _with_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its input quantized (QuantizeLinear -> DequantizeLinear): a Q/DQ model."""
    from onnx import helper, numpy_helper

    name = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = [f"{name}_dq" if i == name else i for i in node.input]
    model.graph.initializer.extend(
        [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z")]
    )
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"]))
    model.graph.node.insert(0, helper.make_node("QuantizeLinear", [name, "s", "z"], [f"{name}_q"]))
    onnx.checker.check_model(model, full_check=True)
    return model


def make_int8_bundle(work: Path, header: str, qdq: bool = False) -> Path:
    """A jetson-orin-nano bundle whose int8 artifact is the fp32 ONNX (``qdq``: a Q/DQ model) plus
    a calibration cache with first line ``header`` (TensorRT 8.x's implicit quantization path)."""
    work.mkdir(parents=True, exist_ok=True)
    from conftest import dense_model

    model = work / "dense.onnx"
    onnx.save(_with_qdq(dense_model(False)) if qdq else dense_model(False), model)
    cache = work / "dense.calib.cache"
    cache.write_text(f"{header}\ninput: 3c010a14\nlogits: 3d8b2a1c\n")
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    out = work / "out" / "dense-int8"
    make_bundle(
        out,
        model_name="dense",
        model_source=str(model),
        model_sha256="0" * 64,
        target=load_target("jetson-orin-nano"),
        inputs=[TensorSpec("input", ("batch", 1, 8, 8), "float32")],
        outputs=[TensorSpec("logits", ("batch", 10), "float32")],
        artifacts=[
            BundleArtifact("fp32", "onnxruntime", model, compare={"passed": True}),
            BundleArtifact("int8", "tensorrt", model, calibration_cache=cache, compare={"passed": True}),
        ],
        gates={"min_cosine": 0.99},
        reference_inputs={"input": x},
        reference_outputs={"logits": y},
        primary="int8",
    )
    return out


@pytest.mark.parametrize(
    ("header", "refused"),
    [
        ("TRT-8502-EntropyCalibration2", None),
        ("TRT-8602-EntropyCalibration2", "TensorRT 8.6.2"),
        ("TRT-100300-MinMaxCalibration", "TensorRT 10.3.0"),
        ("not a cache", "not a TensorRT calibration cache"),
    ],
)
def test_trtexec_path_refuses_a_calibration_cache_for_another_tensorrt(
    tmp_path: Path, device: Device, header: str, refused: str | None
) -> None:
    """TensorRT ignores a cache whose header names another version (docs/tensorrt-facts.md): the
    device refuses it before trtexec runs, as edgedeploy build does (trt_plan.check_cache_header)."""
    bundle = make_int8_bundle(tmp_path / "src", header)
    device.set_board(release=R35, cuda="11.4.315")  # JetPack 5.1.2: TensorRT 8.5.2
    res = device.run(script(bundle, "build_engine.sh"), "--precision", "int8", FAKE_TRT_VERSION="8502")
    builds = [c for c in device.calls("trtexec") if "--onnx=" in c]
    if refused is None:
        assert res.returncode == 0, res.stdout + res.stderr
        assert "--calib=" in builds[0]
        return
    assert res.returncode == 2 and not builds, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and refused in errors[0], res.stderr
    if header.startswith("TRT-"):
        assert "this device has TensorRT 8.5.2 (code 8502)" in errors[0]
        assert "--trt-version 8.5.2" in errors[0] and "edgedeploy calibrate dense.onnx" in errors[0]


def _int8_entry(bundle: Path) -> dict[str, object]:
    artifacts = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    return next(a for a in artifacts if a["precision"] == "int8")


def test_a_qdq_model_builds_without_the_cache_whatever_its_header(tmp_path: Path, device: Device) -> None:
    """TensorRT 8.x quantizes a Q/DQ model from its own scales, and edgedeploy build gives it no
    cache (trt_plan); the device gave it one all the same, and refused the build for a cache header
    of another release that TensorRT would not have read anyway."""
    bundle = make_int8_bundle(tmp_path / "src", "TRT-8602-EntropyCalibration2", qdq=True)
    assert _int8_entry(bundle)["qdq"] is True
    device.set_board(release=R35, cuda="11.4.315")  # JetPack 5.1.2: TensorRT 8.5.2
    res = device.run(script(bundle, "build_engine.sh"), "--precision", "int8", FAKE_TRT_VERSION="8502")
    assert res.returncode == 0, res.stdout + res.stderr
    builds = [c for c in device.calls("trtexec") if "--onnx=" in c]
    assert builds and "--int8" in builds[0] and "--calib=" not in builds[0]
    assert _int8_entry(make_int8_bundle(tmp_path / "plain", "TRT-8502-EntropyCalibration2"))["qdq"] is False


def test_the_devices_cache_header_rule_is_edgedeploy_builds(tmp_path: Path) -> None:
    """bundle_helper keeps its own copy of trt_plan.check_cache_header (the device has no edgedeploy):
    both accept and refuse the same headers for the same versions."""
    from edgedeploy.backends.trt_plan import check_cache_header
    from edgedeploy.backends.trt_versions import TrtVersion
    from edgedeploy.errors import InputError

    cache = tmp_path / "models" / "m.calib.cache"
    cache.parent.mkdir()
    art = {"calibration_cache": "models/m.calib.cache"}
    manifest = {"artifacts": [], "target": {"name": "jetson-orin-nano"}}
    headers = ["TRT-8201-EntropyCalibration2", "TRT-8602-MinMaxCalibration", "TRT-100300-EntropyCalibration2"]
    headers += ["TRT-110100-X", "TRT-8602", "trt-8602-Entropy2", "", "TRT-8602-Entropy Calibration"]
    for version in ("8.2.1", "8.5.2", "8.6.2", "10.3.0", "11.1.0"):
        assert bundle_helper.cache_code(version) == TrtVersion.parse(version).cache_code
        for header in headers:
            cache.write_text(f"{header}\ninput: 3c010a14\n")
            try:
                check_cache_header(cache, TrtVersion.parse(version))
                host = True
            except InputError:
                host = False
            try:
                bundle_helper.check_cache_header(tmp_path, manifest, art, version)
                device = True
            except bundle_helper.BundleProblem:
                device = False
            assert host is device, (version, header)


@pytest.mark.parametrize("tool", ["trtexec", "edgedeploy"])
def test_the_sidecar_of_a_moved_bundle_s_engine_names_that_bundle_s_model(
    tool: str, plan_bundle: Path, device: Device, tmp_path: Path
) -> None:
    """build_engine.sh's sidecar recorded the model by its absolute path in the bundle as it lay at
    the build (trtexec path; the --onnx flag too), or by edgedeploy build's path from the folder it
    built in, one level below the engine's (edgedeploy path): once the bundle folder was moved or
    copied on the board, the sidecar named a file gone, or another bundle's. Each record is now the
    path from the sidecar's own folder (docs/design.md, "Engines, their shape profile and the data
    they run on"), and the flags name the bundle's folder as {bundle}."""
    import hashlib
    import shutil

    from edgedeploy.backends.trt_sidecar import recorded_path

    env = {"PATH": path_with_fake_edgedeploy(device, tmp_path)} if tool == "edgedeploy" else {}
    res = device.run(script(plan_bundle, "build_engine.sh"), "--tool", tool, **env)
    assert res.returncode == 0, res.stdout + res.stderr
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    shutil.move(str(plan_bundle), str(moved))
    engine = moved / "device" / "engines" / "dense.fp16.engine"
    text = (engine.parent / (engine.name + ".json")).read_text()
    assert str(plan_bundle) not in text and str(plan_bundle.resolve()) not in text, text
    built = read_sidecar(engine)
    assert built is not None
    model = recorded_path(engine, built["inputs"]["model"])
    assert model is not None and model.resolve() == (moved / "models" / "dense.fp16.onnx").resolve()
    assert built["inputs"]["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # and the board still takes the engine as its own there
    res = device.run(script(moved, "build_engine.sh"), "--tool", tool, **env)
    assert res.returncode == 0 and "up to date" in res.stdout, res.stdout + res.stderr


def test_the_device_s_input_records_are_edgedeploy_s(tmp_path: Path) -> None:
    """bundle_helper.relative_record is a copy of trt_sidecar.relative_record (the board has no
    edgedeploy to import): the two write the same record, through a symlinked folder too."""
    from edgedeploy.backends import trt_sidecar

    (tmp_path / "b" / "device" / "engines").mkdir(parents=True)
    (tmp_path / "b" / "models").mkdir()
    model = tmp_path / "b" / "models" / "m.onnx"
    model.write_bytes(b"onnx")
    (tmp_path / "link").symlink_to(tmp_path / "b")
    for root in (tmp_path / "b", tmp_path / "link"):
        folder = root / "device" / "engines"
        ours = bundle_helper.relative_record(root / "models" / "m.onnx", folder)
        assert ours == trt_sidecar.relative_record(model, folder / "m.engine.json")
        assert trt_sidecar.recorded_path(folder / "m.engine", ours) == folder / "../../models/m.onnx"
