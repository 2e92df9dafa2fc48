"""``--target host`` picks the CPU target by the CPU's features (as doctor detects them)."""

from __future__ import annotations

import pytest

from edgedeploy.stages.precision.int8 import weight_bits_for
from edgedeploy.targets import host_target_name, load_target


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "x86-64-vnni"),
        ({"avx2", "avx_vnni"}, "x86_64", "x86-64-vnni"),
        ({"avx2", "avx512f"}, "x86_64", "x86-64-cpu"),
        # no ARM CPU target: an x86 one would be a wrong name (and x86-64-cpu's 7-bit weights with
        # doctor's dot-product row ok): no host target
        ({"asimddp"}, "aarch64", None),
        ({"fp", "asimd"}, "arm64", None),
    ],
)
def test_host_target_follows_cpu_flags(flags: set[str], machine: str, expected: str | None) -> None:
    assert host_target_name(flags, machine) == expected


def test_vnni_target_uses_full_range_weights_and_plain_cpu_target_seven_bits() -> None:
    assert weight_bits_for(load_target("x86-64-vnni")) == 8
    assert weight_bits_for(load_target("x86-64-cpu")) == 7


def test_host_resolves_to_a_shipped_target() -> None:
    assert load_target("host").name in ("x86-64-vnni", "x86-64-cpu")


def test_host_is_refused_in_one_line_on_a_cpu_without_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedeploy import targets
    from edgedeploy.errors import InputError
    from edgedeploy.pipeline import doctor

    monkeypatch.setattr(targets.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(targets, "cpu_flags", lambda: {"fp", "asimd", "asimddp"})
    with pytest.raises(InputError) as err:
        load_target("host")
    line = str(err.value)
    assert "\n" not in line and "aarch64" in line and "x86-64-cpu" in line
    monkeypatch.setattr(doctor, "cpu_flags", lambda: {"fp", "asimd", "asimddp"})
    monkeypatch.setattr(doctor.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(doctor, "_gpu_checks", lambda: [])
    row = next(c for c in doctor.diagnose() if c.name.startswith("cpu int8"))
    assert "--target host is x86" not in row.detail and "aarch64" in row.detail
