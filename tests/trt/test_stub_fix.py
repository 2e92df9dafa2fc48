"""tools/trt_stubs/fix_stubs.py repairs the two syntax errors tensorrt-stubs ships, and nothing else."""

# ruff: noqa: E501 - BROKEN quotes the stubs' own long lines

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "trt_stubs" / "fix_stubs.py"

BROKEN = '''class INetworkDefinition:
    def add_scale_nd(self, input: ITensor, mode: ScaleMode, shift: Weights = None, power: Weights = None, channel_axis: int) -> IScaleLayer:
        """docs"""
class IPluginV3:
    def get_workspace_size(self: IPluginV3, in: list[DynamicPluginTensorDesc], out: list[DynamicPluginTensorDesc]) -> int:
        ...
    def fine(self, a: dict[str, int] = {}, *, b: int) -> None: ...
'''


def load_fixer():
    spec = importlib.util.spec_from_file_location("fix_stubs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixer_repairs_keyword_parameters_and_missing_defaults(tmp_path: Path) -> None:
    stub = tmp_path / "tensorrt.pyi"
    stub.write_text(BROKEN)
    with pytest.raises(SyntaxError):
        ast.parse(BROKEN)
    assert load_fixer().main(["fix_stubs.py", str(tmp_path)]) == 0
    fixed = stub.read_text()
    ast.parse(fixed)
    assert "power: Weights = None, channel_axis: int = ...) -> IScaleLayer:" in fixed
    assert "in_: list[DynamicPluginTensorDesc], out: list[DynamicPluginTensorDesc]) -> int:" in fixed
    assert "def fine(self, a: dict[str, int] = {}, *, b: int) -> None: ..." in fixed  # untouched


def test_fixer_fails_loudly_on_an_error_it_cannot_repair(tmp_path: Path) -> None:
    (tmp_path / "bad.pyi").write_text("class A:\n    x: = 3\n")
    with pytest.raises(SystemExit, match="cannot repair"):
        load_fixer().main(["fix_stubs.py", str(tmp_path)])
