from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgedeploy.errors import InputError
from edgedeploy.targets import load_target, target_names

REQUIRED = [
    "jetson-nano",
    "jetson-tx2",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
    "jetson-thor",
    "t4",
    "a100",
    "rtx3090",
    "rtx4090",
    "rtx5090",
    "l4",
    "h100",
    "x86-64-cpu",
]


def test_every_required_target_is_shipped_and_loads() -> None:
    assert set(REQUIRED) <= set(target_names())
    for name in REQUIRED:
        target = load_target(name)
        assert target.name == name
        assert target.kind in ("jetson", "desktop", "cpu")
        assert "fp32" in target.precisions
        if target.kind == "jetson":
            assert target.jetpack and target.tensorrt and target.max_workspace_mb


def test_compute_capabilities_follow_the_facts() -> None:
    expected = {
        "jetson-nano": "5.3",
        "jetson-tx2": "6.2",
        "jetson-agx-xavier": "7.2",
        "jetson-agx-orin": "8.7",
        "t4": "7.5",
        "a100": "8.0",
        "rtx3090": "8.6",
        "rtx4090": "8.9",
        "l4": "8.9",
        "h100": "9.0",
        "rtx5090": "12.0",
    }
    for name, cc in expected.items():
        assert load_target(name).compute_capability == cc
    assert load_target("jetson-orin-nano").dla_cores == 0
    assert load_target("jetson-agx-orin").dla_cores == 2


# nvpmodel's mode names and ids, as the boards' /etc/nvpmodel.conf or `nvpmodel -p --verbose` list them
# (docs/tensorrt-facts.md, "tegrastats, nvpmodel, jetson_clocks"): every mode a target names must be
# one of these, under NVIDIA's name (setup.sh looks the name up on the board) and with its id.
NVPMODEL_MODES = {
    "jetson-nano": {"MAXN": 0, "5W": 1},
    "jetson-tx2": {"MAXN": 0, "MAXQ": 1, "MAXP_CORE_ALL": 2},
    "jetson-xavier-nx": {
        "MODE_15W_2CORE": 0,
        "MODE_15W_4CORE": 1,
        "MODE_15W_6CORE": 2,
        "MODE_10W_2CORE": 3,
        "MODE_10W_4CORE": 4,
        "MODE_10W_DESKTOP": 5,
        "MODE_20W_2CORE": 6,
        "MODE_20W_4CORE": 7,
        "MODE_20W_6CORE": 8,
    },
    "jetson-agx-xavier": {"MAXN": 0, "MODE_10W": 1, "MODE_15W": 2, "MODE_30W_ALL": 3},
    "jetson-orin-nano": {"15W": 0, "25W": 1, "MAXN_SUPER": 2, "7W": 3},  # JetPack 6.2 Super
    "jetson-orin-nx": {"MAXN": 0, "10W": 1, "15W": 2, "25W": 3},
    "jetson-agx-orin": {"MAXN": 0, "MODE_15W": 1, "MODE_30W": 2, "MODE_50W": 3},
    "jetson-thor": {"MAXN": 0, "120W": 1, "90W": 2, "70W": 3},
}


@pytest.mark.parametrize("name", sorted(NVPMODEL_MODES))
def test_jetson_power_modes_are_nvpmodels_names_and_ids(name: str) -> None:
    """jetson-xavier-nx gave MODE_10W_DESKTOP id 3 (MODE_10W_2CORE: `setup.sh --power-mode
    MODE_10W_DESKTOP` set 2 cores instead of the desktop mode), and jetson-agx-orin named its modes
    15W/30W/50W where nvpmodel says MODE_15W/MODE_30W/MODE_50W."""
    target = load_target(name)
    known = NVPMODEL_MODES[name]
    assert target.power_modes and {mode: known.get(mode) for mode in target.power_modes} == target.power_modes
    assert target.default_power_mode in target.power_modes


def test_every_jetpack_a_jetson_target_lists_is_one_a_board_can_report() -> None:
    """The board's JetPack is read from its L4T release (bundle_helper.L4T_TABLE): a JetPack a target
    lists that no L4T row gives could never read "ok". Thor runs JetPack 7.0, 7.1 and 7.2 and the
    Orins 6.x and 7.2 (docs/tensorrt-facts.md, "Jetson modules and GPUs")."""
    from edgedeploy.device.bundle_helper import L4T_TABLE, version_matches

    known = {jetpack for jetpack, _ in L4T_TABLE.values()}
    for name in target_names():
        target = load_target(name)
        for jetpack in target.jetpack:
            assert any(version_matches(jetpack, k) for k in known), (name, jetpack)
    assert load_target("jetson-thor").jetpack == ("7.0", "7.1", "7.2")
    for orin in ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin"):
        assert load_target(orin).jetpack[-1] == "7.2" and load_target(orin).tensorrt[-1] == "10.16.2"


def test_int8_on_jetson_nano_is_refused_with_the_reason() -> None:
    with pytest.raises(InputError, match="no fast INT8"):
        load_target("jetson-nano").check_precision("int8")


def test_fp8_is_refused_as_not_built_on_any_target() -> None:
    """fp8 named compute capability 8.9 on a T4, and an sm_89 target then refused it as not built."""
    for target in ("t4", "l4", "h100"):
        with pytest.raises(InputError, match="not built by edgedeploy yet"):
            load_target(target).check_precision("fp8")


def test_dla_on_a_board_without_dla_is_refused() -> None:
    with pytest.raises(InputError, match="no DLA"):
        load_target("jetson-orin-nano").check_dla(0)
    load_target("jetson-agx-orin").check_dla(1)


def test_unknown_target_suggests_the_closest_name() -> None:
    with pytest.raises(InputError, match="did you mean 'jetson-nano'"):
        load_target("jetson-nanno")


@pytest.mark.slow
def test_target_profiles_are_inside_the_wheel(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("edgedeploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for name in REQUIRED:
        assert f"edgedeploy/target_profiles/{name}.toml" in names
    assert "edgedeploy/cli/__init__.py" in names and "calibration/sources.py" in names


def test_the_targets_table_shows_no_gpu_figures_for_a_cpu_target() -> None:
    """The table showed compute capability 0.0 and 8 GB of memory for x86-64-cpu."""
    from tests.conftest import run_cli

    result = run_cli("targets")
    row = next(line for line in result.stdout.splitlines() if "x86-64-cpu" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[3] == "-" and cells[5] == "-", cells


def test_the_targets_table_and_its_json_give_every_target_the_same_memory(tmp_path: Path) -> None:
    """The table showed memory "-" for a CPU target (which names no machine) while --json gave
    memory_gb 8: a CPU target now has no memory figure (null) in either, a board or GPU its GB in both."""
    from tests.conftest import run_cli

    result = run_cli("targets", "--json", tmp_path / "t.json")
    assert result.code == 0, result.stderr
    listed = {t["name"]: t["memory_gb"] for t in json.loads((tmp_path / "t.json").read_text())}
    rows = [[c.strip() for c in line.strip("│ ").split("│")] for line in result.stdout.splitlines()]
    table = {cells[0]: cells[5] for cells in rows if len(cells) > 5 and cells[0] in listed}
    assert set(table) == set(listed)
    for name, memory in listed.items():
        assert table[name] == ("-" if memory is None else f"{memory:g}"), name
        assert (memory is None) == (load_target(name).kind == "cpu"), name


def test_the_targets_table_and_its_json_give_every_target_the_same_compute_capability(tmp_path: Path) -> None:
    """The table showed compute capability "-" for a CPU target while --json (and a bundle's manifest)
    gave compute_capability "0.0", a figure of no GPU: a CPU target now has none (null) in either, a
    board or GPU its major.minor in both, as memory (780dfb6)."""
    from tests.conftest import run_cli

    result = run_cli("targets", "--json", tmp_path / "t.json")
    assert result.code == 0, result.stderr
    listed = {t["name"]: t["compute_capability"] for t in json.loads((tmp_path / "t.json").read_text())}
    rows = [[c.strip() for c in line.strip("│ ").split("│")] for line in result.stdout.splitlines()]
    table = {cells[0]: cells[3] for cells in rows if len(cells) > 3 and cells[0] in listed}
    assert set(table) == set(listed)
    for name, cc in listed.items():
        assert table[name] == ("-" if cc is None else cc), name
        assert (cc is None) == (load_target(name).kind == "cpu"), name
    shown = run_cli("targets", "show", "x86-64-cpu", "--json", tmp_path / "s.json")
    assert shown.code == 0 and json.loads((tmp_path / "s.json").read_text())["compute_capability"] is None


def test_targets_name_shows_that_target_as_targets_show_does(tmp_path: Path) -> None:
    """``edgedeploy targets jetson-thor``, the form a reader of ``edgedeploy targets`` types, said "no
    such command 'jetson-thor'" (exit 2): only ``targets show jetson-thor`` worked. Both now print the
    profile and write the same --json; an unknown name, in either form, is one line listing the
    known targets, exit 2; a misspelt command before a name is still no such command."""
    from tests.conftest import assert_clean_input_error, run_cli

    named = run_cli("targets", "jetson-thor", "--json", tmp_path / "named.json")
    shown = run_cli("targets", "show", "jetson-thor", "--json", tmp_path / "shown.json")
    assert named.code == shown.code == 0, (named.stderr, shown.stderr)
    assert named.stdout == shown.stdout and json.loads(named.stdout)["name"] == "jetson-thor"
    assert (tmp_path / "named.json").read_text() == (tmp_path / "shown.json").read_text()
    known = f"known targets: {', '.join(target_names())}, and host (this CPU)"
    for words in (("targets", "jetson-thro"), ("targets", "show", "jetson-thro")):
        refused = run_cli(*words)
        assert_clean_input_error(refused)
        said = refused.stderr.strip()
        assert said == f"error: unknown target 'jetson-thro'; did you mean 'jetson-thor'? {known}"
    assert run_cli("targets", "nope").stderr.strip() == f"error: unknown target 'nope'; {known}"
    typo = run_cli("targets", "sho", "jetson-thor")
    assert_clean_input_error(typo, "edgedeploy targets: no such command 'sho'")
    helped = run_cli("targets", "--help")
    assert helped.code == 0 and "edgedeploy targets NAME" in " ".join(helped.stdout.split()), helped.stdout
