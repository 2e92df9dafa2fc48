"""ONNX Runtime backend: the CPU path that runs everywhere, CI included.

"Building" for ONNX Runtime means letting it apply its portable graph optimizations
(ORT_ENABLE_EXTENDED: fusions that do not depend on this CPU's instruction set) and saving the
result, with a sidecar JSON that records the ONNX Runtime version, session options, input
hash and what the artifact's check found, sealed with the digest of its content. A build whose
key matches an intact sidecar is skipped, and gives the sidecar's record as a fresh build does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgedeploy.backends.base import BuildOptions, BuildResult
from edgedeploy.errors import InputError, first_line
from edgedeploy.fileio import (
    RECORD_DIGEST,
    atomic_path,
    atomic_write_json,
    intact_record,
    sealed,
    sha256_file,
    sha256_json,
    written_together,
)
from edgedeploy.onnxio import onnx_stem

if TYPE_CHECKING:
    import onnxruntime as ort
    from polygraphy.backend.base import BaseRunner

PROVIDERS = ["CPUExecutionProvider"]


def session_options(
    threads: int | None = None,
    *,
    optimized_path: Path | None = None,
    level: str = "all",
    emulate_integer: bool = False,
) -> ort.SessionOptions:
    """The session options every stage uses, so accuracy is measured as the artifact will run
    (``emulate_integer``: as it runs on its target, where this CPU lacks the target's integer
    kernels, see :func:`calibration.observers.emulate_integer_kernels`)."""
    import onnxruntime as ort

    from calibration.observers import emulate_integer_kernels

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # fatal only: ONNX Runtime also logs each error it raises (in colour, on stderr); the error
    # reaches the user once, as one line (edgedeploy.errors.user_failure)
    opts.log_severity_level = 4
    if optimized_path is not None:
        opts.optimized_model_filepath = os.fspath(optimized_path)
    if emulate_integer:
        emulate_integer_kernels(opts)
    return opts


def create_session(
    model: str | os.PathLike[str], threads: int | None = None, *, emulate_integer: bool = False
) -> ort.InferenceSession:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            os.fspath(model),
            sess_options=session_options(threads, emulate_integer=emulate_integer),
            providers=PROVIDERS,
            disabled_optimizers=crashing_optimizers(model),
        )
    except Exception as exc:
        from edgedeploy.onnxio import check_external_data

        check_external_data(model)
        first = first_line(exc)
        raise InputError(f"ONNX Runtime cannot load {model}: {first[:300]}") from None


def crashing_optimizers(model: str | os.PathLike[str]) -> list[str]:
    """The optimizers that would kill the process loading ``model`` at ORT_ENABLE_ALL (see
    :func:`calibration.graphs.ort_crashing_optimizers`); none for a file that is no ONNX model,
    which the session refuses with its own message."""
    import onnx

    from calibration.graphs import ort_crashing_optimizers

    try:
        return ort_crashing_optimizers(onnx.load(os.fspath(model), load_external_data=False))
    except Exception:  # not an ONNX file (an engine, a damaged file): ONNX Runtime says why
        return []


SAVE_LEVELS = ("extended", "basic")  # the portable levels, most optimized first


def _save_optimized(
    model: Path,
    artifact: Path,
    threads: int | None,
    shapes: dict[str, tuple[int, ...]],
    data: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Save ``model`` as ONNX Runtime optimizes it, checked like every artifact; returns the level
    and, when the check could only load it, why (calibration.artifacts.verify_artifact). The check
    runs it on ``data`` (a batch of the user's calibration data) when given, else on random inputs
    of ``shapes``.

    Some extended fusions save a graph that does not load again (a function inlined into an
    invalid If, for one); the build then keeps the basic level's graph, or the model as given.
    """
    import onnxruntime as ort

    from calibration.artifacts import ArtifactError, default_feed, verify_artifact
    from calibration.graphs import ort_error

    # a batch of the user's data, else random inputs of the --input shapes (None: verify_artifact's own)
    feed = data if data is not None else default_feed(model, shapes) if shapes else None
    fed = "the calibration data" if data is not None else "random inputs"
    why = ""
    for level in SAVE_LEVELS:
        try:
            with atomic_path(artifact, suffix=".onnx") as tmp:
                try:
                    ort.InferenceSession(
                        os.fspath(model),
                        providers=PROVIDERS,
                        sess_options=session_options(threads, optimized_path=tmp, level=level),
                    )
                except Exception as exc:
                    raise ArtifactError(ort_error(exc)) from None
                unrun = verify_artifact(tmp, feed, source=model, what=f"its {level}-optimized graph", fed=fed)
            return level, unrun
        except ArtifactError as exc:
            why = str(exc)
    try:  # the model itself (checked by the stage that wrote it) runs; ORT optimizes it when loading
        with atomic_path(artifact, suffix=".onnx") as tmp:
            shutil.copyfile(model, tmp)
            unrun = verify_artifact(tmp, feed, source=model, what=model.name, fed=fed)
    except ArtifactError as exc:
        raise InputError(f"ONNX Runtime cannot build {model.name}: {why}; {exc}") from None
    return "disable", unrun


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def check_options(self, options: BuildOptions, model: Path | None = None) -> None:
        """ONNX Runtime ignores the TensorRT options; nothing depends on its version."""

    def available(self) -> tuple[bool, str]:
        return True, "ONNX Runtime (CPUExecutionProvider)"

    def describe(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__, "provider": PROVIDERS[0]}

    def build(self, model: Path, options: BuildOptions, out_dir: Path) -> BuildResult:
        import onnxruntime as ort

        from calibration.feeds import feed_sha256

        stem = onnx_stem(model.name)
        artifact = out_dir / f"{stem}.ort.onnx"
        sidecar = out_dir / f"{stem}.ort.json"
        # what its sessions must switch off (a model float16 before the build, which the fp16
        # conversion leaves as it is): part of the key, so no sidecar written without it is reused
        disabled = crashing_optimizers(model)
        key = sha256_json(
            {
                "model": sha256_file(model),
                "onnxruntime": ort.__version__,
                "level": "extended",
                "target": options.target.name,
                **({"disabled_optimizers": disabled} if disabled else {}),
                # the batch the artifact is checked on (without one, the shapes of its random inputs):
                # what the check found (and the level saved, when a graph fails it where the model
                # runs) is the sidecar's
                **({"feed": feed_sha256(options.feed)} if options.feed is not None else {}),
                **({"shapes": options.shapes} if options.feed is None and options.shapes else {}),
            }
        )
        if not options.force and artifact.is_file() and sidecar.is_file():
            try:
                recorded = json.loads(sidecar.read_text())
                # reused only as written: a replaced, truncated or edited artifact is built again, and
                # so is one whose sidecar was edited (what its check found is the record's to vouch for)
                same = intact_record(recorded) and recorded.get("artifact_sha256") == sha256_file(artifact)
                if recorded.get("build_key") == key and same:
                    # the record of the build that made it, as a fresh build gives it ("checked" too)
                    made = {k: v for k, v in recorded.items() if k != RECORD_DIGEST}
                    return BuildResult(self.name, artifact, [artifact, sidecar], skipped=True, info=made)
            except (OSError, ValueError):
                pass
        out_dir.mkdir(parents=True, exist_ok=True)
        with written_together(artifact, sidecar):  # never the artifact without its sidecar
            level, unrun = _save_optimized(model, artifact, options.threads, options.shapes, options.feed)
            disabled = sorted({*disabled, *crashing_optimizers(artifact)})
            # the check ran at ORT_ENABLE_ALL with these off (calibration.artifacts.verify_artifact);
            # said here, since a session at ONNX Runtime's defaults dies loading the artifact
            run = f"ORT_ENABLE_ALL without {', '.join(disabled)}" if disabled else "ORT_ENABLE_ALL"
            info: dict[str, Any] = {
                "build_key": key,
                "backend": self.name,
                "onnxruntime": ort.__version__,
                "providers": PROVIDERS,
                "graph_optimization_level": f"ORT_ENABLE_{level.upper()} (saved) + {run} (run)",
                **({"disabled_optimizers": disabled} if disabled else {}),
                "source": model.name,
                "source_sha256": sha256_file(model),
                "target": options.target.name,
                "precision": options.precision,
                "artifact_sha256": sha256_file(artifact),
                # "run": what the check did; an artifact only loaded is not called built without a word
                "checked": "loaded and run once" if unrun is None else f"loaded, not run: {unrun}",
            }
            atomic_write_json(sidecar, sealed(info))  # with the digest of its content: see the reuse above
        return BuildResult(self.name, artifact, [artifact, sidecar], skipped=False, info=info)

    def runner(
        self, artifact: Path, *, threads: int | None = None, emulate_integer: bool = False
    ) -> BaseRunner:
        """A Polygraphy runner of ``artifact`` (``emulate_integer``: see :func:`session_options`)."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        create_session(artifact, threads, emulate_integer=emulate_integer)  # fail early with a clear line

        def load() -> ort.InferenceSession:
            return create_session(artifact, threads, emulate_integer=emulate_integer)

        return OnnxrtRunner(load, name=f"onnxrt:{artifact.name}")
