"""TensorRT backend: byte-pure engines for Jetson boards and desktop GPUs, keyed, checked and explained.

``build`` plans the settings (trt_plan), builds through Polygraphy (trt_build), summarises the
engine inspector's layer information (trt_inspect) and writes three files atomically:
``<stem>.engine`` (the plan, byte for byte as TensorRT made it, so trtexec reads it),
``<stem>.layers.json`` and the sidecar ``<stem>.engine.json`` (trt_sidecar), written last, once
the engine has run once (trt_check: refused when it fails; "built, not run" where no GPU runtime
answers). A build whose key matches the sidecar of an intact engine is skipped. ``runner`` refuses an engine
built for another TensorRT or GPU before TensorRT gives its cryptic deserialization error.
tensorrt and pycuda are imported only when a method needs them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedeploy.backends import trt_build, trt_check, trt_env, trt_inspect, trt_sidecar
from edgedeploy.backends.base import BuildOptions, BuildResult
from edgedeploy.backends.runtime.runner import PycudaEngineRunner
from edgedeploy.backends.trt_plan import (
    TrtVersion,
    check_settings,
    plan_build,
    read_model_facts,
    refuse_values_tensorrt_lacks,
    resolve_profiles,
)
from edgedeploy.errors import BackendUnavailable, InputError, not_a_file
from edgedeploy.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    sha256_json,
    written_together,
)

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

log = logging.getLogger(__name__)

# Module-level for `edgedeploy doctor` and the gpu test markers.
probe = trt_env.probe
gpu_tests_can_run = trt_env.gpu_tests_can_run

ENV_KEY_FIELDS = ("tensorrt", "gpu_name", "compute_capability", "cuda_driver", "jetson_model", "l4t_release")


def _input_record(path: Path | None, sidecar: Path) -> dict[str, str] | None:
    """A file the engine was built from, by content, and by path from the ``sidecar``'s folder, so
    it resolves wherever the build ran and the folder holding both is moved
    (trt_sidecar.recorded_path)."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise not_a_file("file", path)
    return {**trt_sidecar.relative_record(path, sidecar), "sha256": sha256_file(path)}


class TensorRTBackend:
    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        return trt_env.availability()

    def describe(self) -> dict[str, str]:
        facts = trt_env.probe()
        described = {"backend": self.name}
        for key in (
            "tensorrt",
            "pycuda",
            "gpu_name",
            "compute_capability",
            "cuda_driver",
            "jetson_model",
            "l4t_release",
        ):
            described[key] = facts.get(key) or "unknown"
        try:
            import polygraphy

            described["polygraphy"] = str(polygraphy.__version__)
        except ImportError:  # pragma: no cover - a hard dependency
            described["polygraphy"] = "missing"
        return described

    def _require(self) -> None:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailable(why)

    def check_options(self, options: BuildOptions, model: Path | None = None) -> None:
        """Options this TensorRT release or the target cannot serve (DLA with dynamic shapes,
        hardware compatibility on Jetson...), and a dynamic input of ``model`` no profile ranges, are
        refused before the precision stage runs (its artifact keeps the model's input shapes): every
        check of the build's plan that needs no artifact (trt_plan.check_settings)."""
        self._require()
        version = TrtVersion.parse(trt_env.tensorrt_version() or "0.0")
        if model is not None:
            profiles = resolve_profiles(model, options.profiles)
        else:  # the ranges as given: an input that follows another's range takes a range given
            profiles = [{n: [list(r) for r in rng] for n, rng in p.shapes.items()} for p in options.profiles]
        check_settings(options, version, profiles)

    def build(self, model: Path, options: BuildOptions, out_dir: Path) -> BuildResult:
        model = Path(model)
        if not model.is_file():
            raise not_a_file("model", model)
        refuse_values_tensorrt_lacks(model, options.target.name, "build it for ONNX Runtime instead")
        self._require()
        env = trt_env.environment()
        version = TrtVersion.parse(env["tensorrt"] or "0.0")
        plan = plan_build(model, options, version, read_model_facts(model))
        out_dir = Path(out_dir)
        engine = out_dir / f"{model.stem}.engine"
        sidecar = trt_sidecar.sidecar_path(engine)
        inputs = {
            "model": _input_record(model, sidecar),
            "calibration_cache": _input_record(Path(plan.calibration_cache), sidecar)
            if plan.calibration_cache
            else None,
            "precision_plan": _input_record(options.precision_plan, sidecar) if plan.fp32_layers else None,
        }
        key = sha256_json(
            {
                "plan": plan.key_fields(),
                "inputs": {k: v["sha256"] if v else None for k, v in inputs.items()},
                "environment": {k: env.get(k) for k in ENV_KEY_FIELDS},
                "target": options.target.name,
            }
        )
        layers = trt_sidecar.layers_path(engine)
        files = [engine, sidecar, layers]

        if not options.force:
            try:
                # its own engine_sha256 check below rebuilds without a warning
                existing = trt_sidecar.read_sidecar(engine, check_engine=False)
            except InputError:
                existing = None
            if (
                existing is not None
                and existing.get("build_key") == key
                and "checked" in existing  # one built before engines were run once is built (and run) again
                and engine.is_file()
                and layers.is_file()
                and sha256_file(engine) == existing.get("engine_sha256")
            ):
                return BuildResult(
                    backend=self.name,
                    artifact=engine,
                    files=files,
                    skipped=True,
                    info={"build_key": key, "reason": "build key matches the existing engine", **existing},
                )

        build_log = trt_build.BuildLog()
        try:
            built = trt_build.build(
                model, plan, timing_cache=options.timing_cache, log=build_log, target_name=options.target.name
            )
        except AttributeError as exc:  # an API this release lacks that trt_versions does not list yet
            raise InputError(
                f"TensorRT {version} has no {exc.name or exc}: this build needs a newer TensorRT "
                "(see docs/tensorrt-facts.md)"
            ) from None
        check = trt_check.run_once(
            built.plan_bytes,
            engine,
            model,
            version_compatible=plan.version_compatible,
            dla_core=plan.dla_core,
            feed=options.feed,
            shapes=options.shapes,
        )
        if not check.ran:
            said = "run it on the GPU it is for (compare, or the bundle's verify.sh)"
            log.warning("%s: %s; %s", engine.name, check.checked, said)
        summary = trt_inspect.summarise(built.layer_info_json, plan.precision)
        notes = list(plan.notes)
        if built.layer_info_problem:
            notes.append(built.layer_info_problem)
        if built.fp32_layers_unmatched:
            notes.append(
                f"no TensorRT layer matched these FP32 nodes: {', '.join(built.fp32_layers_unmatched)}"
            )
        for line in [*notes, *summary.warnings]:
            log.warning(line)

        with written_together(engine, layers, sidecar):  # the engine, its layer report and sidecar, or none
            atomic_write_text(layers, built.layer_info_json if built.layer_info_json.strip() else "{}")
            atomic_write_bytes(engine, built.plan_bytes)
            record: dict[str, Any] = {
                "format": trt_sidecar.SIDECAR_FORMAT,
                "build_key": key,
                "engine_sha256": sha256_file(engine),
                "target": options.target.name,
                "precision": plan.precision,
                **{k: env.get(k) for k in ENV_KEY_FIELDS},
                "plan": plan.key_fields(),
                "tf32": plan.tf32,
                "dla_core": plan.dla_core,
                "version_compatible": plan.version_compatible,
                "inputs": inputs,
                "timing_cache": str(options.timing_cache) if options.timing_cache else None,
                "build_seconds": round(built.seconds, 3),
                "fp32_layers_pinned": built.fp32_layers_pinned,
                "layer_summary": dataclasses.asdict(summary),
                "notes": notes,
                "warnings": summary.warnings,
                **check.record(),  # "checked": as the ONNX Runtime backend's sidecar says it
            }
            atomic_write_json(sidecar, record)
        return BuildResult(backend=self.name, artifact=engine, files=files, skipped=False, info=record)

    def runner(self, artifact: Path, *, threads: int | None = None) -> BaseRunner:
        """A Polygraphy runner over the pycuda engine session; ``threads`` is for CPU backends."""

        artifact = Path(artifact)
        if not artifact.is_file():
            raise not_a_file("engine", artifact)
        if artifact.suffix != ".engine":
            raise InputError(
                f"{artifact.name} is not a TensorRT engine (.engine); build it with --backend tensorrt"
            )
        self._require()
        built = trt_sidecar.read_sidecar(artifact)
        if built is None and not trt_sidecar.sidecar_path(artifact).is_file():  # else: warned
            log.warning(
                "%s has no sidecar: cannot check it was built for this TensorRT and GPU", artifact.name
            )
        for warning in trt_sidecar.check_loadable(artifact, built, trt_env.environment()):
            log.warning(warning)
        return PycudaEngineRunner(artifact)
