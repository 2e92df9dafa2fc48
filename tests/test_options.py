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
    every flag it names is one of ``edgedeploy build``'s."""
    import typer.main

    from edgedeploy.cli import app
    from edgedeploy.options import CalibrationRequest, option_name
    from edgedeploy.pipeline.run import in_config_names

    build = typer.main.get_command(app).commands["build"]  # type: ignore[attr-defined]
    flags = {flag for param in build.params for flag in (*param.opts, *param.secondary_opts)}
    # CPU threads are a config key only; the repeated --memory-pool and --profile are in the singular
    other = {"threads", "memory_pools_mb", "profiles"}
    for option in BACKEND_OPTIONS:
        flag = option_name("build", option.user, from_config=False)
        assert flag in flags or option.user in other, flag
        assert in_config_names(f"{flag} must be >= 0") == f"[build] {option.user} must be >= 0"
    for setting in ("data", "preprocess", "samples", "batch_size", "algorithm"):
        assert CalibrationRequest().option(setting) in flags, setting
        assert CalibrationRequest(from_config=True).option(setting) == f"[calibration] {setting}"
