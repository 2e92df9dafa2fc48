"""The JSON beside every engine: what it was built for, from what, and whether it may load here.

Engines stay byte-pure plans (trtexec reads them as they are); everything else lives in
``<stem>.engine.json``. An engine only runs on the TensorRT version and GPU it was built for
(unless built version- or hardware-compatible), and TensorRT's own refusal is a cryptic
deserialization error, so the runner compares the sidecar with this machine first and says
what differs and how to rebuild (docs/design.md, problem 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgedeploy.backends.trt_plan import TrtVersion
from edgedeploy.errors import InputError

SIDECAR_FORMAT = "edgedeploy.engine/1"


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".json")


def layers_path(engine: Path) -> Path:
    return engine.with_name(engine.name.removesuffix(".engine") + ".layers.json")


def read_sidecar(engine: Path) -> dict[str, Any] | None:
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"engine sidecar {path} is not JSON ({exc}); rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{path} is not an edgedeploy engine sidecar; rebuild the engine")
    return data


def differences(built: dict[str, Any], here: dict[str, str | None]) -> list[str]:
    """What about this machine keeps the engine from loading; empty when it may load."""
    plan = built.get("plan", {})
    diffs: list[str] = []
    b_trt, h_trt = built.get("tensorrt"), here.get("tensorrt")
    if b_trt and h_trt and b_trt != h_trt:
        bv, hv = TrtVersion.parse(b_trt), TrtVersion.parse(h_trt)
        compatible = plan.get("version_compatible") and bv.major == hv.major and hv >= bv
        if not compatible and (bv.major, bv.minor, bv.patch) != (hv.major, hv.minor, hv.patch):
            diffs.append(f"TensorRT {b_trt} (here {h_trt})")
    b_cc, h_cc = built.get("compute_capability"), here.get("compute_capability")
    if b_cc and h_cc and b_cc != h_cc:
        hardware = plan.get("hardware_compatibility")
        ampere_ok = hardware == "AMPERE_PLUS" and tuple(int(x) for x in h_cc.split(".")) >= (8, 0)
        if not ampere_ok:
            diffs.append(f"compute capability {b_cc} (here {h_cc})")
    b_gpu, h_gpu = built.get("gpu_name"), here.get("gpu_name")
    if b_gpu and h_gpu and b_gpu != h_gpu and not plan.get("hardware_compatibility") and b_cc == h_cc:
        diffs.append(f"GPU {b_gpu} (here {h_gpu})")
    return diffs


def check_loadable(engine: Path, built: dict[str, Any] | None, here: dict[str, str | None]) -> None:
    if built is None:
        return
    diffs = differences(built, here)
    if diffs:
        source = built.get("inputs", {}).get("model", {}).get("path", "the ONNX model")
        target = built.get("target", "TARGET")
        raise InputError(
            f"{engine.name} was built for {', '.join(diffs)}: rebuild it on this machine with "
            f"`edgedeploy build {source} --backend tensorrt --target {target}`"
        )
