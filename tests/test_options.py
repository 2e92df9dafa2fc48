"""One mapping from the user's option names to the backend's build options, shared by CLI and config."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path

import pytest

from edgedeploy.backends.base import BuildOptions
from edgedeploy.cli.build import build_command
from edgedeploy.config import BuildSection
from edgedeploy.errors import InputError
from edgedeploy.options import BACKEND_OPTIONS, ShapeProfile, backend_options


def test_every_backend_option_is_a_build_options_field_a_config_key_and_a_build_flag() -> None:
    build_fields = {f.name for f in fields(BuildOptions)}
    config_keys = {f.name for f in fields(BuildSection)}
    cli_parameters = set(inspect.signature(build_command).parameters)
    for option in BACKEND_OPTIONS:
        assert option.field in build_fields, option
        assert option.user in config_keys, option
        assert option.user in cli_parameters or option.user == "threads", option  # CPU threads: config only


def test_the_command_line_and_the_config_give_the_same_build_options(tmp_path: Path) -> None:
    cli = backend_options(
        {
            "opt_level": 5,
            "memory_pools_mb": ["Tactic_Shared_Memory=48"],
            "profiles": ["x:1x3x8x8,4x3x8x8,8x3x8x8"],
            "timing_cache": tmp_path / "t.cache",
            "version_compatible": True,
            "force": True,  # not a backend option: ignored
        }
    )
    config = backend_options(
        {
            "opt_level": 5,
            "memory_pools_mb": {"tactic_shared_memory": 48},
            "profiles": [{"x": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [8, 3, 8, 8]}}],
            "timing_cache": "t.cache",
            "version_compatible": True,
            "dla_core": None,
            "hardware_compat": "",
        },
        path=lambda p: tmp_path / p,
    )
    assert cli == config
    assert cli["optimization_level"] == 5 and cli["memory_pools_mb"] == {"tactic_shared_memory": 48}
    assert cli["profiles"] == [ShapeProfile({"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))})]
    BuildOptions(precision="fp16", target=None, **cli)  # type: ignore[arg-type]


def test_a_bad_memory_pool_is_refused_with_the_expected_form() -> None:
    with pytest.raises(InputError, match="expected NAME=MiB"):
        backend_options({"memory_pools_mb": ["workspace:64"]})


def test_a_setting_is_named_one_way_as_builds_flag_and_as_a_config_key() -> None:
    """options.option_name spells a setting for both: the calibration messages a build says
    (CalibrationRequest.option) and the backends' flags run says as config keys (in_config_names);
    every flag it names is one of ``edgedeploy build``'s (the repeated ones in the singular)."""
    import typer.main

    from edgedeploy.cli import app
    from edgedeploy.options import CalibrationRequest, in_config_names, option_name

    build = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    flags = {flag for param in build.params for flag in (*param.opts, *param.secondary_opts)}
    for option in BACKEND_OPTIONS:
        flag = option_name("build", option.user, from_config=False)
        assert flag in flags or option.user == "threads", flag  # CPU threads are a config key only
        assert in_config_names(f"{flag} must be >= 0") == f"[build] {option.user} must be >= 0"
    for setting in ("data", "preprocess", "samples", "batch_size", "algorithm"):
        assert CalibrationRequest().option(setting) in flags, setting
        assert CalibrationRequest(from_config=True).option(setting) == f"[calibration] {setting}"


def test_the_exports_and_the_backends_flags_are_named_as_config_keys_by_one_function() -> None:
    """run's config check named the export's flags (--input, --opset, --input-names) as config keys
    with a table and a regex of its own, beside in_config_names for the backends' flags; one
    function names both, a flag as a whole word only (--input-names is not --input and -names)."""
    import typer.main

    from edgedeploy.cli import app
    from edgedeploy.options import EXPORT_SETTINGS, in_config_names, option_name

    export = typer.main.get_command(app).commands["export"]  # type: ignore[attr-defined]
    flags = {flag for param in export.params for flag in (*param.opts, *param.secondary_opts)}
    for section, key in EXPORT_SETTINGS:
        assert option_name(section, key, from_config=False) in flags, (section, key)
    said = "--input-names gives 2 names for 1 --input"
    assert in_config_names(said) == "[export] input_names gives 2 names for 1 [model] inputs"
    assert in_config_names("bad --input 'x:a': dims") == "bad [model] inputs 'x:a': dims"
    assert in_config_names("--opset 5 is too old") == "[export] opset 5 is too old"
    said = "names must differ (--input-names, --output-names)"
    assert in_config_names(said) == "names must differ ([export] input_names, [export] output_names)"
    said = "bad --profile 'x'; drop --dla-core"
    assert in_config_names(said) == "bad [build] profiles 'x'; drop [build] dla_core"
    assert in_config_names("--opset-x and x--opset stay") == "--opset-x and x--opset stay"
