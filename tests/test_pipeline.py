from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.config import load_config
from edgedeploy.errors import InputError
from edgedeploy.fileio import sha256_file
from edgedeploy.pipeline import run_pipeline
from edgedeploy.ui import Ui
from tests.conftest import (
    Digits,
    assert_clean_input_error,
    checkpoint_module,
    dynamic_matmul_model,
    files_under,
    reflect_padded_data,
    run_cli,
    validate_manifest,
    write_run_config,
)


def _config(tmp_path: Path, digits: Digits, extra: str = "") -> Path:
    return write_run_config(
        tmp_path,
        digits.onnx_path,
        "digits",
        f"""[build]
target = "x86-64-cpu"
precisions = ["fp32", "fp16"]

[compare]
data = "{digits.test_npz}"
samples = 100
batch_size = 25
min_cosine = 0.999
min_top1 = 0.99

[profile]
batch_sizes = [1, 4]
iterations = 20
warmup = 2

[bundle]
output = "bundle"
{extra}
""",
    )


def test_run_twice_does_no_work_the_second_time(digits: Digits, tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, digits))
    first = run_pipeline(config)
    assert first.gates_passed
    assert "export" in first.stages_run and "bundle" in first.stages_run
    second = run_pipeline(config)
    assert second.stages_run == []
    assert set(second.stages_skipped) == set(first.stages_run)


def test_a_changed_option_reruns_only_what_depends_on_it(digits: Digits, tmp_path: Path) -> None:
    path = _config(tmp_path, digits)
    run_pipeline(load_config(path))
    path.write_text(path.read_text().replace("iterations = 20", "iterations = 21"))
    rerun = run_pipeline(load_config(path))
    assert set(rerun.stages_run) == {"profile-fp32", "profile-fp16", "bundle", "report"}


def test_bundle_manifest_checksums_match_its_files(digits: Digits, tmp_path: Path) -> None:
    result = run_pipeline(load_config(_config(tmp_path, digits)))
    assert result.bundle is not None
    bundle = Path(result.bundle["directory"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["schema_version"] == 1
    on_disk = files_under(bundle) - {"manifest.json"}
    on_disk = {f for f in on_disk if (bundle / f).is_file()}
    assert set(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        assert sha256_file(bundle / rel) == entry["sha256"]
        assert (bundle / rel).stat().st_size == entry["size"]
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp16"]
    assert manifest["primary_precision"] == "fp16"
    assert manifest["io"]["inputs"][0]["name"] == "input"
    assert manifest["tools"]["onnxruntime"] and manifest["tools"]["polygraphy"]
    fp16 = manifest["artifacts"][1]
    assert fp16["compare"]["passed"] and fp16["profile"]["batch_sizes"]["4"]["median_ms"] > 0
    with tarfile.open(Path(result.bundle["archive"])) as tar:
        names = tar.getnames()
    assert "bundle/manifest.json" in names and "bundle/reference/outputs.npz" in names


def test_bundle_verify_cli_accepts_a_good_bundle_and_flags_a_damaged_one(
    digits: Digits, tmp_path: Path
) -> None:
    result = run_pipeline(load_config(_config(tmp_path, digits)))
    assert result.bundle is not None
    bundle = Path(result.bundle["directory"])
    assert run_cli("bundle", "verify", bundle).code == 0
    assert run_cli("bundle", "verify", result.bundle["archive"]).code == 0
    model = next((bundle / "models").glob("*.fp16.onnx"))
    model.write_bytes(model.read_bytes()[:-10])
    damaged = run_cli("bundle", "verify", bundle)
    assert damaged.code == 2 and model.name in damaged.stderr
    assert_clean_input_error(run_cli("bundle", "verify", model), "is not a bundle")  # a model is not damaged


def test_cli_bundle_from_artifacts(digits: Digits, tmp_path: Path) -> None:
    for precision in ("fp16", "int8"):
        built = run_cli(
            "build", digits.onnx_path, "--precision", precision, "--target", "jetson-orin-nano",
            "--calib-data", digits.test_npz, "--calib-samples", "128", "-o", tmp_path,
        )  # fmt: skip
        assert built.code == 0, built.stderr
    fp16, int8 = tmp_path / "digits.fp16.onnx", tmp_path / "digits.int8.onnx"
    assert (tmp_path / "digits.calib.cache").is_file()
    result = run_cli(
        "bundle", digits.onnx_path, fp16, int8, "--data", digits.test_npz, "-o", tmp_path / "b",
        "--target", "jetson-orin-nano", "--min-top1", "0.98",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["target"]["name"] == "jetson-orin-nano"
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32", "fp16", "int8"]
    fp16_entry, int8_entry = manifest["artifacts"][1:]
    assert fp16_entry["precision_plan"] == "models/digits.fp16.plan.json"
    assert int8_entry["calibration_cache"] == "models/digits.calib.cache"
    assert all(a["compare"]["passed"] for a in manifest["artifacts"][1:])
    assert (tmp_path / "b.tar.gz").is_file()


def test_unknown_config_key_names_it_and_suggests_the_closest(digits: Digits, tmp_path: Path) -> None:
    path = _config(tmp_path, digits, extra="\n[profile2]\n")
    with pytest.raises(InputError, match=r"profile2.*did you mean 'profile'"):
        load_config(path)
    path = _config(tmp_path, digits)
    path.write_text(path.read_text().replace("precisions =", "precision ="))
    result = run_cli("run", path)
    assert_clean_input_error(result, "build.precision", "did you mean 'precisions'")
    assert not (tmp_path / "work").exists()


def test_wrongly_typed_config_value_is_refused(digits: Digits, tmp_path: Path) -> None:
    path = _config(tmp_path, digits)
    path.write_text(path.read_text().replace("samples = 100", 'samples = "lots"'))
    assert_clean_input_error(run_cli("run", path), "compare.samples")


def test_cli_run_prints_the_table_and_json(digits: Digits, tmp_path: Path) -> None:
    path = _config(tmp_path, digits)
    result = run_cli("run", path, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    assert "fp16" in result.stdout
    data = json.loads((tmp_path / "run.json").read_text())
    assert [p["precision"] for p in data["precisions"]] == ["fp32", "fp16"]
    # fp16 is measured as its emulation, as compare does: ONNX Runtime's CPU kernels hide fp16
    assert data["precisions"][1]["compare"]["mode"].startswith("fp16 (CPU emulation"), data["precisions"][1]
    assert "fp16 emulation" not in result.stderr
    again = run_cli("run", path)
    assert again.code == 0 and "nothing changed" in again.stdout


def test_the_readme_config_reference_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Config file reference", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    from edgedeploy.config import from_dict, tomllib

    config = from_dict(tomllib.loads(block), tmp_path)
    assert config.build.precisions == ["fp32", "fp16", "int8"]
    assert config.calibration.preprocess["center_crop"] == 224
    assert config.build.profiles and config.profile.batch_sizes == [1, 8]


def test_an_interrupted_run_resumes_from_the_finished_stages(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgedeploy.pipeline.run as pipeline

    config = load_config(_config(tmp_path, digits))
    real_profile = pipeline.profile

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "profile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config)
    monkeypatch.setattr(pipeline, "profile", real_profile)
    resumed = run_pipeline(config)
    assert {"export", "build-fp32", "compare-fp32"} <= set(resumed.stages_skipped)
    assert "profile-fp32" in resumed.stages_run and "bundle" in resumed.stages_run
    assert not list((tmp_path / "work").glob(".*.tmp*"))


def test_run_exports_a_pytorch_model_with_two_inputs_and_two_outputs(
    two_io_module: Path, tmp_path: Path
) -> None:
    (tmp_path / "models.py").write_text(two_io_module.read_text())
    config = tmp_path / "edgedeploy.toml"
    config.write_text("""
workdir = "out"

[model]
source = "models.py:build:example_inputs"
name = "twoio"

[export]
output_names = ["scores", "mean"]

[build]
precisions = ["fp32", "fp16"]

[compare]
data = "random:1"
samples = 8
batch_size = 4

[profile]
batch_sizes = [1, 3]
iterations = 5
warmup = 1
""")
    result = run_cli("run", config, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    data = json.loads((tmp_path / "run.json").read_text())
    fp16 = data["precisions"][1]
    assert set(fp16["compare"]["outputs"]) == {"scores", "mean"}
    assert set(fp16["profile"]["batch_sizes"]) == {"1", "3"}
    assert (tmp_path / "out" / "twoio.fp32.onnx").is_file() and (tmp_path / "bundle.tar.gz").is_file()
    # editing the model's source file invalidates the export and everything after it
    (tmp_path / "models.py").write_text(
        two_io_module.read_text().replace("Linear(16, 5)", "Linear(16, 5, bias=False)")
    )
    again = run_cli("run", config)
    assert again.code == 0, again.stderr
    assert "export: up to date" not in again.stderr


def test_config_accuracy_budget_applies_to_int8_as_builds_option_does(digits: Digits, tmp_path: Path) -> None:
    """[build] accuracy_budget is build's --accuracy-budget for each low precision of the run (the
    int8 gate failed and only `edgedeploy build` could search); a bad one is refused up front."""
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=digits.x_train[:64])
    extra = f'\n[calibration]\ndata = "{calib}"\nsamples = 64\nbatch_size = 32\n'
    path = _config(tmp_path, digits, extra=extra)
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32", "int8"]')
    text = text.replace("[profile]\n", "[profile]\nenabled = false\n")
    path.write_text(text.replace("[build]\n", '[build]\naccuracy_budget = "cosine>=0.99999"\n'))
    result = run_pipeline(load_config(path))
    fp32, int8 = result.precisions
    assert "accuracy_budget" not in fp32.info
    budget = int8.info["accuracy_budget"]
    assert budget["budget"] == "cosine>=0.99999" and budget["met"] and budget["kept"]
    assert (tmp_path / "work" / budget["file"]).is_file()
    path.write_text(path.read_text().replace("cosine>=0.99999", "cosine>=2"))
    refused = run_cli("run", path)
    assert_clean_input_error(refused, "config [build] accuracy_budget: cosine>=2 can never be met")


def test_a_top1_budget_without_class_scores_is_refused_before_any_precision(tmp_path: Path) -> None:
    """run refused it only in the int8 build, after the export, the fp32 build and the calibration
    (their files left in the workdir): now at the config check for an ONNX source, and right after
    the export for a PyTorch one."""
    from tests.precision import models

    models.save_dense_map(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        'workdir = "out"\n[model]\nsource = "seg.onnx"\n[build]\ntarget = "x86-64-cpu"\n'
        'precisions = ["fp32", "int8"]\naccuracy_budget = "top1>=0.99"\n'
        '[calibration]\ndata = "seg.npz"\nbatch_size = 8\n[compare]\ndata = "seg.npz"\nbatch_size = 8\n'
        "[profile]\nenabled = false\n"
    )
    needle = "config [build] accuracy_budget top1 needs an output shaped (batch, classes)"
    assert_clean_input_error(run_cli("run", config), needle, "y[N,4,16,16]")
    assert not (tmp_path / "out").exists()
    (tmp_path / "seg_module.py").write_text(
        "import torch\n\n\ndef build():\n    return torch.nn.Conv2d(3, 4, 3, padding=1)\n\n\n"
        "def example_inputs():\n    return (torch.randn(2, 3, 16, 16),)\n"
    )
    config.write_text(config.read_text().replace('"seg.onnx"', '"seg_module.py:build:example_inputs"'))
    exported = run_cli("run", config)
    assert exported.code == 2 and "Traceback" not in exported.stderr, exported.stderr
    assert exported.stderr.strip().splitlines()[-1].startswith(f"error: {needle}")
    assert list((tmp_path / "out").glob("*.fp32.onnx"))  # the export, and nothing built after it
    assert not list((tmp_path / "out").glob("*.fp32.ort.*")) and not list((tmp_path / "out").glob("*calib*"))
    config.write_text(
        config.read_text()
        .replace('"seg_module.py:build:example_inputs"', '"seg.onnx"')
        .replace('["fp32", "int8"]', '["fp32"]')
    )
    assert run_cli("run", config).code == 0  # the budget applies to fp16 and int8 only


def test_a_top1_budget_reads_the_models_outputs_once(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that a top1 bound has (batch, classes) scores to measure runs once per model: at
    the config check for an ONNX source. It ran there, again on the exported copy and once more in
    each budgeted build, reading the same outputs each time."""
    from edgedeploy.stages.precision import budget

    checked: list[str] = []
    may_hold = budget.may_hold_scores

    def counted(spec: Any) -> bool:
        checked.append(spec.name)
        return may_hold(spec)

    monkeypatch.setattr(budget, "may_hold_scores", counted)
    path = _config(tmp_path, digits, extra="enabled = false\n")
    text = path.read_text().replace("[profile]\n", "[profile]\nenabled = false\n")
    path.write_text(text.replace("[build]\n", '[build]\naccuracy_budget = "top1>=0.9"\n'))
    result = run_pipeline(load_config(path))
    assert [p.precision for p in result.precisions] == ["fp32", "fp16"]
    assert len(checked) == 1, checked


def test_a_missed_accuracy_budget_fails_its_precision_and_the_run_goes_on(tmp_path: Path) -> None:
    """As a failed accuracy gate: the precision whose budget no model meets is not built, the
    others are compared, bundled and reported, and the run exits 1 naming it (before, it stopped
    the run at that build: no run.json, no report, no bundle of the precisions that passed)."""
    from tests.precision import models

    models.save_beyond_fp32_fallback(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        'workdir = "out"\n[model]\nsource = "m.onnx"\n[build]\ntarget = "x86-64-cpu"\n'
        'precisions = ["fp32", "fp16"]\nkeep_io_types = false\naccuracy_budget = "snr>=200"\n'
        '[calibration]\ndata = "x.npz"\nbatch_size = 8\n[compare]\ndata = "x.npz"\nbatch_size = 8\n'
        "[profile]\nenabled = false\n"
    )
    ran = run_cli("run", config, "--json", tmp_path / "run.json")
    assert ran.code == 1 and "Traceback" not in ran.stderr, ran.stderr
    steps = tmp_path / "out" / "m.fp16.budget.json"
    assert "fp16: not built: accuracy budget snr>=200 is not met even with all" in ran.stdout, ran.stdout
    assert f"steps in {steps}" in ran.stdout.replace("\n", "")
    assert ran.stderr.strip().endswith("FAILED: accuracy budget missed for fp16"), ran.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    assert [p["precision"] for p in record["precisions"]] == ["fp32"] and "fp16" in record["not_built"]
    assert (tmp_path / "out" / "report.html").is_file() and steps.is_file()
    assert not (tmp_path / "out" / "m.fp16.onnx").exists()  # nothing a bundle or build takes as built
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "accuracy budget fp16 `snr>=200`: NOT met" in markdown
    assert "- **not built (accuracy budget missed): fp16**" in markdown  # not "all accuracy gates passed"
    assert 'fp16 <span class="fail">not built</span>' in (tmp_path / "out" / "report.html").read_text()
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [a["precision"] for a in manifest["artifacts"]] == ["fp32"]


def test_a_missed_accuracy_budget_leaves_no_model_under_the_artifacts_name(tmp_path: Path) -> None:
    """build exits 1 on a budget no model meets; its fp16 model stayed as out/m.fp16.onnx, which
    bundle then shipped as a built fp16 (exit 0), and a run's workdir kept it too. A missed gate
    leaves no model under the artifact's name now; the search's steps and the plan stay."""
    from tests.precision import models

    model, data = models.save_beyond_fp32_fallback(tmp_path)
    out = tmp_path / "out"
    common = ["--precision", "fp16", "--no-keep-io-types", "--calib-data", data, "-o", out,
              "--target", "x86-64-cpu"]  # fmt: skip
    assert run_cli("build", model, *common).code == 0  # an earlier build without the budget
    assert (out / "m.fp16.onnx").is_file()
    missed = run_cli("build", model, *common, "--accuracy-budget", "snr>=200")
    assert missed.code == 1 and "Traceback" not in missed.stderr, missed.stderr
    assert not (out / "m.fp16.onnx").exists(), sorted(p.name for p in out.iterdir())
    assert (out / "m.fp16.budget.json").is_file()
    assert "no m.fp16.onnx is left" in " ".join(missed.stderr.split()), missed.stderr
    bundled = run_cli("bundle", model, out / "m.fp16.onnx", "--data", data, "-o", tmp_path / "b")
    assert bundled.code == 2 and not (tmp_path / "b").exists(), bundled.stderr


def test_a_missed_int8_accuracy_budget_leaves_no_model_under_the_artifacts_name(tmp_path: Path) -> None:
    """The int8 side of the test above (make_precision's int8 branch, which calibrates, then searches):
    an int8 model that misses its budget stayed as out/m.int8.onnx, which bundle shipped as built.
    It is removed now, an earlier build's too; the steps and the calibration records stay."""
    from tests.precision import models

    model, data = models.save_beyond_fp32_fallback(tmp_path)
    out = tmp_path / "out"
    common = ["--precision", "int8", "--calib-data", data, "-o", out, "--target", "x86-64-cpu"]
    assert run_cli("build", model, *common).code == 0  # an earlier build without the budget
    assert (out / "m.int8.onnx").is_file()
    missed = run_cli("build", model, *common, "--accuracy-budget", "snr>=200")
    assert missed.code == 1 and "Traceback" not in missed.stderr, missed.stderr
    assert "every layer left in fp32" in missed.stderr, missed.stderr
    assert not (out / "m.int8.onnx").exists(), sorted(p.name for p in out.iterdir())
    assert (out / "m.int8.budget.json").is_file() and (out / "m.calib.json").is_file()
    assert "no m.int8.onnx is left" in " ".join(missed.stderr.split()), missed.stderr
    bundled = run_cli("bundle", model, out / "m.int8.onnx", "--data", data, "-o", tmp_path / "b")
    assert bundled.code == 2 and not (tmp_path / "b").exists(), bundled.stderr


def test_an_int8_build_after_a_missed_budget_reuses_its_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missed int8 budget removes the int8 model but keeps its calibration record: the next int8
    build (the same budget, whose search record is reused, or none) rewrites the Q/DQ model from the
    recorded thresholds, its key unchanged, and runs no calibration pass over the data again."""
    import calibration.calibrate as calibrate_module
    from edgedeploy.errors import BudgetMissed
    from edgedeploy.options import BuildRequest, CalibrationRequest
    from edgedeploy.stages.build import make_precision
    from edgedeploy.targets import load_target
    from tests.precision import models

    model, data = models.save_beyond_fp32_fallback(tmp_path)
    passes: list[int] = []
    real = calibrate_module.HistogramObserver

    def counted(*args: Any, **kwargs: Any) -> Any:  # one per calibration pass over the data
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "HistogramObserver", counted)
    calib = CalibrationRequest(data=str(data), batch_size=8)
    target = load_target("x86-64-cpu")
    said: list[str] = []
    ui = Ui(quiet=True)
    monkeypatch.setattr(ui, "info", said.append)
    for budget in ("snr>=200", "snr>=200"):
        with pytest.raises(BudgetMissed):
            make_precision(model, BuildRequest("int8", target, calibration=calib, accuracy_budget=budget),
                           tmp_path / "out", ui)  # fmt: skip
        assert not (tmp_path / "out" / "m.int8.onnx").exists()
    built = make_precision(model, BuildRequest("int8", target, calibration=calib), tmp_path / "out", ui)
    assert built.path.is_file()
    assert passes == [1], said  # the first build's only
    reasons = [line for line in said if line.startswith("int8: ")]
    assert len(reasons) == 3 and all("reusing calibration" in line for line in reasons[1:]), reasons


def test_new_calibration_data_at_the_same_path_rebuilds_int8(digits: Digits, tmp_path: Path) -> None:
    import numpy as np

    calib = tmp_path / "calib.npz"
    np.savez(calib, input=digits.x_train[:64])
    path = _config(
        tmp_path, digits, extra=f'\n[calibration]\ndata = "{calib}"\nsamples = 64\nbatch_size = 32\n'
    )
    path.write_text(
        path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32", "int8"]')
    )
    run_pipeline(load_config(path))
    np.savez(calib, input=digits.x_train[64:128])
    rerun = run_pipeline(load_config(path))
    # fp32 too: its artifact check runs on the data's first batch (build.data_batch)
    assert {"build-int8", "build-fp32"} <= set(rerun.stages_run)


def test_new_calibration_data_rebuilds_fp32_whose_artifact_check_ran_on_it(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """The fp32 build runs its ONNX Runtime artifact once on the first batch of the [calibration]
    data (build.data_batch) and records what that found (``checked``), but its key left the data
    out: data this model refuses (a reflect pad of 2 on 2 samples) after data it runs kept "loaded
    and run once", and the other way round "loaded, not run", as did data given after none. The
    fp32 key now holds the data's identity: new data checks the artifact again and says so."""
    import numpy as np

    reflect_padded_data(tmp_path)
    calib = tmp_path / "calib.npz"
    config = tmp_path / "edgedeploy.toml"
    text = f"""
workdir = "out"
[model]
source = "{reflect_padded_onnx}"
name = "padded"
[build]
backend = "onnxruntime"
precisions = ["fp32"]
[compare]
data = "val.npz"
batch_size = 2
[profile]
enabled = false
[bundle]
enabled = false
"""
    config.write_text(text)
    without = run_pipeline(load_config(config)).precisions[0].info["checked"]
    assert without.startswith("loaded, not run: random inputs fail the model"), without
    config.write_text(text + '[calibration]\ndata = "calib.npz"\nsamples = 4\nbatch_size = 2\n')
    said = []
    for seed, length in enumerate((16, 2, 16)):  # runs, fails the model, runs (on other values)
        np.savez(calib, x=np.random.default_rng(seed).normal(size=(4, length)).astype(np.float32))
        rerun = run_pipeline(load_config(config))
        assert "build-fp32" in rerun.stages_run, (length, rerun.stages_skipped)
        said.append(rerun.precisions[0].info["checked"])
    assert said[0] == said[2] == "loaded and run once", said
    assert said[1].startswith("loaded, not run: the calibration data fail the model it was made from"), said
    assert run_pipeline(load_config(config)).stages_run == []  # the same data: up to date


def test_new_model_input_shapes_rebuild_fp32_whose_artifact_check_ran_on_random_inputs_of_them(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """Without [calibration] data the fp32 build checks its artifact on random inputs of the
    [model] inputs shapes, but its key (and ONNX Runtime's own reuse key) left the shapes out: an
    ONNX source exports the same model whatever they are, so shapes this model refuses (a reflect
    pad of 2 on 2 samples) after shapes it runs kept "loaded and run once"."""
    config = tmp_path / "edgedeploy.toml"
    reflect_padded_data(tmp_path)
    said = []
    for shape in ("2x16", "2x2"):
        config.write_text(f"""
workdir = "out"
[model]
source = "{reflect_padded_onnx}"
name = "padded"
inputs = ["x:{shape}"]
[build]
backend = "onnxruntime"
precisions = ["fp32"]
[compare]
data = "val.npz"
batch_size = 2
[profile]
enabled = false
[bundle]
enabled = false
""")
        rerun = run_pipeline(load_config(config))
        assert "build-fp32" in rerun.stages_run, (shape, rerun.stages_skipped)
        said.append(rerun.precisions[0].info["checked"])
    assert said[0] == "loaded and run once", said
    assert said[1].startswith("loaded, not run: random inputs fail the model it was made from"), said


def test_a_redone_fp32_stage_reusing_its_onnxruntime_artifact_records_what_a_fresh_build_does(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """A stage redone whose ONNX Runtime artifact the backend reused (same model, data and release:
    its own key matched) recorded only that key: no ``checked`` (nor level, versions, hashes), where
    a fresh build recorded "loaded, not run: random inputs fail...". A reused artifact now carries
    the record of the build that made it, and a sidecar edited since then is not trusted: the
    artifact is built and checked again."""
    reflect_padded_data(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    text = f"""
workdir = "out"
[model]
source = "{reflect_padded_onnx}"
name = "padded"
[build]
backend = "onnxruntime"
precisions = ["fp32"]
THREADS
[compare]
data = "val.npz"
batch_size = 2
[profile]
enabled = false
[bundle]
enabled = false
"""
    config.write_text(text.replace("THREADS", ""))
    fresh = run_pipeline(load_config(config)).precisions[0].info
    assert fresh["checked"].startswith("loaded, not run: random inputs fail the model"), fresh
    sidecar = tmp_path / "out" / "padded.fp32.ort.json"
    written = sidecar.stat().st_mtime_ns
    config.write_text(text.replace("THREADS", "threads = 1"))  # in the stage's key, not the backend's
    rerun = run_pipeline(load_config(config))
    assert "build-fp32" in rerun.stages_run and sidecar.stat().st_mtime_ns == written  # reused
    assert rerun.precisions[0].info == fresh
    recorded = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**recorded, "checked": "loaded and run once"}))  # edited by hand
    config.write_text(text.replace("THREADS", "threads = 2"))
    again = run_pipeline(load_config(config)).precisions[0].info
    assert again == fresh, again  # checked again, not taken from the edited sidecar


def test_the_same_compare_data_spelled_otherwise_is_up_to_date(digits: Digits, tmp_path: Path) -> None:
    """`[compare] data` as ``in/data``, ``/abs/in/data`` or ``./in/../in/data`` reran every compare
    (and what follows it): the compare stage's key held the path as written, not the data."""
    import numpy as np

    folder = tmp_path / "in" / "data"
    folder.mkdir(parents=True)
    for i in range(4):
        np.save(folder / f"{i}.npy", digits.x_test[i * 25 : (i + 1) * 25])
    path = _config(tmp_path, digits)
    text = path.read_text().replace("iterations = 20", "enabled = false")
    path.write_text(text.replace(f'data = "{digits.test_npz}"', 'data = "in/data"'))
    first = run_pipeline(load_config(path))
    assert {"compare-fp32", "compare-fp16"} <= set(first.stages_run)
    for spelled in (str(folder), "./in/../in/data", "in/data/"):
        path.write_text(text.replace(f'data = "{digits.test_npz}"', f'data = "{spelled}"'))
        again = run_pipeline(load_config(path))
        assert again.stages_run == [], (spelled, again.stages_run)


def test_the_same_calibration_data_spelled_otherwise_is_up_to_date(digits: Digits, tmp_path: Path) -> None:
    """`[calibration] data` as ``in/calib`` or ``./in/../in/calib`` built int8 again (and the report):
    the calibration's own key held the data's identity, but the stage's key held the build request,
    with the data's path as written."""
    import numpy as np

    folder = tmp_path / "in" / "calib"
    folder.mkdir(parents=True)
    for i in range(2):
        np.save(folder / f"{i}.npy", digits.x_train[i * 32 : (i + 1) * 32])
    extra = '\n[calibration]\ndata = "DATA"\nsamples = 64\nalgorithm = "max"\n'
    path = _config(tmp_path, digits, extra=extra)
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32", "int8"]')
    text = text.replace("iterations = 20", "enabled = false").replace('output = "bundle"', "enabled = false")
    text = text.replace("min_top1 = 0.99", "min_top1 = 0.5").replace("min_cosine = 0.999", "min_cosine = 0.9")
    path.write_text(text.replace("DATA", "in/calib"))
    assert "build-int8" in run_pipeline(load_config(path)).stages_run
    for spelled in (str(folder), "./in/../in/calib", "in/calib/"):
        path.write_text(text.replace("DATA", spelled))
        again = run_pipeline(load_config(path))
        assert again.stages_run == [], (spelled, again.stages_run)


def test_a_loader_script_is_keyed_by_the_data_it_yields(digits: Digits, tmp_path: Path) -> None:
    """A .py loader's own sha256 leaves out the arrays it reads: new arrays behind the same script
    redo the calibration, the compares and the bundle's reference data (compare was "up to date"
    and passed where `edgedeploy compare` on the same files failed)."""
    import numpy as np

    arrays = tmp_path / "arrays.npy"
    np.save(arrays, digits.x_train[:64])
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    a = np.load({str(arrays)!r})\n"
        "    for i in range(0, len(a), 16):\n        yield {'input': a[i : i + 16]}\n"
    )
    path = _config(tmp_path, digits, extra=f'\n[calibration]\ndata = "{loader}"\nsamples = 64\n')
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32", "int8"]')
    text = text.replace(f'data = "{digits.test_npz}"', f'data = "{loader}"')
    text = text.replace("min_top1 = 0.99", "min_top1 = 0.5")
    path.write_text(text.replace("iterations = 20", "enabled = false"))
    run_pipeline(load_config(path))
    assert run_pipeline(load_config(path)).stages_run == []  # the same arrays: nothing to do
    np.save(arrays, digits.x_train[64:128])
    rerun = run_pipeline(load_config(path))
    assert {"build-int8", "compare-fp32", "compare-int8", "bundle"} <= set(rerun.stages_run)
    assert "build-fp32" in rerun.stages_run  # its artifact check runs on the first batch
    with np.load(tmp_path / "bundle" / "reference" / "inputs.npz") as reference:
        assert np.array_equal(reference["input"], digits.x_train[64:80])


def test_a_loader_script_runs_once_per_run_for_its_keys_and_its_stages(
    digits: Digits, tmp_path: Path
) -> None:
    """The fp16 and int8 stages were keyed by the sha256 of the feeds a .py loader yields, read once
    for each key and again for each stage's work (and again by the calibration's own key and the
    fp16 analysis' first batch): 7 runs of load_data() in one run. The run now keeps the feeds of
    its one read for every later one, and the keys still see new arrays behind the same script."""
    import numpy as np

    arrays = tmp_path / "arrays.npy"
    np.save(arrays, digits.x_train[:32])
    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    with open({str(counter)!r}, 'a') as fh:\n        fh.write('load\\n')\n"
        f"    a = np.load({str(arrays)!r})\n"
        "    for i in range(0, len(a), 8):\n        yield {'input': a[i : i + 8]}\n"
    )
    extra = f'\n[calibration]\ndata = "{loader}"\nsamples = 32\nalgorithm = "max"\n'
    path = _config(tmp_path, digits, extra=extra)
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32", "fp16", "int8"]')
    text = text.replace("min_top1 = 0.99", "min_top1 = 0.5").replace("min_cosine = 0.999", "min_cosine = 0.9")
    text = text.replace("iterations = 20", "enabled = false")
    path.write_text(text.replace('output = "bundle"', "enabled = false"))

    def loads() -> int:
        count = len(counter.read_text().splitlines())
        counter.unlink()
        return count

    first = run_pipeline(load_config(path))
    assert {"build-fp16", "build-int8"} <= set(first.stages_run)
    assert loads() == 1
    again = run_pipeline(load_config(path))
    assert again.stages_run == [] and loads() == 1  # read for the keys' hash only
    np.save(arrays, digits.x_train[32:64])
    rerun = run_pipeline(load_config(path))
    assert {"build-fp16", "build-int8", "build-fp32"} <= set(rerun.stages_run)
    assert loads() == 1
    assert not [p.name for p in (tmp_path / "work").iterdir() if "feeds" in p.name]  # not kept after the run


def _counting_loader(tmp_path: Path, arrays: Path) -> tuple[Path, Path]:
    """A .py loader that notes each run of load_data() in a file: (the loader, that file)."""
    counter = tmp_path / "runs.txt"
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n"
        f"    with open({str(counter)!r}, 'a') as fh:\n        fh.write('load\\n')\n"
        f"    a = np.load({str(arrays)!r})\n"
        "    for i in range(0, len(a), 8):\n        yield {'input': a[i : i + 8]}\n"
    )
    return loader, counter


@pytest.mark.parametrize(
    "command",
    [
        ["calibrate", "--data", "LOADER", "--algorithm", "max", "--samples", "32"],
        ["calibrate", "--data", "LOADER", "--samples", "32"],
        ["build", "--precision", "int8", "--calib-data", "LOADER", "--calib-algorithm", "max"],
        ["build", "--precision", "int8", "--calib-data", "LOADER", "--accuracy-budget", "cosine>=0.9"],
        ["build", "--precision", "fp16", "--calib-data", "LOADER"],
    ],
    ids=["calibrate", "calibrate-auto", "build-int8", "build-int8-budget", "build-fp16"],
)
def test_build_and_calibrate_run_a_loader_script_once(
    digits: Digits, tmp_path: Path, command: list[str]
) -> None:
    """`build` and `calibrate` on their own ran a .py loader twice (int8: once for the cache key's
    hash of its feeds, again to calibrate; an accuracy budget or an fp16 build's analysis more):
    a slow loader paid twice, and a random one was calibrated on other data than its key says.
    The feeds of the one read are kept in a scratch folder for the command's later reads."""
    import numpy as np

    arrays = tmp_path / "arrays.npy"
    np.save(arrays, digits.x_train[:32])
    loader, counter = _counting_loader(tmp_path, arrays)
    args = [str(loader) if a == "LOADER" else a for a in command]
    made = run_cli(args[0], digits.onnx_path, *args[1:], "-o", tmp_path / "out")
    assert made.code == 0, made.stderr
    assert counter.read_text().splitlines() == ["load"]
    assert not [p.name for p in tmp_path.iterdir() if "feeds" in p.name]


def test_run_profiles_with_the_configured_input_shapes(reflect_padded_onnx: Path, tmp_path: Path) -> None:
    """[model] inputs shape the random data of profile as they do compare's (a model that needs
    more than one sample on a dynamic axis refuses the dims fed as 1)."""
    config = tmp_path / "edgedeploy.toml"
    config.write_text(f"""
workdir = "out"

[model]
source = "{reflect_padded_onnx}"
name = "padded"
inputs = ["x:1x16"]

[build]
precisions = ["fp32"]

[compare]
data = "random:1"
samples = 2
batch_size = 1

[profile]
batch_sizes = [1, 2]
iterations = 3
warmup = 1
""")
    result = run_cli("run", config, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    profiled = json.loads((tmp_path / "run.json").read_text())["precisions"][0]["profile"]
    assert set(profiled["batch_sizes"]) == {"1", "2"}
    # without them, compare's refusal names the dims fed as 1 in its error line, as `compare` does
    # (it gave ONNX Runtime's "Pad reflect requires axis length >= 2" alone)
    config.write_text(config.read_text().replace('inputs = ["x:1x16"]', "").replace('"out"', '"out2"'))
    refused = run_cli("run", config)
    assert refused.code == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "(dynamic dims fed as 1: x 1x1; give the shapes" in last, last


def test_run_profiles_dynamic_dims_as_the_compare_data_has_them(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """Without [model] inputs, a dynamic dim beyond the batch is timed at the compare data's size,
    not fed as 1 (PP-OCR's classifier was timed on 1x1 images; this model refuses 1 outright)."""
    reflect_padded_data(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    config.write_text(f"""
workdir = "out"

[model]
source = "{reflect_padded_onnx}"
name = "padded"

[build]
precisions = ["fp32"]

[compare]
data = "val.npz"
batch_size = 2

[profile]
batch_sizes = [1, 3]
iterations = 3
warmup = 1
""")
    result = run_cli("run", config, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    assert "profile: dynamic input dims as in the compare data (x 2x16)" in result.stderr
    profiled = json.loads((tmp_path / "run.json").read_text())["precisions"][0]["profile"]
    assert profiled["settings"]["input_shapes"] == {"1": {"x": [1, 16]}, "3": {"x": [3, 16]}}


def test_run_for_a_gpu_refuses_unranged_dims_before_building_and_takes_the_profile_it_suggests(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """A bundle for a GPU target whose model has a dynamic dim besides the batch needs a shape
    range for the device's engine, as `bundle create` does: without [build] profiles the run made a
    bundle whose build_engine.sh refused on the device (here: ONNX Runtime builds, no TensorRT)."""
    reflect_padded_data(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    text = f"""
workdir = "out"

[model]
source = "{reflect_padded_onnx}"
name = "padded"

[build]
target = "jetson-orin-nx"
backend = "onnxruntime"
precisions = ["fp32"]

[compare]
data = "val.npz"
batch_size = 2

[profile]
enabled = false
"""
    config.write_text(text)
    refused = run_cli("run", config)
    suggested = "profiles = [{ x = { min = [1, 16], opt = [2, 16], max = [2, 16] } }]"
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
    *progress, line = refused.stderr.strip().splitlines()  # after the export's line, one error line
    # the export says its check only loaded the model: random inputs fail this one (1bdfc7e)
    assert [p.split(":")[0] for p in progress] == ["notice", "export"], refused.stderr
    assert "loaded by ONNX Runtime, not run" in progress[0]
    assert line.startswith("error: ") and f"give the device's shape range with [build] {suggested}" in line
    assert not (tmp_path / "out" / "padded.fp32.ort.onnx").exists()  # refused before any build
    # the onnxruntime backend takes the profiles for the bundle: no backend to change
    assert line.endswith("(the reference data's shape; widen it to the device's)"), line
    text = text.replace('backend = "onnxruntime"\n', "")  # auto: ONNX Runtime here, TensorRT on a GPU
    config.write_text(text.replace('precisions = ["fp32"]', f'precisions = ["fp32"]\n{suggested}'))
    narrow = text.replace('precisions = ["fp32"]', f'precisions = ["fp32"]\n{suggested.replace("16", "8")}')
    (tmp_path / "narrow.toml").write_text(narrow)
    refused = run_cli("run", tmp_path / "narrow.toml")  # checked as bundle create checks --profile
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "reference input 'x' [2, 16] lies outside every shape profile" in refused.stderr
    assert "widen [build] profiles to take it" in refused.stderr
    assert not (tmp_path / "out" / "padded.fp32.ort.onnx").exists()
    config.write_text(config.read_text().replace('precisions = ["fp32"]', 'precisions = ["fp32", "fp16"]'))
    taken = run_cli("run", config)
    assert taken.code == 0, taken.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["build"]["profiles"] == [{"x": {"min": [1, 16], "opt": [2, 16], "max": [2, 16]}}]
    # said once for the run, not once per precision, and not as if the profiles were thrown away
    (unused,) = [line for line in taken.stderr.splitlines() if "TensorRT options, unused here" in line]
    assert "a bundle keeps the shape profiles for the device's engine build" in unused, unused
    # the long line on why TensorRT is not used, once; the next precision says it in short
    said = [line for line in taken.stderr.splitlines() if line.startswith("backend auto -> onnxruntime")]
    assert said[0].startswith("backend auto -> onnxruntime (TensorRT is not usable here")
    assert said[1:] == ["backend auto -> onnxruntime (as above)"], said
    title = "padded on jetson-orin-nx (measured with ONNX Runtime on this machine's CPU, not on the device)"
    assert title in " ".join(taken.stdout.split()), taken.stdout
    # random compare data: the shape [model] inputs gives is the example, not 1, 4 and 8 (a
    # sequence of 1 to 8 samples, which this model refuses)
    (tmp_path / "random.toml").write_text(
        text.replace('data = "val.npz"\nbatch_size = 2', 'data = "random"')
        .replace('name = "padded"', 'name = "padded"\ninputs = ["x:2x400"]')
        .replace('workdir = "out"', 'workdir = "out-random"')
    )
    refused = run_cli("run", tmp_path / "random.toml")
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "x = { min = [1, 400], opt = [2, 400], max = [2, 400] }" in refused.stderr, refused.stderr


def test_run_for_a_gpu_bundle_takes_profiles_on_the_onnxruntime_backend(
    reflect_padded_onnx: Path, tmp_path: Path
) -> None:
    """[build] profiles with backend = "onnxruntime" for a GPU target were refused as "TensorRT
    options, unused by the onnxruntime backend", and without them the run asked for them: a dead end
    (nudenet's YOLOv8, dynamic H/W, for jetson-orin-nano). The bundle keeps them (and tf32) for the
    device's engine build, so with a bundle they are taken; options nothing uses are still refused."""
    reflect_padded_data(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    profiles = "profiles = [{ x = { min = [1, 16], opt = [2, 16], max = [2, 16] } }]"
    text = f"""
workdir = "out"

[model]
source = "{reflect_padded_onnx}"
name = "padded"

[build]
target = "jetson-orin-nx"
backend = "onnxruntime"
precisions = ["fp32"]
{profiles}
tf32 = false

[compare]
data = "val.npz"
batch_size = 2

[profile]
enabled = false
"""
    config.write_text(text)
    taken = run_cli("run", config)
    assert taken.code == 0, taken.stderr
    assert "TensorRT options" not in taken.stderr, taken.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["build"] == {
        "profiles": [{"x": {"min": [1, 16], "opt": [2, 16], "max": [2, 16]}}],
        "tf32": False,
    }
    # no bundle, or a CPU target's (no engine built on its device): nothing uses them
    for name, edit in (
        ("nobundle", text + "\n[bundle]\nenabled = false\n"),
        ("cpu", text.replace("jetson-orin-nx", "x86-64-cpu")),
    ):
        (tmp_path / f"{name}.toml").write_text(edit.replace('workdir = "out"', f'workdir = "{name}"'))
        refused = run_cli("run", tmp_path / f"{name}.toml")
        assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
        line = "error: config [build] profiles, tf32: TensorRT options, unused by the onnxruntime backend"
        assert refused.stderr.strip().splitlines() == [line], refused.stderr
        assert not (tmp_path / name).exists()
    # with a bundle, a TensorRT option the bundle does not keep is still refused, and only it
    (tmp_path / "ws.toml").write_text(text.replace("tf32 = false", "workspace_mb = 64"))
    refused = run_cli("run", tmp_path / "ws.toml")
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused.stderr
    line = "error: config [build] workspace_mb: TensorRT options, unused by the onnxruntime backend"
    assert refused.stderr.strip().splitlines() == [line], refused.stderr


def test_the_profile_suggested_for_unranged_dims_holds_the_reference_data() -> None:
    """The example takes the reference data's shape, or 1/4/8 for random data (fed as 1, inside)."""
    import numpy as np

    from calibration.modelinfo import TensorSpec
    from edgedeploy.pipeline.run import refuse_unranged_dims

    image = [TensorSpec("x", ("n", 3, "h", "w"), "float32")]
    with pytest.raises(InputError, match=r"--profile x:1x3x48x192,8x3x48x192,8x3x48x192 \(the reference"):
        refuse_unranged_dims(image, {"x": np.zeros((8, 3, 48, 192), np.float32)}, "--profile")
    toml = "[build] profiles = [{ x = { min = [1, 3, 1, 1], opt = [4, 3, 4, 4], max = [8, 3, 8, 8] } }]"
    with pytest.raises(InputError) as refused:
        refuse_unranged_dims(image, {}, "[build] profiles and backend = auto")
    assert str(refused.value).endswith(f"with {toml} and backend = auto")
    refuse_unranged_dims([TensorSpec("x", ("n", 3, 8, 8), "float32")], {}, "--profile")  # only the batch
    # random data (run's and matrix's [compare] data = "random"): shapes given are the data's own,
    # shapes guessed (dims fed as 1) are not
    from calibration.sources import open_source
    from edgedeploy.pipeline.run import known_shapes

    two = [*image, TensorSpec("y", ("n", "t"), "float32")]
    source = open_source("random", two, samples=2, shapes={"x": (2, 3, 48, 192)})
    assert list(known_shapes(source, next(iter(source)))) == ["x"]


def test_profile_shapes_come_from_the_config_first_and_never_from_random_data() -> None:
    import numpy as np

    from calibration.modelinfo import TensorSpec
    from edgedeploy.pipeline.run import profile_shapes

    inputs = [
        TensorSpec("image", ("n", 3, "h", "w"), "float32"),
        TensorSpec("mask", ("n", 3, "h", "w"), "float32"),
        TensorSpec("scale", ("n", 2), "float32"),
    ]
    feed = {"image": np.zeros((2, 3, 48, 192), np.float32), "mask": np.zeros((2, 3, 8, 8), np.float32)}
    feed["scale"] = np.zeros((2, 2), np.float32)
    given = {"mask": (1, 3, 16, 16)}
    assert profile_shapes(given, inputs, [feed], synthetic=False) == (
        {"mask": (1, 3, 16, 16), "image": (2, 3, 48, 192)},
        ["image 2x3x48x192"],
    )
    assert profile_shapes(given, inputs, [feed], synthetic=True) == (given, [])
    assert profile_shapes({}, inputs, [], synthetic=False) == ({}, [])


def test_bundle_for_a_gpu_suggests_a_profile_from_the_reference_data(tmp_path: Path) -> None:
    """An image model with dynamic height and width: the device needs a shape range, and the one
    suggested holds the reference data verify.sh runs (it was 1x3x1x1 .. 8x3x8x8, which does not)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
    )
    model = tmp_path / "image.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    np.savez(
        tmp_path / "data.npz", x=np.random.default_rng(0).standard_normal((4, 3, 8, 16)).astype(np.float32)
    )
    args = ["bundle", "create", model, "--target", "jetson-orin-nx", "--data", tmp_path / "data.npz"]
    refused = run_cli(*args, "-o", tmp_path / "b")
    assert_clean_input_error(refused, "--profile x:1x3x8x16,4x3x8x16,4x3x8x16")
    taken = run_cli(*args, "--profile", "x:1x3x8x16,4x3x8x16,4x3x8x16", "-o", tmp_path / "b")
    assert taken.code == 0, taken.stderr


def test_config_check_allclose_applies_atol_rtol_and_the_bundle_records_it(
    digits: Digits, tmp_path: Path
) -> None:
    """[compare] atol/rtol gate only with check_allclose (as --check-allclose); the manifest carries
    it, so the device's verify.sh applies the same gate."""
    path = _config(tmp_path, digits)
    text = path.read_text().replace("[profile]\n", "[profile]\nenabled = false\n")
    path.write_text(text.replace("min_top1 = 0.99\n", "min_top1 = 0.99\natol = 0.0\nrtol = 0.0\n"))
    assert run_pipeline(load_config(path)).gates_passed  # atol 0 alone gates nothing
    path.write_text(path.read_text().replace("rtol = 0.0\n", "rtol = 0.0\ncheck_allclose = true\n"))
    ui = Ui(quiet=True)
    strict = run_pipeline(load_config(path), ui)
    assert not strict.gates_passed  # fp16 differs from fp32 somewhere
    # the warning names the gate that failed, as compare does, not every figure of every output
    (failed,) = [m for m in ui.messages if "accuracy gate failed" in m]
    assert failed.startswith("warning: fp16: accuracy gate failed: ")
    assert "exceeds atol=0.0 + rtol=0.0" in failed and "cosine=" not in failed
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["gates"]["check_allclose"] is True and manifest["gates"]["atol"] == 0.0
    validate_manifest(manifest)


def test_export_keys_that_an_onnx_source_ignores_are_warned_and_inputs_must_name_its_inputs(
    digits: Digits, tmp_path: Path
) -> None:
    path = _config(tmp_path, digits, extra="\n[export]\nopset = 17\ndynamic_batch = false\n")
    path.write_text(path.read_text().replace("[profile]\n", "[profile]\nenabled = false\n"))
    result = run_cli("run", path)
    assert result.code == 0, result.stderr
    assert "[export] dynamic_batch, [export] opset: for PyTorch export only" in result.stderr
    misnamed = 'name = "digits"\ninputs = ["nosuch:1x1x8x8"]\n'
    path.write_text(path.read_text().replace('name = "digits"\n', misnamed))
    refused = run_cli("run", path)  # it was fed to the model's one input by position
    assert refused.code == 2 and "no input 'nosuch'" in refused.stderr.strip().splitlines()[-1]


def test_build_profiles_of_the_wrong_rank_are_refused_not_bundled(digits: Digits, tmp_path: Path) -> None:
    """The device cannot build from a profile of another rank than the model's input: run refuses
    it as a build does (it was written into the bundle's manifest)."""
    bad = "profiles = [{ input = { min = [1], opt = [1], max = [1] } }]\n"
    path = _config(tmp_path, digits)
    text = path.read_text().replace('precisions = ["fp32", "fp16"]\n', 'precisions = ["fp32"]\n' + bad)
    path.write_text(text)
    result = run_cli("run", path)
    last = result.stderr.strip().splitlines()[-1]
    assert result.code == 2 and "config [build] profiles: profile 0 input 'input'" in last, result.stderr
    assert "must all have rank 4" in last
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "work").exists()  # before any work


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (("x:1x3x8x8", "x:axb"), "config [model] inputs 'x:axb': dims must be integers"),
        (("x:1x3x8x8", "x:1x3x8x8:bogus"), "config [model] inputs 'x:1x3x8x8:bogus': unknown dtype 'bogus'"),
        (("[build]", "[export]\nopset = 5\n[build]"), "config [export] opset 5 is too old"),
        (
            ('inputs = ["x:1x3x8x8"]', 'inputs = ["x:1x3x8x8"]\ndynamic_axes = ["x2=h"]'),
            "config [model] dynamic_axes 'x2=h': expected INPUT:AXIS=NAME, e.g. x:1=seq",
        ),
        (
            ('inputs = ["x:1x3x8x8"]', 'inputs = ["x:1x3x8x8"]\ndynamic_axes = ["x:4=w"]'),
            "config [model] dynamic_axes x:4=w: x has 4 dims (axes 0 to 3), no axis 4",
        ),
        (
            ("[build]", '[export]\ninput_names = ["a", "b"]\n[build]'),
            "config [export] input_names gives 2 names for 1 [model] inputs",
        ),
        (('data = "random"', 'data = "random:abc"'), "config [compare] data: bad data spec 'random:abc'"),
        (
            ("[build]", "[build]\nprofiles = [{ x = { min = [1], opt = [1], max = [1] } }]"),
            "config [build] profiles: profile 0 input 'x': min/opt/max must all have rank 4",
        ),
    ],
)
def test_export_and_data_values_are_refused_before_the_workdir_in_the_configs_names(
    tmp_path: Path, edit: tuple[str, str], said: str
) -> None:
    """They were refused as the export's flags (bad --input, --opset 5 is too old), after the
    workdir was made, or after the export (random:abc, profiles of another rank)."""
    (tmp_path / "net.py").write_text(
        "import torch\n\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
    )
    config = tmp_path / "edgedeploy.toml"
    body = 'workdir = "w"\n[model]\nsource = "net.py:build"\ninputs = ["x:1x3x8x8"]\n[build]\n'
    body += 'precisions = ["fp32"]\n[compare]\ndata = "random"\n[profile]\nenabled = false\n'
    config.write_text(body.replace(*edit) + "[bundle]\nenabled = false\n")
    assert_clean_input_error(run_cli("run", config), said)
    assert not (tmp_path / "w").exists()


def test_config_keys_that_other_keys_make_moot_are_warned(tmp_path: Path) -> None:
    """As the CLI says for its options: keys the file gave (at any value), not defaults."""
    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.run import config_warnings

    data = {
        "model": {"source": "m.onnx"},
        "build": {"precisions": ["fp32", "int8"]},
        "calibration": {"algorithm": "max", "percentile": 99.99},
        "compare": {"data": "val.npz", "seed": 0, "atol": 1e-3},
        "profile": {"iterations": 5, "duration_s": 3.0, "warmup": 2, "warmup_ms": 200.0},
    }
    assert config_warnings(from_dict(data, tmp_path)) == [
        "config [profile] iterations is used instead of duration_s",
        "config [profile] warmup is used instead of warmup_ms",
        "config [compare] atol/rtol gate only with check_allclose = true: not applied",
        "config [calibration] percentile: used by algorithms percentile and auto, not max",
        "config [compare] seed 0: used by random data only, not by val.npz",
    ]
    quiet = {"model": {"source": "m.onnx"}, "profile": {"iterations": 5}, "compare": {"data": "random"}}
    assert config_warnings(from_dict(quiet, tmp_path)) == []
    off = {**data, "profile": {**data["profile"], "enabled": False}, "build": {"precisions": ["fp32"]}}
    off["compare"] = {"atol": 0.1, "check_allclose": True}
    assert config_warnings(from_dict(off, tmp_path)) == []


def test_a_stage_record_edited_since_it_was_written_is_redone_not_believed(
    digits: Digits, tmp_path: Path
) -> None:
    """A record carries the sha256 of its own content: a cosine raised over its gate, a model path
    pointed at another file or a field removed makes the stage run again (no traceback)."""
    path = _config(tmp_path, digits)
    path.write_text(path.read_text().replace("[profile]\n", "[profile]\nenabled = false\n"))
    assert run_cli("run", path).code == 0
    cache = tmp_path / "work" / ".edgedeploy-cache"
    compare = json.loads((cache / "compare-fp16.json").read_text())
    real = compare["result"]["outputs"]["logits"]["cosine"]
    compare["result"]["outputs"]["logits"]["cosine"] = 0.123
    (cache / "compare-fp16.json").write_text(json.dumps(compare))
    build = json.loads((cache / "build-fp32.json").read_text())
    del build["result"]["backend"]
    (cache / "build-fp32.json").write_text(json.dumps(build))
    # and an output changed since its stage wrote it: each rerun says why
    artifact = Path(next(iter(json.loads((cache / "build-fp16.json").read_text())["outputs"])))
    artifact.write_bytes(artifact.read_bytes()[:-1] + bytes([artifact.read_bytes()[-1] ^ 1]))
    again = run_cli("run", path, "--json", tmp_path / "again.json")
    assert again.code == 0 and "Traceback" not in again.stderr, again.stderr
    assert "compare-fp16: up to date" not in again.stderr and "build-fp32: up to date" not in again.stderr
    edited = f"compare-fp16: its record {cache / 'compare-fp16.json'} was edited since it was written"
    assert f"{edited}: running it again" in again.stderr
    assert f"build-fp16: {artifact} changed since this stage wrote it: running it again" in again.stderr
    assert "compare-fp32: up to date" in again.stderr  # the records left alone are still reused
    redone = json.loads((cache / "compare-fp16.json").read_text())["result"]["outputs"]["logits"]
    assert redone["cosine"] == pytest.approx(real)


@pytest.mark.parametrize("damage", ["truncated", "not an object", "empty"])
def test_a_stage_record_that_cannot_be_read_is_redone_and_said_so(tmp_path: Path, damage: str) -> None:
    """A record cut short (a disk full, a copy interrupted) was redone without a word, where an
    edited one says so: a stage redone because a file changed names it, whatever the damage."""
    from edgedeploy.pipeline.cache import StageCache

    out = tmp_path / "out.txt"
    out.write_text("made")
    cache = StageCache(tmp_path)
    cache.store("compare-fp32", "k", [out], {"cosine": 1.0})
    record = cache.root / "compare-fp32.json"
    text = record.read_text()
    record.write_text({"truncated": text[: len(text) // 2], "not an object": "[1, 2]", "empty": ""}[damage])
    ui = Ui(quiet=True)
    result, skipped = cache.run("compare-fp32", "k", ui, lambda: ([out], {"cosine": 0.5}))
    assert not skipped and result == {"cosine": 0.5}
    assert ui.messages == [f"compare-fp32: its record {record} cannot be read: running it again"]
    ui = Ui(quiet=True)  # rewritten whole: the next run finds it up to date, and a missing one is not said
    assert cache.run("compare-fp32", "k", ui, lambda: ([out], {}))[1]
    assert StageCache(tmp_path / "elsewhere").run("report", "k", ui, lambda: ([out], {}))[1] is False
    assert ui.messages == ["compare-fp32: up to date (inputs and options unchanged), nothing to do"]


def test_a_stage_that_says_running_it_again_reuses_nothing(digits: Digits, tmp_path: Path) -> None:
    """build-fp32 said "its record ... was edited since it was written: running it again", and then
    the backend found its artifact and sidecar intact under the same key and kept them: nothing was
    built or checked again. A stage run again for a reason it says is forced, as build --force."""
    path = _config(tmp_path, digits, "")
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp32"]')
    path.write_text(
        text.replace("[profile]\n", "[profile]\nenabled = false\n").replace(
            'output = "bundle"', "enabled = false"
        )
    )
    assert run_cli("run", path).code == 0
    cache = tmp_path / "work" / ".edgedeploy-cache"
    artifact = tmp_path / "work" / "digits.fp32.ort.onnx"
    made = artifact.stat().st_ino
    build = json.loads((cache / "build-fp32.json").read_text())
    build["result"]["info"]["checked"] = "loaded, not run: edited"
    (cache / "build-fp32.json").write_text(json.dumps(build))
    again = run_cli("run", path)
    assert again.code == 0, again.stderr
    assert f"build-fp32: its record {cache / 'build-fp32.json'} was edited" in again.stderr
    assert artifact.stat().st_ino != made  # built again (written under a new name and renamed)
    assert json.loads((cache / "build-fp32.json").read_text())["result"]["info"]["checked"] == (
        "loaded and run once"
    )


def test_an_edited_onnxruntime_sidecar_is_built_again_not_kept(digits: Digits, tmp_path: Path) -> None:
    """A tester edited ``<stem>.ort.json`` ("checked" and "target"): run said "changed since this
    stage wrote it: running it again" and kept the edited sidecar (its hash stored, believed from
    then on), and build printed "(up to date, skipped)" over it. Fixed on integ by the sidecar's seal
    (3618ebb); kept here for fp16 in run and int8 in build."""
    path = _config(tmp_path, digits, "")
    text = path.read_text().replace('precisions = ["fp32", "fp16"]', 'precisions = ["fp16"]')
    path.write_text(
        text.replace("[profile]\n", "[profile]\nenabled = false\n").replace(
            'output = "bundle"', "enabled = false"
        )
    )
    assert run_cli("run", path).code == 0
    sidecar = tmp_path / "work" / "digits.fp16.ort.json"
    written = sidecar.read_text()

    def edit(file: Path) -> None:
        file.write_text(file.read_text().replace('"loaded and run once"', '"loaded, not run: EDITED"')
                        .replace('"x86-64-cpu"', '"jetson-orin-nano"'))  # fmt: skip
        assert "EDITED" in file.read_text()

    edit(sidecar)
    again = run_cli("run", path)
    assert again.code == 0 and f"build-fp16: {sidecar} changed since this stage wrote it" in again.stderr
    assert sidecar.read_text() == written
    assert "build-fp16: up to date" in run_cli("run", path).stderr
    out = tmp_path / "b"
    build = ("build", digits.onnx_path, "--precision", "int8", "--target", "x86-64-cpu", "-o", out)
    assert run_cli(*build).code == 0
    made = (out / "digits.int8.ort.json").read_text()
    edit(out / "digits.int8.ort.json")
    rebuilt = run_cli(*build)
    assert rebuilt.code == 0 and "digits.int8.ort.onnx (built)" in rebuilt.stdout, rebuilt.stdout
    assert (out / "digits.int8.ort.json").read_text() == made


def test_a_pytorch_source_is_exported_again_when_the_weights_it_loads_change(tmp_path: Path) -> None:
    """The factory reads a checkpoint no key can see: every run exports, and only a changed model
    redoes the stages after it."""
    weights = checkpoint_module(tmp_path)

    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        'workdir = "out"\n[model]\nsource = "net.py:build"\ninputs = ["input:1x1x4x4"]\n'
        '[build]\ntarget = "x86-64-cpu"\nprecisions = ["fp32"]\nbackend = "onnxruntime"\n'
        "[profile]\nenabled = false\n[bundle]\nenabled = false\n"
    )
    weights(0)
    first = run_cli("run", config, cwd=tmp_path)
    assert first.code == 0, first.stderr
    exported = sha256_file(tmp_path / "out" / "net.fp32.onnx")
    same = run_cli("run", config, cwd=tmp_path)
    assert "the same model as the last run's" in same.stderr and "build-fp32: up to date" in same.stderr
    # not "its output is no longer intact", which it said of an intact model on every run
    assert "export: a PyTorch source is exported on every run: running it again" in same.stderr
    assert "no longer intact" not in same.stderr
    assert "nothing changed: every stage was up to date" in same.stdout
    weights(1)  # retrained
    again = run_cli("run", config, cwd=tmp_path)
    assert again.code == 0 and "build-fp32: up to date" not in again.stderr, again.stderr
    assert sha256_file(tmp_path / "out" / "net.fp32.onnx") != exported


def test_a_precision_slower_than_fp32_on_a_cpu_target_is_warned_and_reported(
    digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp16 on ONNX Runtime's CPU provider (few fp16 kernels) made slower than fp32 by the profile:
    run says so, with the figures, and so do the report's summary and markdown."""
    from dataclasses import replace

    import edgedeploy.pipeline.run as run_module

    real = run_module.profile

    def slower_fp16(artifact: Path, *args: Any, **kwargs: Any) -> Any:
        result = real(artifact, *args, **kwargs)
        if ".fp16." in Path(artifact).name:
            for b in result.batches:  # every figure alike: the report refuses percentiles out of order
                fields = ("min_ms", "max_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms")
                b.latency = replace(b.latency, **{f: getattr(b.latency, f) * 3 + 1.0 for f in fields})
                b.quantiles_ms = [q * 3 + 1.0 for q in b.quantiles_ms or []] or b.quantiles_ms
        return result

    monkeypatch.setattr(run_module, "profile", slower_fp16)
    ui = Ui(quiet=True)
    result = run_pipeline(load_config(_config(tmp_path, digits)), ui)
    said = [m for m in ui.messages if "ran slower than fp32" in m]
    assert len(said) == 1 and said[0].startswith("warning: fp16 ran slower than fp32 here (p50 "), ui.messages
    assert "at batch 1; slower at all 2 batch sizes profiled); the bundle makes fp16 its default" in said[0]
    assert result.report is not None
    assert "- **fp16 ran slower than fp32** (p50 " in (result.report.parent / "report.md").read_text()
    assert "fp16 slower than fp32</dt>" in result.report.read_text()


def test_a_build_stage_is_keyed_by_what_shapes_that_build_only() -> None:
    """run redid builds a changed key cannot affect (each came out byte-identical): [calibration]
    algorithm redid build-fp16, [build] fp32_ops build-fp32 and build-int8, and TensorRT profiles
    every build that fell back to ONNX Runtime."""
    from dataclasses import replace

    from edgedeploy.fileio import sha256_json
    from edgedeploy.options import BuildRequest, CalibrationRequest, Fp16Options, parse_profiles
    from edgedeploy.pipeline.run import build_key_request
    from edgedeploy.targets import load_target

    def key(precision: str, backend: str = "onnxruntime", **changes: object) -> str:
        base = BuildRequest(
            precision, load_target("jetson-orin-nano"), calibration=CalibrationRequest("d.npz")
        )
        return sha256_json(build_key_request(replace(base, **changes), backend))

    other_algorithm = {"calibration": CalibrationRequest("d.npz", algorithm="max")}
    fp32_ops = {"fp16": Fp16Options(fp32_ops=["Softmax"])}
    profiles = {"options": {"profiles": parse_profiles(["x:1x3,4x3,8x3"])}}
    assert key("fp16") == key("fp16", **other_algorithm) and key("int8") != key("int8", **other_algorithm)
    assert key("fp32") == key("fp32", **fp32_ops) == key("fp32", **other_algorithm)
    assert key("int8") == key("int8", **fp32_ops) and key("fp16") != key("fp16", **fp32_ops)
    assert all(key(p) == key(p, **profiles) for p in ("fp32", "fp16", "int8"))
    assert key("fp16", "tensorrt") != key("fp16", "tensorrt", **profiles)  # TensorRT builds with them
    # the data is in the stage's key as its identity (run._calibration_fingerprint), not its path
    other_data = {"calibration": CalibrationRequest("./d.npz")}
    assert all(key(p) == key(p, **other_data) for p in ("fp32", "fp16", "int8"))


def test_config_min_top1_table_gates_the_named_outputs_and_the_bundle_records_them(tmp_path: Path) -> None:
    """[compare] min_top1 took one number, gating every 2-D float output's argmax (an embedding's
    too); a table { output = value } gates the outputs named only, as compare's --min-top1
    NAME:VALUE, in the run's compare and the bundle's manifest (verify.sh's gates); a name the model
    lacks is refused at the config check."""
    from tests.test_compare import _logits_and_embedding

    _logits_and_embedding(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    body = (
        'workdir = "out"\n[model]\nsource = "ref.onnx"\n[build]\ntarget = "x86-64-cpu"\n'
        'precisions = ["fp32", "fp16"]\n[compare]\ndata = "random:0"\nsamples = 64\n'
        "min_top1 = {TABLE}\n[profile]\nenabled = false\n"
    )
    config.write_text(body.replace("{TABLE}", "{ logit = 0.99 }"))
    refused = run_cli("run", config)
    assert_clean_input_error(refused, "config [compare] min_top1", "no output named 'logit'")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.onnx"))
    config.write_text(body.replace("{TABLE}", "{ logits = 0.99 }"))
    ran = run_cli("run", config, "--json", tmp_path / "run.json")
    assert ran.code == 0, ran.stderr
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    validate_manifest(manifest)
    assert manifest["gates"]["min_top1"] == {"logits": 0.99}
    fp16 = next(a for a in manifest["artifacts"] if a["precision"] == "fp16")
    gated = {name: o["top1_gated"] for name, o in fp16["compare"]["outputs"].items()}
    assert gated == {"logits": 0.99, "embedding": None}
    assert "argmax agreement of logits ≥ 0.99" in (tmp_path / "out" / "report.md").read_text()


def test_run_profiles_on_its_compare_data_not_on_random_inputs(tmp_path: Path) -> None:
    """run's profile stage timed every artifact on random inputs although the config gave [compare]
    and [calibration] data: a model those fail (token types of 0-9 reaching a 3-row table through an
    Add of 1) stopped the run at profile-fp32 with ONNX Runtime's error, naming neither the stage nor the
    random data. The profile now times on the run's data ([compare] data, else [calibration] data)
    and its record says which."""
    import numpy as np

    from tests.conftest import bertlike_model

    bertlike_model(tmp_path / "bert.onnx", through_add=True)
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "val.npz",
        input_ids=rng.integers(0, 100, (8, 16)),
        token_type_ids=rng.integers(0, 2, (8, 16)),
        attention_mask=np.ones((8, 16), np.int64),
    )
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        'workdir = "out"\n[model]\nsource = "bert.onnx"\n[build]\nbackend = "onnxruntime"\n'
        'precisions = ["fp32"]\n[compare]\ndata = "val.npz"\nbatch_size = 4\n'
        "[profile]\nbatch_sizes = [1, 4]\niterations = 3\nwarmup = 1\n[bundle]\nenabled = false\n"
    )
    result = run_pipeline(load_config(config))
    profiled = result.precisions[0].profile
    assert profiled is not None and profiled["settings"]["data"]["spec"] == str(tmp_path / "val.npz")
    assert profiled["settings"]["input_shapes"]["4"]["token_type_ids"] == [4, 16]


def _topk_model(tmp_path: Path) -> None:
    """topk.onnx (opset 11: a TopK, then a Max, both of ONNX Runtime's converter block list and not of
    TensorRT's) and val.npz in ``tmp_path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
        helper.make_node("TopK", ["a", "k"], ["v", "i"], name="topk", axis=-1),
        helper.make_node("Max", ["v", "c"], ["y"], name="floor"),
    ]
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
        numpy_helper.from_array(np.array([3], np.int64), "k"),
        numpy_helper.from_array(np.array(0.1, np.float32), "c"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])],
        weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), tmp_path / "topk.onnx")
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((16, 8)).astype(np.float32))


def _topk_project(tmp_path: Path, precisions: str, before_compare: str, after_profile: str = "") -> Path:
    """_topk_model's files and a run config for jetson-orin-nano on backend = "onnxruntime" building
    ``precisions`` (a TOML list), with the sections given written around [compare] and [profile]."""
    _topk_model(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    config.write_text(
        'workdir = "out"\n[model]\nsource = "topk.onnx"\n[build]\ntarget = "jetson-orin-nano"\n'
        f'backend = "onnxruntime"\nprecisions = {precisions}\n{before_compare}'
        '[compare]\ndata = "val.npz"\nbatch_size = 4\nmin_cosine = 0.9\n[profile]\nenabled = false\n'
        f"{after_profile}"
    )
    return config


def test_a_gpu_bundle_built_on_onnxruntime_holds_tensorrts_artifacts_for_its_devices_engine(
    tmp_path: Path,
) -> None:
    """A GPU target's bundle is built into a TensorRT engine on its device (build_engine.sh), and
    backend = "onnxruntime" only checks its artifacts here. Its int8 model was TensorRT's placement
    (int8 Q/DQ, which the device's build takes: ONNX Runtime's uint8 placement it refuses), but its
    fp16 model kept ONNX Runtime's ops of the converter's block list in fp32 (TopK, and Max below
    opset 12), which the device's engine then ran in fp32 behind Casts though TensorRT takes them in
    FP16. Both follow the runtime the bundle's device builds now: TensorRT's."""
    from edgedeploy.stages.build import check_int8_for_target
    from edgedeploy.targets import load_target

    config = _topk_project(tmp_path, '["fp16", "int8"]', '[calibration]\ndata = "val.npz"\n')
    result = run_pipeline(load_config(config))
    bundle = Path(result.bundle["directory"]) if result.bundle else None
    assert bundle is not None
    manifest = json.loads((bundle / "manifest.json").read_text())
    arts = {a["precision"]: a for a in manifest["artifacts"]}
    plan = json.loads((bundle / arts["fp16"]["precision_plan"]).read_text())
    assert plan["runtime"] == "tensorrt", plan["runtime"]
    assert [e["node"] for e in plan["nodes"] if e["precision"] == "fp32"] == []
    assert arts["int8"]["precision_info"]["placement"] == "tensorrt"
    check_int8_for_target(
        bundle / arts["int8"]["model"], load_target("jetson-orin-nano")
    )  # the device's check
    # what a CPU target's bundle keeps: ONNX Runtime's list and placement
    config.write_text(config.read_text().replace("jetson-orin-nano", "x86-64-cpu").replace('"out"', '"cpu"'))
    cpu = run_pipeline(load_config(config))
    assert cpu.bundle is not None
    arts = {
        a["precision"]: a
        for a in json.loads((Path(cpu.bundle["directory"]) / "manifest.json").read_text())["artifacts"]
    }
    plan = json.loads((Path(cpu.bundle["directory"]) / arts["fp16"]["precision_plan"]).read_text())
    assert plan["runtime"] == "onnxruntime" and arts["int8"]["precision_info"]["placement"] == "onnxruntime"


def test_a_build_made_under_another_runtimes_rules_is_built_again_not_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime a precision artifact is made for (fp16.runtime_for: the ops of the converter's block
    list its fp16 keeps in fp32, its int8's Q/DQ placement) was not in the build stage's key: a
    workdir built under other rules (before b24050c, a GPU target on backend = "onnxruntime" got ONNX
    Runtime's) said "build-fp16: up to date" and kept the old artifact, whose plan names the other
    runtime, until the tool version changed. The key holds it now: the stage is built again."""
    import sys

    from edgedeploy.stages.precision import fp16

    config = _topk_project(tmp_path, '["fp16"]', "", "[bundle]\nenabled = false\n")
    rules = fp16.runtime_for

    def other_rules(*args: Any, **kwargs: Any) -> str:
        return "onnxruntime"  # the rules of another version: ONNX Runtime's for this GPU target

    with monkeypatch.context() as patched:  # wherever the rule is looked up
        for module in list(sys.modules.values()):
            if getattr(module, "runtime_for", None) is rules:
                patched.setattr(module, "runtime_for", other_rules)
        old = run_pipeline(load_config(config))
    plan = json.loads(next(f for f in old.precisions[0].files if f.name.endswith(".plan.json")).read_text())
    assert plan["runtime"] == "onnxruntime" and "topk" in [
        e["node"] for e in plan["nodes"] if e["precision"] == "fp32"
    ]
    ui = Ui(quiet=True)
    new = run_pipeline(load_config(config), ui)
    assert "build-fp16" in new.stages_run and "build-fp16: up to date" not in " ".join(ui.messages)
    plan = json.loads(next(f for f in new.precisions[0].files if f.name.endswith(".plan.json")).read_text())
    assert plan["runtime"] == "tensorrt", plan["runtime"]
    assert [e["node"] for e in plan["nodes"] if e["precision"] == "fp32"] == []
    again = run_pipeline(load_config(config))  # the same rules: up to date
    assert "build-fp16" in again.stages_skipped, again.stages_run


def test_runs_bundle_records_the_shape_profile_bundle_create_records_for_the_same_model(
    tmp_path: Path,
) -> None:
    """Without [build] profiles, run's bundle for a GPU target recorded "profiles": [] where
    `edgedeploy bundle create` of the same model and artifacts records the profile its device
    builds (batch 1 to the reference batch), and the device scripts fell back to their own
    default (bundle_helper.default_max_batch). Run records pack's profile now."""
    dynamic_matmul_model(tmp_path)
    config = tmp_path / "edgedeploy.toml"
    config.write_text("""
workdir = "out"
[model]
source = "m.onnx"
[build]
target = "jetson-orin-nano"
backend = "onnxruntime"
precisions = ["fp32", "fp16"]
[compare]
data = "val.npz"
batch_size = 8
min_cosine = 0.9
[profile]
enabled = false
""")
    ran = run_cli("run", config)
    assert ran.code == 0, ran.stderr
    from_run = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    packed = run_cli(
        "bundle", "create", tmp_path / "m.onnx", tmp_path / "out" / "m.fp16.onnx", "--target",
        "jetson-orin-nano", "--data", tmp_path / "val.npz", "-o", tmp_path / "packed",
    )  # fmt: skip
    assert packed.code == 0, packed.stderr
    from_pack = json.loads((tmp_path / "packed" / "manifest.json").read_text())
    assert from_pack["build"]["profiles"] == [{"x": {"min": [1, 8], "opt": [8, 8], "max": [8, 8]}}]
    assert from_run["build"]["profiles"] == from_pack["build"]["profiles"], from_run["build"]
    validate_manifest(from_run)


def test_an_fp16_model_with_float16_io_is_profiled_on_the_runs_data(digits: Digits, tmp_path: Path) -> None:
    """[build] keep_io_types = false makes the fp16 model's inputs float16; the run's profile fed it
    the float32 arrays read for the compare, which ONNX Runtime refused ("Unexpected input data type"),
    exit 2 with no run.json. The data is cast to each artifact's input dtypes, as compare does."""
    path = _config(tmp_path, digits)
    text = path.read_text().replace("[build]\n", "[build]\nkeep_io_types = false\n")
    path.write_text(text.replace("[bundle]\n", "[bundle]\nenabled = false\n"))
    result = run_cli("run", path, "--json", tmp_path / "run.json")
    assert result.code == 0, result.stderr
    record = json.loads((tmp_path / "run.json").read_text())
    fp16 = next(p for p in record["precisions"] if p["precision"] == "fp16")
    assert set(fp16["profile"]["batch_sizes"]) == {"1", "4"}
    assert not fp16["profile"]["settings"]["data"]["synthetic"]


def test_a_leading_tilde_in_a_config_path_is_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config has no shell to expand ``~``: workdir = "~/out" made a folder named ``~`` beside the
    config (which ``rm -rf ~`` then cleans up with the home folder). A leading ``~`` is the home
    folder in every path key, a matrix's too; a ``~user`` no user has is refused in one line; ``$VAR``
    is a name like any other."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.matrix_config import matrix_from_dict
    from edgedeploy.pipeline.run import bundle_dir, input_files

    home, project = tmp_path / "home", tmp_path / "project"
    (home / "data").mkdir(parents=True)
    project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    np.savez(home / "data" / "val.npz", x=np.zeros((2, 3), np.float32))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), home / "m.onnx")
    data: dict[str, Any] = {
        "workdir": "~/out",
        "model": {"source": "~/m.onnx"},
        "build": {"timing_cache": "~/timing.cache"},
        "calibration": {"data": "~/data/val.npz"},
        "compare": {"data": "~/data"},
        "bundle": {"output": "~/bundle"},
    }
    config = from_dict(data, project)
    assert config.path(config.workdir) == home / "out"
    assert config.path(config.build.timing_cache or "") == home / "timing.cache"
    assert bundle_dir(config) == (home / "bundle").resolve()
    assert set(input_files(config)) == {home / "m.onnx", home / "data", home / "data" / "val.npz"}
    assert from_dict({**data, "model": {"source": "~/models.py:build"}}, project).model.source == (
        f"{home}/models.py:build"
    )
    assert from_dict({"workdir": "$HOME/out"}, project, require_model=False).workdir == "$HOME/out"
    refused = r"config workdir '~no-such-user-here/out': no user 'no-such-user-here'"
    with pytest.raises(InputError, match=refused):
        from_dict({"workdir": "~no-such-user-here/out"}, project, require_model=False)
    matrix = matrix_from_dict(
        {
            "workdir": "~/farm",
            "bundle": {"output": "~/bundles"},
            "matrix": {"targets": ["x86-64-cpu"], "precisions": ["fp32"], "models": [{"source": "~/m.onnx"}]},
        },
        project,
    )
    assert matrix.workdir == home / "farm" and matrix.bundles_root == home / "bundles"
    assert matrix.models["m"].model.source == f"{home}/m.onnx"


def test_a_config_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """TOML is UTF-8; the loaders read the file in the locale's encoding, and where that was ASCII
    (LC_ALL=C without Python's UTF-8 coercion) a config naming ``dé/m.onnx`` was "not valid TOML:
    'ascii' codec can't decode byte 0xc3". run and matrix read it, and say what is wrong with it."""
    import os
    import sys

    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    run = tmp_path / "run.toml"
    run.write_text('workdir = "out"\n[model]\nsource = "dé/m.onnx"\n', encoding="utf-8")
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'workdir = "farm"\n[matrix]\ntargets = ["x86-64-cpu"]\nprecisions = ["fp32"]\n'
        '[[matrix.models]]\nsource = "dé/m.onnx"\n',
        encoding="utf-8",
    )
    for command, config in (("run", run), ("matrix", matrix)):
        result = run_cli(command, config, env=env)
        assert_clean_input_error(result)
        assert "not valid TOML" not in result.stderr and "m.onnx" in result.stderr, result.stderr


def test_a_top_level_key_written_under_a_table_is_said_so(tmp_path: Path) -> None:
    """TOML puts a key written after a [section] header in that section: workdir added at the end of
    a config was "unknown config key 'bundle.workdir'; valid keys: enabled, output, primary", which
    sends the reader to the bundle keys. The line says where workdir goes."""
    from edgedeploy.config import from_dict

    with pytest.raises(InputError) as refused:
        from_dict({"model": {"source": "m.onnx"}, "bundle": {"workdir": "w"}}, tmp_path)
    assert str(refused.value) == (
        "unknown config key 'bundle.workdir': workdir is a top-level key: write it above the first [section]"
    )
    from edgedeploy.pipeline.matrix_config import matrix_from_dict

    matrix = {"targets": ["x86-64-cpu"], "precisions": ["fp32"], "models": [{"source": "m.onnx"}]}
    for where, data in (
        ("matrix", {"matrix": {**matrix, "workdir": "w"}}),
        ("matrix.models[0]", {"matrix": {**matrix, "models": [{"source": "m.onnx", "workdir": "w"}]}}),
    ):
        with pytest.raises(InputError) as refused:
            matrix_from_dict(data, tmp_path)
        said = f"unknown config key '{where}.workdir': workdir is a top-level key"
        assert str(refused.value).startswith(said)


@pytest.mark.parametrize(
    ("section", "key", "value", "said"),
    [
        ("compare", "min_cosine", 2.0, "config compare.min_cosine must lie in (-1, 1], got 2.0"),
        ("compare", "atol", -1.0, "config compare.atol must be a finite number >= 0, got -1.0"),
        ("compare", "min_top1", 0.0, "config compare.min_top1 must lie in (0, 1], got 0.0"),
        ("profile", "batch_sizes", [0], "config profile.batch_sizes must be whole numbers >= 1, got [0]"),
        (
            "profile",
            "duration_s",
            -1.0,
            "config profile.duration_s must be a number of seconds >= 0, got -1.0",
        ),
        ("profile", "warmup_ms", -1.0, "config profile.warmup_ms must be a number of ms >= 0, got -1.0"),
        ("profile", "warmup", -1, "config profile.warmup must be a whole number >= 0, got -1"),
        ("profile", "iterations", 0, "config profile.iterations must be a whole number >= 1, got 0"),
    ],
)
def test_a_gate_or_profile_value_refused_in_a_config_is_named_by_its_key(
    tmp_path: Path, section: str, key: str, value: object, said: str
) -> None:
    """run and matrix refused [compare] min_cosine = 2 as "min_cosine must lie in (-1, 1]" and
    [profile] batch_sizes = [0] as "profile batch sizes must be ...", the stage's words, where every
    other config refusal names the key as written; they now say compare.min_cosine, profile.batch_sizes."""
    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.matrix_config import matrix_from_dict
    from edgedeploy.pipeline.run import check_config

    dynamic_matmul_model(tmp_path)  # m.onnx
    run = {"model": {"source": "m.onnx"}, section: {key: value}}
    with pytest.raises(InputError) as refused:
        check_config(from_dict(run, tmp_path))
    assert str(refused.value) == said
    matrix = {"targets": ["x86-64-cpu"], "precisions": ["fp32"], "models": [{"source": "m.onnx"}]}
    with pytest.raises(InputError) as refused:
        matrix_from_dict({"matrix": matrix, section: {key: value}}, tmp_path)
    assert str(refused.value) == said


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("bundle", "create", "m.onnx", "--min-cosine", "2"), "--min-cosine must lie in (-1, 1], got 2.0"),
        (("profile", "m.onnx", "--batch-sizes", "0"), "--batch-sizes must be whole numbers >= 1, got [0]"),
        (("profile", "m.onnx", "--warmup-ms", "-1"), "--warmup-ms must be a number of ms >= 0, got -1.0"),
        (("profile", "m.onnx", "--duration", "nan"), "--duration must be a number of seconds >= 0, got nan"),
    ],
)
def test_a_gate_or_profile_value_refused_on_the_command_line_is_named_by_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], said: str
) -> None:
    """The same refusals from bundle create's and profile's flags said "min_cosine must ..." and
    "profile batch sizes must ...": they name the flag given."""
    from tests.conftest import run_in_process

    dynamic_matmul_model(tmp_path)  # m.onnx
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(*args, *(("-o", "b") if args[0] == "bundle" else ()))
    assert code == 2, err
    assert f"{said}\n" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--min-cosine", "2"), "--min-cosine must lie in (-1, 1], got 2.0"),
        (("--atol", "-1"), "--atol must be a finite number >= 0, got -1.0"),
        (("--min-top1", "0"), "--min-top1 must lie in (0, 1], got 0.0"),
    ],
)
def test_a_gate_refused_by_compare_is_named_by_its_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...], said: str
) -> None:
    """compare --min-cosine 2 said "min_cosine must lie in (-1, 1]", the gate's field, where bundle
    create names the flag: compare names it too."""
    from tests.conftest import run_in_process

    dynamic_matmul_model(tmp_path)  # m.onnx
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("compare", "m.onnx", "m.onnx", "--input", "x:2x8", *flags)
    assert code == 2, err
    assert f"{said}\n" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("refused", "setting", "stage_said"),
    [
        ({"atol": -1.0}, ("compare", "atol"), "atol must be a finite number >= 0, got -1.0"),
        ({"rtol": math.nan}, ("compare", "rtol"), "rtol must be a finite number >= 0, got nan"),
        ({"min_cosine": 2.0}, ("compare", "min_cosine"), "min_cosine must lie in (-1, 1], got 2.0"),
        (
            {"min_top1": {"y": 0.0}},
            ("compare", "min_top1"),
            "min_top1 must lie in (0, 1] (output 'y'), got 0.0",
        ),
        (
            {"min_top1": {}},
            ("compare", "min_top1"),
            "min_top1 names no output; give a value, or NAME:VALUE pairs",
        ),
        (
            {"duration_s": -1.0},
            ("profile", "duration_s"),
            "profile duration must be a number of seconds >= 0, got -1.0",
        ),
        (
            {"warmup_ms": math.inf},
            ("profile", "warmup_ms"),
            "profile warm-up must be a number of ms >= 0, got inf",
        ),
        (
            {"warmup_iterations": -1},
            ("profile", "warmup"),
            "profile warm-up iterations must be a whole number >= 0, got -1",
        ),
        (
            {"iterations": 0},
            ("profile", "iterations"),
            "profile iterations must be a whole number >= 1, got 0",
        ),
        ({"threads": 0}, ("profile", "threads"), "profile threads must be a whole number >= 1, got 0"),
        (
            {"batch_sizes": (0,)},
            ("profile", "batch_sizes"),
            "profile batch sizes must be whole numbers >= 1, got [0]",
        ),
    ],
)
def test_a_refused_gate_or_profile_value_is_named_by_a_config_key_and_a_flag_that_exist(
    refused: dict[str, Any], setting: tuple[str, str], stage_said: str
) -> None:
    """The gates' and profile settings' refusals were renamed to their config key or flag by matching
    the start of their text, which a reworded message would silently slip; they carry the setting
    (errors.SettingError), its text still the stage's words, and that setting is a key of its config
    section and names a flag of the command that takes it (compare, profile)."""
    import dataclasses

    import typer.main

    from edgedeploy.cli import app
    from edgedeploy.config import CompareSection, ProfileSection
    from edgedeploy.errors import SettingError
    from edgedeploy.options import setting_named
    from edgedeploy.stages.compare import Gates
    from edgedeploy.stages.profile import ProfileOptions

    section, key = setting
    with pytest.raises(SettingError) as caught:
        Gates(**refused) if section == "compare" else ProfileOptions(**refused)
    assert (caught.value.setting, str(caught.value)) == (setting, stage_said)
    config_section = CompareSection if section == "compare" else ProfileSection
    assert key in {f.name for f in dataclasses.fields(config_section)}
    said = str(setting_named(caught.value, from_config=True))
    assert said == f"config {section}.{key} {caught.value.said}" and stage_said.endswith(caught.value.said)
    command = typer.main.get_command(app).commands[section]  # type: ignore[attr-defined]
    flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
    flag = str(setting_named(caught.value, from_config=False)).split(" ")[0]
    assert flag in flags, flag
