"""The run every TensorRT engine gets before it is called built, as every artifact does.

The engine just built is loaded with the runtime ``profile`` and ``compare`` use
(:class:`~edgedeploy.backends.runtime.engine.EngineSession`) and run once: on the first batch of
the user's calibration data when there is one, else on seeded random inputs of the ``--input``
shapes, else of each dynamic input's OPT shape in the first profile (also where the data or those
shapes lie outside the engine's profiles, said in the record). Its outputs are checked against the
ONNX model it was built from, run by ONNX Runtime on the same inputs: the same shapes, and no NaN
or inf where the model's values are finite. An engine that fails is refused and not kept. Where no
GPU runtime answers here (TensorRT built for another board, with no CUDA device or pycuda here)
the engine is "built, not run", in its record and in a warning, and never called run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedeploy.backends import trt_env
from edgedeploy.backends.runtime.engine import EngineSession
from edgedeploy.errors import InputError, first_line
from edgedeploy.fileio import scratch_beside

RUN = "loaded and run once"  # the ONNX Runtime backend's words for the same check
NOT_RUN = "built, not run"


@dataclass
class EngineCheck:
    checked: str  # RUN (with what was not checked, if anything), or NOT_RUN and why
    fed: str | None = None  # what it ran on
    shapes: dict[str, list[int]] | None = None  # the input shapes it ran at

    @property
    def ran(self) -> bool:
        return self.checked.startswith(RUN)

    def record(self) -> dict[str, Any]:
        """The sidecar's fields."""
        return {"checked": self.checked, "checked_on": self.fed, "checked_shapes": self.shapes}


def run_once(
    plan_bytes: bytes,
    engine: Path,
    source: Path,
    *,
    version_compatible: bool,
    dla_core: int | None,
    feed: Mapping[str, Any] | None,
    shapes: Mapping[str, tuple[int, ...]],
) -> EngineCheck:
    """Run the plan ``plan_bytes`` (to be written as ``engine``, built from the ONNX ``source``) once
    and check its outputs; InputError, naming ``engine``, when it cannot load or run or its outputs
    are wrong. ``feed``: a batch of the user's data; ``shapes``: the ``--input`` shapes."""
    usable, why = trt_env.availability()
    if not usable:
        return EngineCheck(f"{NOT_RUN}: {why}")
    engine.parent.mkdir(parents=True, exist_ok=True)
    with scratch_beside(engine, "check") as folder:  # no sidecar beside it: the plan's own settings
        path = folder / engine.name
        path.write_bytes(plan_bytes)
        session = EngineSession(path, version_compatible=version_compatible, dla_core=dla_core)
        try:
            session.open()
        except InputError as exc:  # TensorRT could not deserialize the plan it had just built
            said = str(exc).split("; rebuild")[0]
            raise InputError(f"{said}, just after building it; it was not kept") from None
        except AttributeError as exc:  # an API this release lacks (the runner says it alike)
            return EngineCheck(f"{NOT_RUN}: this TensorRT has no {exc.name or exc}, which the runtime uses")
        except Exception as exc:  # pycuda or the CUDA driver: no context here
            return EngineCheck(f"{NOT_RUN}: no CUDA context here ({first_line(exc)[:200]})")
        try:
            fed, inputs = _fitting_feed(session, source, feed, shapes)
            try:
                session.set_input_shapes({k: tuple(np.shape(v)) for k, v in inputs.items()})
            except InputError as exc:  # a data-dependent output shape: TensorRT runs it, our runtime not
                return EngineCheck(f"{NOT_RUN}: edgedeploy's runtime cannot run it ({exc})")
            try:
                outputs = session.infer(inputs)
            except Exception as exc:
                raise InputError(
                    f"TensorRT cannot run {engine.name} on {fed} ({first_line(exc)[:200]}); it was not kept"
                ) from None
        finally:
            session.close()
    problems, unchecked = _output_problems(source, inputs, outputs)
    if problems:
        raise InputError(f"{engine.name} ran on {fed}, but {'; '.join(problems)}; it was not kept")
    ran = {k: [int(d) for d in np.shape(v)] for k, v in inputs.items()}
    return EngineCheck(RUN + (f"; {unchecked}" if unchecked else ""), fed, ran)


def _fitting_feed(
    session: EngineSession,
    source: Path,
    feed: Mapping[str, Any] | None,
    shapes: Mapping[str, tuple[int, ...]],
) -> tuple[str, dict[str, Any]]:
    """What the engine runs on, and its inputs: the user's data, else random inputs of ``shapes``,
    else random inputs at the engine's default (OPT) shapes, the first whose shapes the engine
    takes; the random ones are made as the ONNX Runtime artifact's check makes them."""
    from calibration.artifacts import default_feed

    names = {t.name for t in session.inputs}
    tried: list[tuple[str, dict[str, Any] | None]] = []
    if feed is not None:
        tried.append(("the calibration data", dict(feed)))
    if shapes:
        tried.append(("the --input shapes", default_feed(source, dict(shapes))))
    passed: list[str] = []
    for what, inputs in tried:
        if inputs is None:
            continue
        inputs = {k: v for k, v in inputs.items() if k in names}
        try:
            session.load(inputs)
        except Exception as exc:  # outside every profile, an input missing, a dtype it cannot take
            passed.append(f"{what}: {first_line(exc).split('; rebuild')[0]}")
            continue
        return ("the calibration data" if what == "the calibration data" else "random inputs"), inputs
    default = session.default_shapes()
    inputs = default_feed(source, default) or {}
    inputs = {k: v for k, v in inputs.items() if k in names}
    if {k: tuple(np.shape(v)) for k, v in inputs.items()} != default:
        inputs = session.random_feed()  # at the default shapes
    fed = "random inputs" + (f" ({'; '.join(passed)})" if passed else "")
    return fed, inputs


def _output_problems(
    source: Path, inputs: Mapping[str, Any], outputs: Mapping[str, np.ndarray]
) -> tuple[list[str], str | None]:
    """How the engine's ``outputs`` differ from the ONNX model's on the same ``inputs`` in shape or
    in finiteness; and, where ONNX Runtime cannot run the model on them, why nothing was compared."""
    from calibration.artifacts import model_outputs
    from calibration.graphs import ort_error
    from calibration.modelinfo import model_io

    try:
        wanted = model_outputs(source, inputs)
        names = [spec.name for spec in model_io(source)[1]]
    except Exception as exc:
        return [], f"outputs not checked: ONNX Runtime cannot run {source.name} on them ({ort_error(exc)})"
    problems = []
    for name, want in zip(names, wanted, strict=False):
        have = outputs.get(name)
        if have is None or not isinstance(want, np.ndarray):
            continue
        if have.shape != want.shape:
            problems.append(
                f"output '{name}' has shape {list(have.shape)} where the ONNX model gives {list(want.shape)}"
            )
        elif have.dtype.kind in "fc" and want.dtype.kind in "fc":
            bad = int(np.count_nonzero(~np.isfinite(have) & np.isfinite(want)))
            if bad:
                problems.append(
                    f"output '{name}' holds {bad} NaN or inf values where the ONNX model's are finite"
                )
    return problems, None
