"""Property-based fuzzing (hypothesis) of every parser a user's text reaches (issue 12).

The property is the same everywhere: a parser either returns a value that honours its own
contract, or raises the project's one-line error (``InputError`` / ``CalibrationError`` /
``ValueError`` where that is the documented refusal). Anything else (``KeyError``,
``TypeError``, ``IndexError``, a hang) is a traceback a user would see. Inputs are both random
and mutations of real data: the tegrastats lines in tests/data/tegrastats-samples.txt and a
real TensorRT 8.6 entropy calibration cache (tests/data/trt-8600-entropy2-yolov5.cache).
Run time: about 10 s (150 fixed examples per property; EDGEDEPLOY_FUZZ=explore: 2000 new ones).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration.errors import CalibrationError
from edgedeploy.errors import InputError

DATA = Path(__file__).parent / "data"
# CI runs a fixed set of examples (derandomized: a red build is never luck); EDGEDEPLOY_FUZZ=explore
# draws new ones, more of them (run it before a release, keep what it finds as explicit examples).
EXPLORE = os.environ.get("EDGEDEPLOY_FUZZ") == "explore"
FAST = settings(
    max_examples=2000 if EXPLORE else 150,
    derandomize=not EXPLORE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _section_keys() -> dict[str, list[str]]:
    from dataclasses import fields

    from edgedeploy.config import _SECTION_CLASSES

    return {name: [f.name for f in fields(cls)] for name, cls in _SECTION_CLASSES.items()}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """Config tables with real section and key names (mostly) and values of any type."""
    keys = _section_keys()
    data: dict[str, Any] = {"model": {"source": draw(st.sampled_from(["model.onnx", "m.py:build", ""]))}}
    for section in draw(st.lists(st.sampled_from(sorted(keys)), max_size=4, unique=True)):
        table = data.setdefault(section, {})
        for key in draw(st.lists(st.sampled_from(keys[section]), max_size=4, unique=True)):
            table[key] = draw(values)
    if draw(st.booleans()):
        data[draw(st.text(max_size=6))] = draw(values)
    if draw(st.booleans()):
        data["workdir"] = draw(values)
    return data


# ---------------------------------------------------------------- config loader


@FAST
@given(configs())
def test_config_loader_and_check_accept_or_refuse_with_one_line(data: dict[str, Any]) -> None:
    from edgedeploy.config import from_dict
    from edgedeploy.pipeline.run import check_config

    try:
        config = from_dict(data, Path("/nonexistent-project"))
        target = check_config(config)
    except InputError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()
        return
    # what was accepted honours what the stages rely on
    assert config.build.precisions and len(set(config.build.precisions)) == len(config.build.precisions)
    assert config.compare.samples >= 1 and config.compare.batch_size >= 1
    assert math.isfinite(config.profile.duration_s) and config.profile.duration_s >= 0
    assert all(type(b) is int and b >= 1 for b in config.profile.batch_sizes)
    assert target.name


@FAST
@given(st.text(max_size=200))
def test_config_file_of_any_text_loads_or_refuses(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    from edgedeploy.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "edgedeploy.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(InputError):
        load_config(path)


# ---------------------------------------------------------------- shapes, profiles, pools, budgets


@FAST
@given(st.text(alphabet=st.sampled_from("abx0123456789:,-._ f"), max_size=24))
def test_input_shape_parser(text: str) -> None:
    from edgedeploy.stages.export import InputShape

    try:
        shape = InputShape.parse(text)
    except InputError:
        return
    assert shape.name and shape.shape and all(d >= 1 for d in shape.shape)


@FAST
@given(st.lists(st.text(alphabet=st.sampled_from("inx0123456789:,-/ "), max_size=30), min_size=1, max_size=3))
def test_profile_parser(items: list[str]) -> None:
    from edgedeploy.options import ShapeProfile

    try:
        profile = ShapeProfile.parse(items)
    except InputError:
        return
    for lo, opt, hi in profile.shapes.values():
        assert len(lo) == len(opt) == len(hi)
        assert all(1 <= a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))


@FAST
@given(values)
def test_profile_tables_from_a_config(table: Any) -> None:
    from edgedeploy.options import ShapeProfile

    try:
        profile = ShapeProfile.from_config(table)
    except InputError:
        return
    assert all(len(rng) == 3 for rng in profile.shapes.values())


@FAST
@given(st.lists(st.text(max_size=16), max_size=3))
def test_memory_pool_parser(items: list[str]) -> None:
    from edgedeploy.options import parse_memory_pools

    try:
        pools = parse_memory_pools(items)
    except InputError:
        return
    assert all(isinstance(v, int) and v >= 0 for v in pools.values())


@FAST
@given(
    st.one_of(
        st.text(max_size=40),
        st.lists(
            st.tuples(
                st.sampled_from(["cosine", "top1", "max_abs", "snr", "cos", "psnr", ""]),
                st.sampled_from([">=", "<=", "=", ">"]),
                st.one_of(
                    st.floats(allow_nan=False).map(repr), st.sampled_from(["nan", "inf", "1e999", "-1", "2"])
                ),
            ),
            max_size=3,
        ).map(lambda parts: ",".join(f"{m}{op}{v}" for m, op, v in parts)),
    )
)
def test_budget_parser_accepts_only_bounds_a_model_can_meet(text: str) -> None:
    from edgedeploy.stages.precision.budget import BOUNDS, AccuracyBudget

    try:
        budget = AccuracyBudget.parse(text)
    except InputError:
        return
    for criterion in budget.criteria:
        lo, hi = BOUNDS[criterion.metric]
        assert math.isfinite(criterion.value) and lo < criterion.value <= hi


@FAST
@given(
    duration=st.floats(allow_nan=True, allow_infinity=True),
    warmup_ms=st.floats(allow_nan=True, allow_infinity=True),
    iterations=st.one_of(st.none(), st.integers(-5, 5)),
    batch_sizes=st.lists(st.one_of(st.integers(-2, 4), st.booleans(), st.text(max_size=2)), max_size=3),
)
def test_profile_options_never_accept_a_run_that_cannot_end(
    duration: float, warmup_ms: float, iterations: int | None, batch_sizes: list[Any]
) -> None:
    from edgedeploy.stages.profile import ProfileOptions

    try:
        options = ProfileOptions(
            duration_s=duration, warmup_ms=warmup_ms, iterations=iterations, batch_sizes=tuple(batch_sizes)
        )
    except InputError:
        return
    assert math.isfinite(options.duration_s) and options.duration_s >= 0
    assert math.isfinite(options.warmup_ms) and options.warmup_ms >= 0
    assert options.iterations is None or options.iterations >= 1
    assert options.batch_sizes and all(type(b) is int and b >= 1 for b in options.batch_sizes)


# ---------------------------------------------------------------- tegrastats


def _real_tegrastats_lines() -> list[str]:
    lines = (DATA / "tegrastats-samples.txt").read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


@st.composite
def mutated(draw: st.DrawFn, lines: list[str]) -> str:
    """A real line with a few characters replaced, deleted or inserted, or cut short."""
    line = draw(st.sampled_from(lines))
    for _ in range(draw(st.integers(0, 4))):
        if not line:
            break
        i = draw(st.integers(0, len(line) - 1))
        action = draw(st.sampled_from(["replace", "delete", "insert", "cut"]))
        char = draw(st.sampled_from(list("0123456789/%@[]()mWVAC.,:- xoff")))
        line = {
            "replace": line[:i] + char + line[i + 1 :],
            "delete": line[:i] + line[i + 1 :],
            "insert": line[:i] + char + line[i:],
            "cut": line[:i],
        }[action]
    return line


REAL_TEGRASTATS = _real_tegrastats_lines()


def test_every_real_tegrastats_line_parses() -> None:
    from edgedeploy.power.tegrastats import parse_line

    for line in REAL_TEGRASTATS:
        sample = parse_line(line)
        assert sample is not None


@FAST
@given(st.one_of(mutated(REAL_TEGRASTATS), st.text(max_size=120)))
def test_tegrastats_parser_reads_or_refuses_any_line(line: str) -> None:
    from edgedeploy.power.tegrastats import parse_line

    try:
        sample = parse_line(line)
    except ValueError:
        return
    for rail in getattr(sample, "rails", []) or []:
        for value in (getattr(rail, "current_mw", None), getattr(rail, "average_mw", None)):
            assert value is None or (math.isfinite(value) and value >= 0), (line, rail)


# ---------------------------------------------------------------- TensorRT calibration cache


REAL_CACHE = (DATA / "trt-8600-entropy2-yolov5.cache").read_text()


def test_the_real_cache_reads_with_its_version_algorithm_and_scales() -> None:
    from calibration.trt_cache import loads

    cache = loads(REAL_CACHE)
    assert cache.version.startswith("8.6") and cache.algorithm == "EntropyCalibration2"
    assert len(cache.scales) > 50 and all(math.isfinite(s) for s in cache.scales.values())
    assert loads(cache.dumps()).scales == cache.scales


@FAST
@given(
    st.one_of(
        st.text(max_size=200),
        st.builds(
            lambda cut, junk: REAL_CACHE[:cut] + junk + REAL_CACHE[cut:],
            st.integers(0, len(REAL_CACHE)),
            st.text(max_size=12),
        ),
        st.integers(0, len(REAL_CACHE)).map(lambda cut: REAL_CACHE[:cut]),
    )
)
def test_calibration_cache_reader_reads_or_refuses(text: str) -> None:
    from calibration.trt_cache import loads

    try:
        cache = loads(text)
    except CalibrationError as exc:
        assert str(exc).strip()
        return
    assert cache.version.count(".") == 2
    assert all(isinstance(s, float) for s in cache.scales.values())


@FAST
@given(st.binary(max_size=200))
def test_calibration_cache_file_of_any_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    from calibration.trt_cache import read_cache

    path = tmp_path_factory.mktemp("cache") / "x.cache"
    path.write_bytes(blob)
    with contextlib.suppress(CalibrationError):
        read_cache(path)
