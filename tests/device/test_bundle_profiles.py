"""Shape profiles from ``edgedeploy bundle`` to the board (issue 10's leftovers).

``edgedeploy bundle`` of separately made artifacts records the profiles the device builds with;
build_engine.sh passes every profile to trtexec (``--profile=N`` groups from TensorRT 9, refused in
one line on trtexec 8.x, which builds one) and to ``edgedeploy build``; benchmark.sh refuses a
--batch no profile takes, in one line, before anything runs. The fake trtexec parses shape flags
per release as trtexec does (docs/tensorrt-facts.md, "trtexec", shape profiles) and refuses run
shapes outside the profile it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import Device, dense_model, make_dense_bundle
from onnx import TensorProto, helper

from calibration.modelinfo import TensorSpec, shape_text
from edgedeploy.device import bundle_helper
from edgedeploy.errors import InputError
from edgedeploy.options import parse_profiles
from edgedeploy.pipeline.pack import build_settings
from edgedeploy.targets import load_target
from tests.conftest import run_in_process as cli
from tests.conftest import validate_manifest

R35 = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref"
SMALL = {"input": {"min": [1, 1, 8, 8], "opt": [1, 1, 8, 8], "max": [4, 1, 8, 8]}}
LARGE = {"input": {"min": [8, 1, 8, 8], "opt": [16, 1, 8, 8], "max": [32, 1, 8, 8]}}


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("==>")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    onnx.save(dense_model(False), root / "dense.onnx")
    onnx.save(dense_model(True), root / "dense.fp16.onnx")
    # a dynamic spatial model: input [batch, 1, height, width] -> ReduceMean over H and W
    node = helper.make_node("GlobalAveragePool", ["input"], ["pooled"])
    graph = helper.make_graph(
        [node],
        "spatial",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 1, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, root / "spatial.onnx")
    np.savez(root / "spatial.npz", input=np.ones((2, 1, 6, 6), np.float32))
    return root


def test_bundle_of_separate_artifacts_records_batch_1_to_the_reference_batch(
    models: Path, tmp_path: Path
) -> None:
    code, _, err = cli(
        "bundle", models / "dense.onnx", models / "dense.fp16.onnx", "--target", "jetson-orin-nano",
        "--min-cosine", "0.9", "-o", tmp_path / "b",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    validate_manifest(manifest)
    reference_batch = np.load(tmp_path / "b" / "reference" / "inputs.npz")["input"].shape[0]
    assert manifest["build"] == {
        "profiles": [
            {
                "input": {
                    "min": [1, 1, 8, 8],
                    "opt": [reference_batch, 1, 8, 8],
                    "max": [reference_batch, 1, 8, 8],
                }
            }
        ],
        "tf32": True,
    }


def test_bundle_records_every_given_profile_and_checks_them(models: Path, tmp_path: Path) -> None:
    args = ["bundle", models / "dense.onnx", models / "dense.fp16.onnx", "--target", "jetson-orin-nano"]
    two = ["--profile", "input:1x1x8x8,1x1x8x8,4x1x8x8", "--profile", "input:8x1x8x8,16x1x8x8,32x1x8x8"]
    code, _, err = cli(*args, "--min-cosine", "0.9", *two, "-o", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["build"]["profiles"] == [SMALL, LARGE]
    # the reference batch (8) must fit a profile: verify.sh runs it on the device
    code, _, err = cli(*args, "--profile", "input:1x1x8x8,1x1x8x8,4x1x8x8", "-o", tmp_path / "c")
    assert code == 2 and "lies outside every shape profile" in one_line(err)
    code, _, err = cli(*args, "--profile", "image:1x1x8x8,1x1x8x8,8x1x8x8", "-o", tmp_path / "c")
    assert code == 2 and "no such input" in one_line(err)
    code, _, err = cli(*args, "--profile", "input:1x1x8x8,1x2x8x8,8x1x8x8", "-o", tmp_path / "c")
    assert code == 2 and "min <= opt <= max" in one_line(err)
    assert not (tmp_path / "c").exists()


def test_dynamic_spatial_dims_need_a_profile_on_a_gpu_target_only(models: Path, tmp_path: Path) -> None:
    args = ["bundle", models / "spatial.onnx", "--data", models / "spatial.npz"]
    code, _, err = cli(*args, "--target", "jetson-orin-nano", "-o", tmp_path / "gpu")
    line = one_line(err)
    assert code == 2 and "dynamic dims" in line and "--profile input:" in line
    code, _, err = cli(*args, "--target", "x86-64-cpu", "-o", tmp_path / "cpu")
    assert code == 0, err
    assert json.loads((tmp_path / "cpu" / "manifest.json").read_text())["build"]["profiles"] == []
    profile = "input:1x1x4x4,2x1x6x6,4x1x16x16"
    code, _, err = cli(*args, "--target", "jetson-orin-nano", "--profile", profile, "-o", tmp_path / "gpu")
    assert code == 0, err
    recorded = json.loads((tmp_path / "gpu" / "manifest.json").read_text())["build"]["profiles"]
    assert recorded == [{"input": {"min": [1, 1, 4, 4], "opt": [2, 1, 6, 6], "max": [4, 1, 16, 16]}}]


def test_the_device_readme_gives_a_dynamic_model_s_profile_reference_and_timed_shapes(
    models: Path, tmp_path: Path
) -> None:
    """A GPU bundle's README showed only `[batch, 1, h, w]` for a dynamic model: not the profile the
    engine is built with (the manifest's build.profiles), nor the reference inputs' shape, nor the
    shape benchmark.sh times at (the profile's opt shape on a GPU, the reference shape on a CPU)."""
    args = ["bundle", models / "spatial.onnx", "--data", models / "spatial.npz"]
    profile = "input:1x1x4x4,2x1x8x8,4x1x16x16"
    code, _, err = cli(*args, "--target", "jetson-orin-nano", "--profile", profile, "-o", tmp_path / "gpu")
    assert code == 0, err
    gpu = (tmp_path / "gpu" / "README.md").read_text()
    assert "| `input` | [1, 1, 4, 4] | [2, 1, 8, 8] | [4, 1, 16, 16] |" in gpu, gpu
    assert "`verify.sh` runs the reference inputs: `input` [2, 1, 6, 6]." in gpu, gpu
    assert (
        "`benchmark.sh` times batch 1 at `input:1x1x8x8` (the profile's opt shape at that batch; "
        "`--batch N` for another batch the profile takes)." in gpu
    ), gpu
    two = ["--profile", profile, "--profile", "input:1x1x4x4,8x1x32x32,16x1x64x64"]
    code, _, err = cli(*args, "--target", "jetson-orin-nano", *two, "-o", tmp_path / "two")
    assert code == 0, err
    both = (tmp_path / "two" / "README.md").read_text()
    assert "| 1 | `input` | [1, 1, 4, 4] | [8, 1, 32, 32] | [16, 1, 64, 64] |" in both, both

    code, _, err = cli(*args, "--target", "x86-64-cpu", "-o", tmp_path / "cpu")
    assert code == 0, err
    cpu = (tmp_path / "cpu" / "README.md").read_text()
    assert "| min | opt | max |" not in cpu, cpu  # no engine is built there
    assert "`verify.sh` runs the reference inputs: `input` [2, 1, 6, 6]." in cpu, cpu
    assert (
        "`benchmark.sh` times batch 1 at `input:1x1x6x6` (the reference inputs' shape at that batch; "
        "`--batch N` for another)." in cpu
    ), cpu


def _engine(root: Path, name: str, profiles: list[dict[str, list[list[int]]]], tf32: bool = True) -> Path:
    engine = root / name
    engine.write_bytes(b"plan")
    sidecar = {"format": "edgedeploy.engine/1", "tf32": tf32, "plan": {"profiles": profiles}}
    (root / f"{name}.json").write_text(json.dumps(sidecar))
    return engine


def test_bundle_takes_the_profiles_its_engines_were_built_with(models: Path, tmp_path: Path) -> None:
    spec = TensorSpec("input", ("batch", 1, 8, 8), "float32")
    built = [{"input": [[1, 1, 8, 8], [4, 1, 8, 8], [16, 1, 8, 8]]}]
    engines = [
        _engine(tmp_path, "a.fp16.engine", built, tf32=False),
        _engine(tmp_path, "a.int8.engine", built),
    ]
    ref = {"input": np.zeros((8, 1, 8, 8), np.float32)}
    gpu = load_target("jetson-orin-nano")
    settings = build_settings(models / "dense.onnx", [spec], engines, gpu, ref, [])
    recorded = [{"input": {"min": [1, 1, 8, 8], "opt": [4, 1, 8, 8], "max": [16, 1, 8, 8]}}]
    assert settings == {"profiles": recorded, "tf32": False}
    other = _engine(tmp_path, "b.int8.engine", [{"input": [[1, 1, 8, 8], [2, 1, 8, 8], [2, 1, 8, 8]]}])
    with pytest.raises(InputError, match="different shape profiles"):
        build_settings(models / "dense.onnx", [spec], [engines[0], other], gpu, ref, [])


def test_repeating_an_input_in_profile_options_starts_the_next_profile() -> None:
    profiles = parse_profiles(["x:1x3,2x3,4x3", "y:1,1,1", "x:8x3,8x3,16x3", "y:2,2,2"])
    assert [sorted(p.shapes) for p in profiles] == [["x", "y"], ["x", "y"]]
    assert profiles[1].shapes["x"] == ((8, 3), (8, 3), (16, 3))
    assert len(parse_profiles(["x:1x3,2x3,4x3", "y:1,1,1"])) == 1


# ------------------------------------------------------------------ on the (fake) board


@pytest.fixture(scope="module")
def two_profile_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dense_bundle(
        tmp_path_factory.mktemp("two-profiles"), batch=8, build={"profiles": [SMALL, LARGE]}
    )


@pytest.fixture
def two_profiles(two_profile_src: Path, tmp_path: Path) -> Path:
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(two_profile_src, dest)
    return dest


def script(bundle: Path, name: str) -> Path:
    return bundle / "scripts" / name


def test_trtexec_10_builds_every_profile_of_the_bundle(two_profiles: Path, device: Device) -> None:
    res = device.run(script(two_profiles, "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    at = argv.index("--profile=0")
    assert argv[at : at + 8] == [
        "--profile=0", "--minShapes=input:1x1x8x8", "--optShapes=input:1x1x8x8",
        "--maxShapes=input:4x1x8x8",
        "--profile=1", "--minShapes=input:8x1x8x8", "--optShapes=input:16x1x8x8",
        "--maxShapes=input:32x1x8x8",
    ]  # fmt: skip
    engine = two_profiles / "device" / "engines" / "dense.fp16.engine"
    built = json.loads(engine.read_text())["profiles"]  # what the fake trtexec parsed, as trtexec does
    expected = [
        {"input": [[1, 1, 8, 8], [1, 1, 8, 8], [4, 1, 8, 8]]},
        {"input": [[8, 1, 8, 8], [16, 1, 8, 8], [32, 1, 8, 8]]},
    ]
    assert built == expected
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert sidecar["plan"]["profiles"] == expected
    # verify.sh runs the reference batch (8): it lies in profile 1, which trtexec must be told
    res = device.run(script(two_profiles, "verify.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(c for c in device.calls("trtexec") if "--loadEngine" in c).split()
    assert "--shapes=input:8x1x8x8" in run and "--useProfile=1" in run


def test_trtexec_8_refuses_a_bundle_with_two_profiles_in_one_line(two_profiles: Path, device: Device) -> None:
    device.set_board(release=R35, cuda="11.4.315")
    res = device.run(script(two_profiles, "build_engine.sh"), FAKE_TRT_VERSION="8601")
    assert res.returncode == 2, res.stdout + res.stderr
    line = one_line(res.stderr)
    assert "2 shape profiles" in line and "trtexec 8.6.1 builds one" in line and "--tool edgedeploy" in line
    assert not [c for c in device.calls("trtexec") if "--onnx=" in c]
    assert not (two_profiles / "device" / "engines" / "dense.fp16.engine").exists()


def test_fake_trtexec_8_refuses_repeated_shape_flags_as_the_real_one_does(
    two_profiles: Path, device: Device
) -> None:
    """The ground truth behind the refusal: 8.6.1's getShapesBuild takes one --minShapes, and
    trtexec reports what is left as an unknown option (docs/tensorrt-facts.md, "trtexec")."""
    flags = ["--onnx=" + str(two_profiles / "models" / "dense.fp16.onnx"), "--minShapes=input:1x1x8x8",
             "--minShapes=input:8x1x8x8", "--saveEngine=" + str(device.root / "x.engine")]  # fmt: skip
    fake = Path(__file__).parent / "fakes" / "trtexec"
    env = {**device.env, "FAKE_TRT_VERSION": "8601"}
    res = subprocess.run(
        [sys.executable, str(fake), *flags], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 1 and "Unknown option: --minShapes" in res.stdout


def test_edgedeploy_path_gets_every_profile(two_profiles: Path, device: Device, tmp_path: Path) -> None:
    from tests.device.test_trtexec_releases import path_with_fake_edgedeploy

    path = path_with_fake_edgedeploy(device, tmp_path)
    res = device.run(script(two_profiles, "build_engine.sh"), "--tool", "edgedeploy", PATH=path)
    assert res.returncode == 0, res.stdout + res.stderr
    call = device.calls("edgedeploy")[0].split()
    given = [a.split("=", 1)[1] for a in call if a.startswith("--profile=")]
    assert given == ["input:1x1x8x8,1x1x8x8,4x1x8x8", "input:8x1x8x8,16x1x8x8,32x1x8x8"]
    parsed = parse_profiles(given)  # how `edgedeploy build` on the board reads them
    assert [p.shapes["input"][2] for p in parsed] == [(4, 1, 8, 8), (32, 1, 8, 8)]


def test_benchmark_refuses_a_batch_outside_the_profiles_and_picks_the_profile_of_one_inside(
    two_profiles: Path, device: Device
) -> None:
    assert device.run(script(two_profiles, "build_engine.sh")).returncode == 0
    bench = ["--duration", "0.1", "--warmup", "0"]
    runs_before = len(device.calls("trtexec"))
    for batch in ("64", "6"):  # above both; between them
        res = device.run(script(two_profiles, "benchmark.sh"), "--batch", batch, *bench)
        assert res.returncode == 2, res.stdout + res.stderr
        line = one_line(res.stderr)
        assert f"--batch {batch} is outside the engine's shape profile (batch 1..4 or 8..32)" in line
    assert not [c for c in device.calls("trtexec")[runs_before:] if "--loadEngine" in c]
    assert not list((two_profiles / "device" / "results").glob("benchmark-*.json"))
    res = device.run(script(two_profiles, "benchmark.sh"), "--batch", "16", *bench)
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(c for c in device.calls("trtexec") if "--loadEngine" in c).split()
    assert "--shapes=input:16x1x8x8" in run and "--useProfile=1" in run
    result = json.loads((two_profiles / "device" / "results" / "benchmark-fp16-b16.json").read_text())
    assert result["settings"]["batch"] == 16
    res = device.run(script(two_profiles, "benchmark.sh"), *bench)  # default batch 1: profile 0
    assert res.returncode == 0, res.stdout + res.stderr
    assert (two_profiles / "device" / "results" / "benchmark-fp16-b1.json").is_file()


def test_benchmark_with_edgedeploy_times_a_batch_of_the_second_profile(
    two_profiles: Path, device: Device
) -> None:
    """``benchmark.sh --tool edgedeploy --batch 16`` refused "edgedeploy profile runs profile 0 only",
    though ``edgedeploy profile ENGINE --batch-sizes 16`` runs it in the profile that takes it."""
    assert device.run(script(two_profiles, "build_engine.sh")).returncode == 0
    args = ["--tool", "edgedeploy", "--batch", "16", "--duration", "0.1", "--warmup", "0"]
    res = device.run(script(two_profiles, "benchmark.sh"), *args)
    assert res.returncode == 0, res.stdout + res.stderr
    profiled = [c.split() for c in device.calls("edgedeploy") if c.startswith("edgedeploy profile")]
    assert len(profiled) == 1 and profiled[0][profiled[0].index("--batch-sizes") + 1] == "16"
    assert (two_profiles / "device" / "results" / "benchmark-fp16-b16.json").is_file()
    res = device.run(script(two_profiles, "benchmark.sh"), *args[:2], "--batch", "6", *args[4:])
    assert res.returncode == 2
    assert "outside the engine's shape profile (batch 1..4 or 8..32)" in one_line(res.stderr)


def manifest(shape: list[object]) -> dict:
    return {"io": {"inputs": [{"name": "input", "shape": shape}]}}


def test_batch_run_rules_for_static_inputs_old_trtexec_and_edgedeploy_profile() -> None:
    profiles = [{"input": [[1, 1], [1, 1], [4, 1]]}, {"input": [[8, 1], [16, 1], [32, 1]]}]
    dynamic = manifest(["batch", 1])
    assert bundle_helper.batch_run(dynamic, profiles, 16, "10.3.0") == (
        16,
        ["--shapes=input:16x1", "--useProfile=1"],
    )
    assert bundle_helper.batch_run(dynamic, profiles, None, "10.3.0") == (1, ["--shapes=input:1x1"])
    with pytest.raises(bundle_helper.BundleProblem, match=r"trtexec 8\.6\.1 runs profile 0 only"):
        bundle_helper.batch_run(dynamic, profiles, 16, "8.6.1")
    # edgedeploy profile picks the profile that takes the batch itself (runtime/engine.py)
    assert bundle_helper.batch_run(dynamic, profiles, 16, None) == (16, ["--shapes=input:16x1"])
    # a profile that starts above 1: the default batch is its opt
    assert bundle_helper.batch_run(dynamic, profiles[1:], None, "10.3.0")[0] == 16
    static = manifest([4, 1])
    assert bundle_helper.batch_run(static, None, None, "10.3.0") == (4, [])
    with pytest.raises(bundle_helper.BundleProblem, match="fixed batch of 4"):
        bundle_helper.batch_run(static, None, 2, "10.3.0")


VAD_INPUTS = [
    {"name": "input", "shape": ["batch", 512]},
    {"name": "state", "shape": [2, "batch", 128]},
    {"name": "sr", "shape": []},
]


def test_run_shapes_set_the_batch_on_every_axis_the_model_names_as_the_batch() -> None:
    """silero-vad's input[batch, 512] beside state[2, batch, 128] and a scalar sr: ``run-shapes
    --runner trtexec --batch 1`` gave ``--shapes=input:1x512,state:2x4x128,sr:``, the state at the
    profile's opt batch beside input's 1. ``sr:`` is right: trtexec's --help (TensorRT 10 and 11)
    reads "For scalars (0-D shapes), use input0:scalar or simply input0: with nothing after the
    colon", and 8.x splits the empty value into no dims."""
    vad = {"io": {"inputs": VAD_INPUTS}}
    profiles = [
        {
            "input": [[1, 512], [4, 512], [8, 512]],
            "state": [[2, 1, 128], [2, 4, 128], [2, 8, 128]],
            "sr": [[]] * 3,
        }
    ]
    run = bundle_helper.batch_run(vad, profiles, 1, "10.3.0")
    assert run == (1, ["--shapes=input:1x512,state:2x1x128,sr:"])
    assert bundle_helper.batch_run(vad, profiles, 8, "")[1] == ["--shapes=input:8x512,state:2x8x128,sr:"]
    assert bundle_helper._io_shapes(vad, 2) == {"input": [2, 512], "state": [2, 2, 128], "sr": []}
    # no recorded profile: the state's batch is ranged as the input's (it was refused as a dim
    # "besides the batch"); a recorded one is widened on both by --max-batch (sr's [] failed it)
    assert bundle_helper.input_profiles(vad, 16) == [
        {
            "input": [[1, 512], [16, 512], [16, 512]],
            "state": [[2, 1, 128], [2, 16, 128], [2, 16, 128]],
        }  # a static input (sr) has no range: its [] / [] / [] failed write-sidecar's int('')
    ]
    recorded = {
        "input": {"min": [1, 512], "opt": [4, 512], "max": [8, 512]},
        "state": {"min": [2, 1, 128], "opt": [2, 4, 128], "max": [2, 8, 128]},
    }
    widened = bundle_helper.input_profiles({**vad, "build": {"profiles": [recorded]}}, 16)
    assert widened is not None
    assert widened[0]["input"][2] == [16, 512] and widened[0]["state"][2] == [2, 16, 128]


@pytest.mark.parametrize(
    "shapes",
    [
        [["batch", 512], [2, "batch", 128], []],  # silero-vad
        [["N", "T", 8], ["N", "T", 8]],
        [[12, "N", 8], [1, "N", 16]],  # a time-first GRU: no dim 0 named, the one shared name
        [[1, "seq"], [1, "seq"]],  # a fixed batch of 1: seq is no batch
        [[None, 3], [None, 5], [8]],
        [["?", 3, "?", "?"], [2, "?"]],
        [[2, 8]],
    ],
)
def test_the_helpers_batch_axes_are_edgedeploys(shapes: list[list[int | str | None]]) -> None:
    """The device helper's copy of the rule that says which axes carry the batch."""
    from calibration.modelinfo import batch_axes, batch_names

    specs = [TensorSpec(f"i{n}", tuple(shape), "float32") for n, shape in enumerate(shapes)]
    names = batch_names(specs)
    inputs = [{"name": s.name, "shape": list(s.shape)} for s in specs]
    assert bundle_helper.batch_axes(inputs) == {s.name: batch_axes(s.shape, names) for s in specs}


def test_a_cpu_bundle_names_a_profile_command_whose_shapes_agree_on_a_batch_named_twice(
    tmp_path: Path, device: Device
) -> None:
    """silero-vad's input[batch, sequence] beside state[2, batch, 128]: benchmark.sh of a CPU
    bundle suggested ``profile --input=input:1x512 --input=state:2x8x128`` (the batch set to 1 on
    axis 0 only), which profile refused: "share the dim 'batch' but have 1 and 8"."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),  # [batch, 1]
            helper.make_node("Add", ["state", "m"], ["state_n"]),  # [2, batch, 4] + [batch, 1]
        ],
        "vad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
        ],
        [helper.make_tensor_value_info("state_n", TensorProto.FLOAT, [2, "batch", 4])],
    )
    model = tmp_path / "vad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    code, _, err = cli("bundle", model, "-o", tmp_path / "b", "--input", "x:8x16")
    assert code == 0, err
    res = device.run(tmp_path / "b" / "scripts" / "benchmark.sh", PATH=device.path_without_edgedeploy())
    assert res.returncode == 2, res.stderr
    suggested = res.stderr.strip().split("measure it with: ")[-1].split()
    assert suggested[:3] == ["edgedeploy", "profile", str(tmp_path / "b" / "models" / "vad.onnx")]
    assert suggested[3:] == ["--input=x:1x16"]  # the state's batch comes with x's
    code, _, err = cli(*suggested[1:], "--iterations", "3")
    assert code == 0, err


def test_a_cpu_bundle_names_a_profile_command_at_the_asked_batch(tmp_path: Path, device: Device) -> None:
    """benchmark.sh --batch 4 of a CPU bundle suggested ``profile --input=x:1x16``: batch 1, the
    asked batch dropped. The suggestion takes it, and the state's batch comes with x's."""
    model = _stateful(tmp_path, "sequence")
    code, _, err = cli("bundle", model, "-o", tmp_path / "b", "--input", "x:8x16")
    assert code == 0, err
    no_edgedeploy = device.path_without_edgedeploy()  # a board without it: the command to run
    res = device.run(tmp_path / "b" / "scripts" / "benchmark.sh", "--batch", "4", PATH=no_edgedeploy)
    assert res.returncode == 2, res.stderr
    suggested = res.stderr.strip().split("measure it with: ")[-1].split()
    assert suggested[3:] == ["--input=x:4x16"], res.stderr
    code, _, err = cli(*suggested[1:], "--iterations", "3", "--json", tmp_path / "p.json")
    assert code == 0, err
    assert [b["batch_size"] for b in json.loads((tmp_path / "p.json").read_text())["batches"]] == [4]


def _stateful(tmp_path: Path, sequence: str | int) -> Path:
    """input x[batch, sequence] beside state[2, batch, 4], as silero-vad's input and state."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),  # [batch, 1]
            helper.make_node("Add", ["state", "m"], ["state_n"]),  # [2, batch, 4] + [batch, 1]
        ],
        "vad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sequence]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
        ],
        [helper.make_tensor_value_info("state_n", TensorProto.FLOAT, [2, "batch", 4])],
    )
    model = tmp_path / f"vad{sequence}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), model)
    return model


def test_a_gpu_bundle_ranges_an_input_whose_only_dynamic_dim_is_the_batch_named_elsewhere(
    tmp_path: Path, device: Device
) -> None:
    """silero-vad's state[2, batch, 128] needed a --profile of its own (or was refused as having
    "dynamic dims besides the batch"), though its one dynamic dim is the batch that x's range
    gives: the dim's name says it is one size. It now takes that range, on the device too."""
    model = _stateful(tmp_path, "sequence")
    args = ["bundle", model, "--target", "jetson-orin-nano", "--input", "x:8x16"]
    code, _, err = cli(*args, "--profile", "x:1x16,8x16,8x16", "-o", tmp_path / "b")
    assert code == 0, err
    profiles = json.loads((tmp_path / "b" / "manifest.json").read_text())["build"]["profiles"]
    assert profiles == [
        {
            "x": {"min": [1, 16], "opt": [8, 16], "max": [8, 16]},
            "state": {"min": [2, 1, 4], "opt": [2, 8, 4], "max": [2, 8, 4]},
        }
    ]
    res = device.run(script(tmp_path / "b", "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    assert "--minShapes=x:1x16,state:2x1x4" in argv and "--maxShapes=x:8x16,state:2x8x4" in argv
    # two ranges for one named dim cannot both hold: refused, nothing written
    code, _, err = cli(*args, "--profile", "x:1x16,8x16,8x16", "--profile", "state:2x1x4,2x4x4,2x4x4",
                       "-o", tmp_path / "c")  # fmt: skip
    assert code == 2 and "share the dim 'batch' but are given 1/8/8 and 1/4/4" in one_line(err)
    assert not (tmp_path / "c").exists()
    # with only the batch dynamic (on x's axis 0 and the state's axis 1), no --profile is needed
    # and the state's batch is ranged as x's; before, the state was refused
    code, _, err = cli(
        "bundle", _stateful(tmp_path, 16), "--target", "jetson-orin-nano", "-o", tmp_path / "d"
    )
    assert code == 0, err
    profiles = json.loads((tmp_path / "d" / "manifest.json").read_text())["build"]["profiles"]
    assert profiles[0]["state"] == {"min": [2, 1, 4], "opt": [2, 8, 4], "max": [2, 8, 4]}
    # and a run config names only x's range when it refuses (the state follows it)
    with pytest.raises(InputError, match="input 'x' has dynamic dims"):
        from edgedeploy.pipeline.run import refuse_unranged_dims

        state_and_x = [
            TensorSpec("x", ("batch", "sequence"), "float32"),
            TensorSpec("state", (2, "batch", 4), "float32"),
        ]
        refuse_unranged_dims(state_and_x[::-1], {}, "--profile")


def test_a_refused_input_shows_its_dims_as_listings_do() -> None:
    """The refusal of an input with dynamic dims besides the batch listed them as a Python list,
    ``['batch', 3, '']``: quoted names, and nothing for a dim with neither size nor name. It now
    shows them as TensorSpec.describe() and the bundle README do (calibration.modelinfo.shape_text)."""
    from edgedeploy.pipeline.run import refuse_unranged_dims

    with pytest.raises(InputError) as err:
        refuse_unranged_dims([TensorSpec("x", ("batch", 3, ""), "float32")], {}, "--profile")
    assert "input 'x' has dynamic dims [batch, 3, ?] besides the batch" in str(err.value), err.value


def test_the_device_helper_shows_a_refused_inputs_dims_as_the_main_package_does() -> None:
    """The device helper (build_engine.sh, benchmark.sh of a bundle with no recorded profile)
    refused an input with dynamic dims besides the batch listing them as a Python list,
    ``['N', 3, 'H', '']``, where edgedeploy's own refusal and the bundle README show
    ``[N, 3, H, ?]`` (calibration.modelinfo.shape_text): it now shows them so too."""
    shape = ["N", 3, "H", ""]
    with pytest.raises(bundle_helper.BundleProblem) as err:
        bundle_helper.input_profiles(manifest(shape), None)
    main_package = shape_text(shape, sep=", ")
    assert main_package == "[N, 3, H, ?]"
    said = f"input 'input' has dynamic dims {main_package} besides the batch and the bundle records no"
    assert str(err.value).startswith(said), err.value
    for dims, rank_known in ((["batch", 0, 7, "seq"], True), ([], True), ([], False)):
        assert bundle_helper.shape_text(dims, rank_known) == shape_text(dims, rank_known, ", ")


def test_the_device_readme_lists_the_steps_of_its_targets_kind(tmp_path: Path) -> None:
    """A CPU target's bundle README listed the Jetson steps (JetPack checks, an engine build,
    trtexec timing), which its scripts do not do there; and neither said which precision the
    scripts use."""
    model = _stateful(tmp_path, 16)
    assert cli("bundle", model, "-o", tmp_path / "cpu")[0] == 0
    cpu = (tmp_path / "cpu" / "README.md").read_text()
    assert "build_engine.sh" not in cpu and "JetPack" not in cpu and "ONNX Runtime's outputs" in cpu
    assert "The scripts use the fp32 model unless given `--precision`." in cpu
    assert cli("bundle", model, "--target", "jetson-orin-nano", "-o", tmp_path / "gpu")[0] == 0
    gpu = (tmp_path / "gpu" / "README.md").read_text()
    assert "bash scripts/build_engine.sh" in gpu and "The bundle holds no engine" in gpu


@pytest.mark.parametrize(
    ("name", "shown", "cell"),
    [
        (
            "<img src=x onerror=alert(1)>",
            "&lt;img src=x onerror=alert(1)&gt;",
            "`models/<img src=x onerror=alert(1)>.onnx`",
        ),
        ("a|b", "a\\|b", "`models/a\\|b.onnx`"),
        ("*x*", "\\*x\\*", "`models/*x*.onnx`"),
    ],
)
def test_the_device_readme_escapes_the_names_it_shows(
    tmp_path: Path, name: str, shown: str, cell: str
) -> None:
    """The bundle's README.md wrote the model's name raw into Markdown: a model named
    '<img src=x onerror=...>' was live HTML on GitHub, 'a|b' split the artifact table's row. Names
    are escaped as report.md escapes them; file names are code spans, with | escaped in a table."""
    model = tmp_path / f"{name}.onnx"
    _stateful(tmp_path, 16).rename(model)
    code, _, err = cli("bundle", model, "-o", tmp_path / "b")
    assert code == 0, err
    readme = (tmp_path / "b" / "README.md").read_text()
    assert readme.startswith(f"# {shown} for x86-64-cpu\n")
    assert f"\n| fp32 | onnxruntime | {cell} | - |\n" in readme
    assert "| input | `x` | [batch, 16] | float32 |" in readme


def test_the_device_readme_shows_a_tensor_of_unknown_rank_as_describe_does(tmp_path: Path) -> None:
    """An output the model declares with no shape (not even a rank) was a README row ``| [] |``, a
    made-up 0-d shape, though the manifest says rank_known: false and TensorSpec.describe() prints
    ``y[...]:float32``; the row now reads ``[...]``, and a dim with neither size nor name ``?``."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Shape", ["x"], ["n"])],
        "unranked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ""])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("n", TensorProto.INT64, [2])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "unranked.onnx"
    onnx.save(model, path)
    code, _, err = cli("bundle", path, "--input", "x:2x4", "-o", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    y = next(o for o in manifest["io"]["outputs"] if o["name"] == "y")
    assert y["rank_known"] is False, y
    spec = TensorSpec("y", tuple(y["shape"]), "float32", rank_known=False)
    assert spec.describe() == "y[...]:float32"
    readme = (tmp_path / "b" / "README.md").read_text()
    assert "| output | `y` | [...] | float32 |" in readme, readme
    assert "| input | `x` | [batch, ?] | float32 |" in readme, readme
    assert "| output | `n` | [2] | int64 |" in readme and "| [] |" not in readme, readme


def _dims(flag: str) -> list[int]:
    """``--minShapes=input:1x1x8x8`` -> [1, 1, 8, 8]."""
    return [int(d) for d in flag.split("=", 1)[1].rpartition(":")[2].split("x")]


@pytest.mark.parametrize("build", [None, {"profiles": [], "tf32": True}], ids=["no-build", "no-profiles"])
def test_the_readme_shows_the_profile_build_engine_sh_builds_where_the_bundle_records_none(
    build: dict[str, object] | None, device: Device, tmp_path: Path
) -> None:
    """A GPU bundle whose manifest records no ``build.profiles`` (``run`` and ``matrix`` without
    [build] profiles write an empty list) had a README table of batch 1..1 "(`build.profiles` in
    manifest.json)", while build_engine.sh builds batch 1 to the reference batch, opt at it (and
    the same README said verify.sh runs that batch). The README's table is the profile trtexec is
    given, says where it comes from, and its benchmark.sh line the shapes benchmark.sh runs."""
    bundle = make_dense_bundle(tmp_path / "src", batch=8, build=build)
    readme = (bundle / "README.md").read_text()
    res = device.run(script(bundle, "build_engine.sh"))
    assert res.returncode == 0, res.stdout + res.stderr
    argv = next(c for c in device.calls("trtexec") if "--onnx=" in c).split()
    ranges = [_dims(next(f for f in argv if f.startswith(f"--{k}Shapes="))) for k in ("min", "opt", "max")]
    assert ranges == [[1, 1, 8, 8], [8, 1, 8, 8], [8, 1, 8, 8]]  # batch 1 to the reference batch
    row = "| `input` | " + " | ".join(shape_text(r, True, ", ") for r in ranges) + " |"
    assert row in readme, readme
    assert "`build.profiles` in manifest.json" not in readme, readme
    assert "batch 1 to the reference batch" in readme, readme
    res = device.run(script(bundle, "benchmark.sh"), "--duration", "0.1", "--warmup", "0")
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(c for c in device.calls("trtexec") if "--loadEngine=" in c).split()
    spec = next(f for f in run if f.startswith("--shapes=")).removeprefix("--shapes=")
    assert f"`benchmark.sh` times batch 1 at `{spec}`" in readme, readme
