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
        ({"asimddp"}, "aarch64", "x86-64-cpu"),  # no ARM CPU target yet: the default one
    ],
)
def test_host_target_follows_cpu_flags(flags: set[str], machine: str, expected: str) -> None:
    assert host_target_name(flags, machine) == expected


def test_vnni_target_uses_full_range_weights_and_plain_cpu_target_seven_bits() -> None:
    assert weight_bits_for(load_target("x86-64-vnni")) == 8
    assert weight_bits_for(load_target("x86-64-cpu")) == 7


def test_host_resolves_to_a_shipped_target() -> None:
    assert load_target("host").name in ("x86-64-vnni", "x86-64-cpu")
