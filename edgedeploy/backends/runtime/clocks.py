"""Read the settings that decide a latency figure: power mode, GPU clocks, whether they are pinned.

trtexec and a Python app disagree when clocks or power modes differ (docs/design.md, problem 8), so every
profile records what could be read: on Jetson ``nvpmodel -q`` and the GPU devfreq node in sysfs,
on a desktop ``nvidia-smi``'s clocks, power limit and performance state. Nothing here needs root;
what cannot be read is left out, never guessed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DEVFREQ_ROOTS = (Path("/sys/class/devfreq"),)
NVIDIA_SMI_FIELDS = ("clocks.sm", "clocks.max.sm", "clocks.mem", "power.limit", "pstate")


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nvpmodel(text: str) -> dict[str, str]:
    """``NV Power Mode: MAXN\\n0`` -> power_mode MAXN, power_mode_id 0."""
    found: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            found["power_mode"] = line.split(":", 1)[1].strip()
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                found["power_mode_id"] = lines[i + 1]
    return found


def read_gpu_devfreq(roots: tuple[Path, ...] = DEVFREQ_ROOTS) -> dict[str, str]:
    """Jetson GPU clock from devfreq (the node whose name or device mentions the GPU)."""
    for root in roots:
        if not root.is_dir():
            continue
        for node in sorted(root.iterdir()):
            name = node.name.lower()
            try:
                device = (node / "device").resolve().name.lower() if (node / "device").exists() else ""
            except OSError:
                device = ""
            if "gpu" not in name and "gv11b" not in name and "ga10b" not in name and "gpu" not in device:
                continue
            values = {}
            for key in ("cur_freq", "min_freq", "max_freq"):
                try:
                    values[key] = int((node / key).read_text().strip())
                except (OSError, ValueError):
                    continue
            if "cur_freq" not in values:
                continue
            found = {"gpu_clock_mhz": str(values["cur_freq"] // 1_000_000)}
            if "max_freq" in values:
                found["gpu_clock_max_mhz"] = str(values["max_freq"] // 1_000_000)
                pinned = values.get("min_freq") == values["max_freq"] == values["cur_freq"]
                found["gpu_clock_pinned"] = "yes" if pinned else "no"
            return found
    return {}


def parse_nvidia_smi(text: str) -> dict[str, str]:
    first = text.strip().splitlines()[0] if text.strip() else ""
    values = [v.strip() for v in first.split(",")]
    if len(values) != len(NVIDIA_SMI_FIELDS):
        return {}
    names = ("gpu_clock_mhz", "gpu_clock_max_mhz", "memory_clock_mhz", "power_limit_w", "pstate")
    return {n: v for n, v in zip(names, values, strict=True) if v and "N/A" not in v}


def read_clock_settings() -> dict[str, str]:
    found: dict[str, str] = {}
    nvpmodel = _run(["nvpmodel", "-q"])
    if nvpmodel:
        found.update(parse_nvpmodel(nvpmodel))
    found.update(read_gpu_devfreq())
    if "gpu_clock_mhz" not in found:
        smi = _run(
            ["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
        )
        if smi:
            found.update(parse_nvidia_smi(smi))
    return found
