"""Plan rules that need no TensorRT at all: versions, cache headers, the precision stage's plan file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedeploy.backends.trt_plan import TrtVersion, check_cache_header, read_fp32_layers
from edgedeploy.errors import InputError


def test_cache_codes_follow_each_major_versions_encoding() -> None:
    assert TrtVersion.parse("8.6.1").cache_code == 8601
    assert TrtVersion.parse("10.3.0.26").cache_code == 100300
    assert TrtVersion.parse("8.5.2") < TrtVersion.parse("8.6") < TrtVersion.parse("10.13.0")
    with pytest.raises(InputError):
        TrtVersion.parse("unknown")


def test_cache_header_must_match_the_running_version(tmp_path: Path) -> None:
    cache = tmp_path / "c.cache"
    cache.write_text("TRT-100300-MinMaxCalibration\nx: 3c010a14\n")
    assert check_cache_header(cache, TrtVersion(10, 3, 0)) == "MinMaxCalibration"
    with pytest.raises(InputError, match="TensorRT would ignore it"):
        check_cache_header(cache, TrtVersion(10, 13, 0))
    cache.write_text("not a cache\n")
    with pytest.raises(InputError, match="is not a TensorRT calibration cache"):
        check_cache_header(cache, TrtVersion(8, 6, 1))


def test_fp32_layers_come_from_the_fp16_stages_plan_file(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "precision": "fp16",
                "nodes": [
                    {"node": "/ln/ReduceMean", "op": "ReduceMean", "precision": "fp32", "reason": "overflow"},
                    {"node": "/conv/Conv", "op": "Conv", "precision": "fp16"},
                    {
                        "node": "/softmax",
                        "op": "Softmax",
                        "precision": "fp32",
                        "reason": "--fp32-ops Softmax",
                    },
                ],
            }
        )
    )
    assert read_fp32_layers(plan) == ["/ln/ReduceMean", "/softmax"]
    plan.write_text(json.dumps(["b", "a", "a"]))
    assert read_fp32_layers(plan) == ["a", "b"]
    plan.write_text("{broken")
    with pytest.raises(InputError, match="cannot read precision plan"):
        read_fp32_layers(plan)
