"""Edges of the pipeline a user meets: existing folders, failed gates, stale or damaged bundles,
relative paths, modules beside the user, fixed input shapes, and models with external data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgedeploy.config import load_config
from edgedeploy.errors import InputError
from edgedeploy.pipeline import run_pipeline
from edgedeploy.targets import load_target
from edgedeploy.ui import Ui
from tests.conftest import Digits, assert_clean_input_error, run_cli, write_run_config


def _config(tmp_path: Path, digits: Digits, extra: str = "", precisions: str = '["fp32", "fp16"]') -> Path:
    return write_run_config(
        tmp_path,
        digits.onnx_path,
        "digits",
        f"""[build]
precisions = {precisions}

[compare]
data = "{digits.test_npz}"
samples = 50
batch_size = 25

[profile]
enabled = false
{extra}
""",
    )


def test_bundle_refuses_to_replace_a_folder_that_is_not_a_bundle(digits: Digits, tmp_path: Path) -> None:
    keep = tmp_path / "models"
    keep.mkdir()
    (keep / "precious.onnx").write_bytes(b"user data")
    result = run_cli("bundle", digits.onnx_path, "-o", keep, "--data", digits.test_npz)
    assert_clean_input_error(result, "not a bundle")
    assert (keep / "precious.onnx").read_bytes() == b"user data"
    here = run_cli("bundle", digits.onnx_path, "-o", ".", "--data", digits.test_npz, cwd=keep)
    assert_clean_input_error(here, "not a bundle")


def test_bundle_with_a_failed_gate_exits_1_and_defaults_to_a_precision_that_passed(
    digits: Digits, tmp_path: Path
) -> None:
    assert run_cli("build", digits.onnx_path, "--precision", "fp16", "-o", tmp_path).code == 0
    result = run_cli("bundle", digits.onnx_path, tmp_path / "digits.fp16.onnx", "--data", digits.test_npz,
                     "--min-cosine", "1.0", "-o", tmp_path / "b")  # fmt: skip
    assert result.code == 1 and "fp16" in result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["primary_precision"] == "fp32"


def test_changed_gates_remake_the_bundle_and_a_damaged_bundle_is_made_again(
    digits: Digits, tmp_path: Path
) -> None:
    path = _config(tmp_path, digits)
    first = run_pipeline(load_config(path))
    assert first.bundle is not None
    bundle = Path(first.bundle["directory"])
    path.write_text(path.read_text().replace("batch_size = 25", "batch_size = 25\nmin_top1 = 0.9"))
    second = run_pipeline(load_config(path))
    assert "bundle" in second.stages_run
    assert json.loads((bundle / "manifest.json").read_text())["gates"]["min_top1"] == 0.9
    next((bundle / "models").glob("*.fp16.onnx")).unlink()
    ui = Ui(quiet=True)
    third = run_pipeline(load_config(path), ui=ui)
    assert third.stages_run == ["bundle"]
    said = [m for m in ui.messages if m.startswith("bundle: ")]
    assert said and "fails its check" in said[0] and "fp16.onnx" in said[0], ui.messages
    assert next((bundle / "models").glob("*.fp16.onnx")).is_file()


def test_a_bundle_output_holding_board_files_is_refused_before_any_work_unless_the_run_is_up_to_date(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` refused a bundle output whose device/ holds what the board wrote (engines, results) only
    at the bundle stage, after every build, compare and profile. It is refused at the config check
    when the folder is not the bundle this workdir's run made, and before the first stage that would
    run again otherwise; a run with nothing to redo does not touch the bundle and still passes."""
    path = _config(tmp_path, digits, extra='\n[bundle]\noutput = "out"\n')
    assert run_pipeline(load_config(path)).bundle is not None
    device = tmp_path / "out" / "device"
    (device / "engines").mkdir(parents=True)
    (device / "engines" / "digits.fp16.engine").write_bytes(b"built on the board")
    (device / "results").mkdir()
    (device / "results" / "verify-fp16.json").write_text("{}")
    again = run_pipeline(load_config(path))  # up to date: nothing rewritten, nothing refused
    assert again.stages_run == [] and (device / "engines" / "digits.fp16.engine").is_file()

    def no_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compared before refusing the bundle output")

    monkeypatch.setattr("edgedeploy.pipeline.run.compare", no_work)
    path.write_text(path.read_text().replace("samples = 50", "samples = 40"))  # compare runs again
    with pytest.raises(InputError, match=r"out/device holds 2 files written on the board"):
        run_pipeline(load_config(path))
    # another workdir's run into that bundle folder: refused at the config check, nothing made
    path.write_text(path.read_text().replace('workdir = "work"', 'workdir = "other"'))
    with pytest.raises(InputError, match=r"out/device holds 2 files written on the board"):
        run_pipeline(load_config(path))
    assert not (tmp_path / "other").exists()
    assert (device / "results" / "verify-fp16.json").read_text() == "{}"


def test_a_primary_precision_that_is_not_built_is_refused_before_any_work(
    digits: Digits, tmp_path: Path
) -> None:
    path = _config(tmp_path, digits, extra='\n[bundle]\nprimary = "int8"\n')
    with pytest.raises(InputError, match=r"bundle\.primary 'int8'"):
        run_pipeline(load_config(path))
    assert not (tmp_path / "work").exists()


def test_build_options_the_target_refuses_are_refused_before_export_in_the_configs_names(
    digits: Digits, tmp_path: Path
) -> None:
    """dla_core = 0 for a board without DLA was refused after the export had run, as "drop
    --dla-core", an option of build that a config does not have."""
    path = _config(tmp_path, digits)
    text = path.read_text()
    assert load_target("jetson-orin-nano").dla_cores == 0
    path.write_text(text.replace("[build]", '[build]\ntarget = "jetson-orin-nano"\ndla_core = 0', 1))
    with pytest.raises(InputError, match=r"no DLA cores; drop \[build\] dla_core"):
        run_pipeline(load_config(path))
    assert not (tmp_path / "work").exists()
    path.write_text(text.replace("[build]", '[build]\nhardware_compat = "all"', 1))
    with pytest.raises(InputError, match=r"^\[build\] hardware_compat must be one of"):
        run_pipeline(load_config(path))


def test_builds_without_calibration_data_say_so_in_the_configs_names(digits: Digits, tmp_path: Path) -> None:
    """run's fp16 and int8 builds on seeded random data said "no --calib-data given", an option of
    build that a config does not have: its key is [calibration] data."""
    result = run_cli("run", _config(tmp_path, digits, precisions='["fp16", "int8"]'))
    assert result.code == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "seeded random data" in line]
    assert any("no [calibration] data given: the fp16 range analysis runs" in line for line in said), said
    assert any("no [calibration] data given: calibrating on seeded" in line for line in said), said
    assert "--calib" not in result.stderr


def test_relative_calibration_data_named_random_something_is_found(digits: Digits, tmp_path: Path) -> None:
    np.savez(tmp_path / "random_calib.npz", input=digits.x_train[:64])
    calibration = '\n[calibration]\ndata = "random_calib.npz"\nsamples = 64\nbatch_size = 32\n'
    path = _config(tmp_path, digits, precisions='["int8"]', extra=calibration)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("run", path, cwd=elsewhere)
    assert result.code == 0, result.stderr


def test_a_module_beside_the_user_exports_from_the_console_script(
    two_io_module: Path, tmp_path: Path
) -> None:
    shutil.copy(two_io_module, tmp_path / "netdefs.py")
    result = run_cli("export", "netdefs:build:example_inputs", "-o", "net.onnx", cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert "image[batch,3,16,16]" in result.stdout  # dynamic dims are printed, not eaten as markup


def test_profile_with_a_fixed_input_shape_still_follows_the_batch_sizes(
    digits: Digits, tmp_path: Path
) -> None:
    out = tmp_path / "p.json"
    result = run_cli("profile", digits.onnx_path, "--batch-sizes", "1,4", "--input", "input:1x1x8x8",
                     "--iterations", "5", "--json", out)  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(out.read_text())["settings"]["input_shapes"]["4"]["input"] == [4, 1, 8, 8]


def test_a_model_with_external_data_travels_with_its_data(digits: Digits, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    model = onnx.load(digits.onnx_path)
    onnx.save_model(model, src / "ext.onnx", save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=1024)  # fmt: skip
    assert run_cli("build", src / "ext.onnx", "--precision", "fp32", "-o", tmp_path / "out").code == 0
    built = tmp_path / "out" / "ext.fp32.onnx"
    assert (tmp_path / "out" / "ext.fp32.onnx.data").is_file()  # its own data, named after it
    ort.InferenceSession(str(built), providers=["CPUExecutionProvider"])
    assert run_cli("bundle", src / "ext.onnx", "--data", digits.test_npz, "-o", tmp_path / "b").code == 0
    assert (tmp_path / "b" / "models" / "ext.onnx.data").is_file()
    assert run_cli("bundle", "verify", tmp_path / "b").code == 0
    ort.InferenceSession(str(tmp_path / "b" / "models" / "ext.onnx"), providers=["CPUExecutionProvider"])


def test_new_weights_in_an_onnx_sources_external_data_are_exported_again(
    digits: Digits, tmp_path: Path
) -> None:
    """The weights of a model saved with external data are in its .data file: new ones there, the
    .onnx unchanged, export again (the run was up to date), and the run reads that file, never writes it."""
    from onnx import numpy_helper

    from edgedeploy.pipeline.run import input_files

    model = onnx.load(digits.onnx_path)
    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.onnx.data",
                    size_threshold=1024)  # fmt: skip
    path = _config(tmp_path, digits, precisions='["fp32"]')
    path.write_text(path.read_text().replace(str(digits.onnx_path), "ext.onnx"))
    first = run_pipeline(load_config(path))
    stored = onnx.load(tmp_path / "ext.onnx", load_external_data=False).graph.initializer
    external = {t.name for t in stored if t.data_location == onnx.TensorProto.EXTERNAL}
    halved = onnx.load(digits.onnx_path)
    for tensor in halved.graph.initializer:
        if tensor.name in external and tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 0.5, tensor.name))
    (tmp_path / "other").mkdir()
    onnx.save_model(halved, tmp_path / "other" / "ext.onnx", save_as_external_data=True,
                    location="ext.onnx.data", size_threshold=1024)  # fmt: skip
    # the same .onnx (offsets and all), other weights
    assert (tmp_path / "other" / "ext.onnx").read_bytes() == (tmp_path / "ext.onnx").read_bytes()
    shutil.copyfile(tmp_path / "other" / "ext.onnx.data", tmp_path / "ext.onnx.data")
    rerun = run_pipeline(load_config(path))
    assert {"export", "build-fp32", "compare-fp32"} <= set(rerun.stages_run)
    assert rerun.fp32 == first.fp32
    assert tmp_path / "ext.onnx.data" in input_files(load_config(path))


def _conv_bn_relu(path: Path) -> Path:
    """Conv -> BatchNormalization -> Relu: onnxslim folds the BatchNormalization into the Conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
              [("s", np.ones(4)), ("b", np.zeros(4)), ("m", np.zeros(4)), ("v", np.ones(4))]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("section", "precision", "key"),
    [("build", "fp16", "fp32_nodes"), ("calibration", "int8", "exclude_nodes")],
)
def test_nodes_the_export_simplified_away_are_refused_before_any_build_and_said_why(
    tmp_path: Path, section: str, precision: str, key: str
) -> None:
    """fp16's build found a missing --fp32-nodes name after fp32's build, and said only
    'no node named bn': the export's onnxslim had folded that BatchNormalization into its Conv."""
    _conv_bn_relu(tmp_path / "m.onnx")
    config = tmp_path / "edgedeploy.toml"
    body = f'workdir = "w"\n[model]\nsource = "m.onnx"\n[build]\nprecisions = ["fp32", "{precision}"]\n'
    body += f'[{section}]\n{key} = ["bn"]\n' if section != "build" else f'{key} = ["bn"]\n'
    body += "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    config.write_text(body)

    def refused(*needles: str) -> None:
        result = run_cli("run", config)
        last = result.stderr.strip().splitlines()[-1]  # after the export's line
        assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
        assert all(n in last for n in needles), last

    refused(
        f"[{section}] {key}: no node named bn in the exported model",
        "bn is a node of m.onnx; the export's simplification removed or merged it",
    )
    assert sorted(p.name for p in (tmp_path / "w").glob("*.onnx")) == ["m.fp32.onnx"]  # nothing built
    config.write_text(body.replace('["bn"]', '["rel"]'))
    refused("no node named rel", "closest: relu")
    config.write_text(body + "[export]\nsimplify = false\n")  # the node kept: the run goes on
    assert run_cli("run", config).code == 0


@pytest.mark.parametrize(
    ("section", "precision", "key"),
    [("build", "fp16", "fp32_ops"), ("calibration", "int8", "exclude_ops")],
)
def test_an_unknown_op_type_is_refused_before_any_build_in_the_configs_names(
    tmp_path: Path, section: str, precision: str, key: str
) -> None:
    """fp16's or int8's build refused a misspelt op type as '--fp32-ops' or '--exclude-ops' after
    fp32 was built and compared: an ONNX source is refused at the config check (no workdir made),
    a PyTorch one right after its export (whose custom ops are known only then)."""
    _conv_bn_relu(tmp_path / "m.onnx")
    (tmp_path / "net.py").write_text(
        "import torch\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    config = tmp_path / "edgedeploy.toml"
    body = f'workdir = "w"\n[model]\nsource = "m.onnx"\n[build]\nprecisions = ["fp32", "{precision}"]\n'
    body += f"[{section}]\n" if section != "build" else ""
    body += f'{key} = ["Relu", "Sofmax"]\n[profile]\nenabled = false\n[bundle]\nenabled = false\n'
    said = f"config [{section}] {key}: no ONNX op type named Sofmax"
    config.write_text(body)
    assert_clean_input_error(run_cli("run", config), said)
    assert not (tmp_path / "w").exists()
    config.write_text(body.replace('source = "m.onnx"', 'source = "net.py:build"\ninputs = ["x:1x3x8x8"]'))
    result = run_cli("run", config)
    assert result.code == 2 and "Traceback" not in result.stderr, result.stderr
    assert said in result.stderr.strip().splitlines()[-1]  # after the export's line
    assert sorted(p.name for p in (tmp_path / "w").glob("*.onnx")) == ["net.fp32.onnx"]  # nothing built
    config.write_text(body.replace(', "Sofmax"', ""))  # a real op type the model has: the run goes on
    assert run_cli("run", config).code == 0


def test_an_onnx_sources_export_runs_on_the_model_inputs_shapes(tmp_path: Path) -> None:
    """`run` of nudenet's 320n.onnx with [model] inputs = ["images:1x3x320x320"] said "the exported
    model was loaded by ONNX Runtime, not run: random inputs fail the model", as export did: the
    shapes the config gives compare's and profile's random data are the export's check's too."""
    from tests.test_export_onnx_io import _dynamic_hw_model

    _dynamic_hw_model(tmp_path / "m.onnx")
    config = tmp_path / "edgedeploy.toml"
    body = 'workdir = "w"\n[model]\nsource = "m.onnx"\ninputs = ["x:2x1x8x8"]\n'
    body += '[build]\nprecisions = ["fp32"]\n'
    config.write_text(body + "[profile]\nenabled = false\n[bundle]\nenabled = false\n")
    result = run_cli("run", config)
    assert result.code == 0, result.stderr
    assert "not run" not in result.stderr and "PyTorch" not in result.stderr, result.stderr


def test_a_model_file_with_an_upper_case_suffix_is_a_file_as_with_a_lower_case_one(tmp_path: Path) -> None:
    """``[model] source = "nets/Model.PY:make"`` (or ``Model.ONNX``): run's checks and inputs took the
    suffix as written, so the file was not resolved beside the config, not refused when missing, not
    hashed for the stage key nor guarded as an input; matrix named the model "PY"; export took
    ``Model.PY`` for a module name. A suffix is compared whatever its case, everywhere."""
    from edgedeploy.config import from_dict
    from edgedeploy.options import RUN_MODEL
    from edgedeploy.pipeline.matrix_config import _model_name
    from edgedeploy.pipeline.run import _check_files, _resolve_source, _source_fingerprint, input_files
    from edgedeploy.stages.export import _import_object

    nets = tmp_path / "nets"
    nets.mkdir()
    for suffix in (".py", ".PY", ".Py"):
        (nets / f"Model{suffix}").write_text("def make():\n    return 42\n")
        source = f"nets/Model{suffix}:make"
        config = from_dict({"model": {"source": source}}, tmp_path)
        assert _resolve_source(config) == f"{nets / f'Model{suffix}'}:make"
        assert input_files(config) == [nets / f"Model{suffix}"]
        assert "file_sha256" in _source_fingerprint(source, tmp_path)
        assert _model_name({"source": source}) == "Model"
        assert _import_object(str(nets / f"Model{suffix}"), "make")() == 42
        missing = from_dict({"model": {"source": f"nets/Gone{suffix}:make"}}, tmp_path)
        with pytest.raises(InputError, match="Gone"):
            _check_files(missing, RUN_MODEL)
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), tmp_path / "M.ONNX")
    assert input_files(from_dict({"model": {"source": "M.ONNX"}}, tmp_path)) == [tmp_path / "M.ONNX"]
    assert _model_name({"source": "M.ONNX"}) == "M"


@pytest.mark.parametrize("name", ["m.pt", "nets/M.PTH", "m.pt2"])
def test_a_saved_pytorch_file_as_the_source_says_how_to_load_it(tmp_path: Path, name: str) -> None:
    """``[model] source = "m.pt"`` (and ``export m.pt``) was refused as "does not resolve: expected
    module:callable, file.py:callable ... or a .onnx file", which does not say what to do with the
    checkpoint one has: the line now says to load it in a file.py:callable that returns the module."""
    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.run import check_config
    from tests.conftest import run_in_process

    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"PK")
    with pytest.raises(InputError) as refused:
        check_config(from_dict({"model": {"source": name}}, tmp_path))
    said = str(refused.value)
    assert "\n" not in said and name.rpartition("/")[2] in said, said
    assert "file.py:callable that loads it" in said and "returns the torch.nn.Module" in said, said
    code, _, err = run_in_process("export", tmp_path / name, "-o", tmp_path / "m.onnx")
    assert code == 2 and "file.py:callable that loads it" in err and "Traceback" not in err, err
    assert not (tmp_path / "m.onnx").exists()
    config = write_run_config(tmp_path, name, "r", "")
    code, _, err = run_in_process("run", config)  # refused before its workdir is made
    assert code == 2 and "file.py:callable that loads it" in err, err
    assert not (tmp_path / "work").exists()
    with pytest.raises(InputError) as refused:  # any other file is not taken for a checkpoint
        check_config(from_dict({"model": {"source": "m.txt"}}, tmp_path))
    assert "loads it" not in str(refused.value)
