"""A fixed sample of ONNX's own backend test corpus through ``edgedeploy build`` (benchmarks/onnx_corpus.py):
no traceback, no hang, no invalid artifact, no artifact that fails to run, no wrong fp16 output.

Writing the sample takes about 30 s (onnx generates its node tests), running it about two minutes
on 2 cores; the whole corpus is the benchmark's job (``python -m benchmarks.onnx_corpus``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.onnx_corpus import FAILURES, MODES, run_corpus, summarize, write_corpus

SAMPLE = 120
TIMEOUT = 120.0  # seconds per model and mode; the sample's slowest case takes a few


@pytest.mark.slow
def test_sampled_onnx_backend_corpus_builds_or_refuses_cleanly(tmp_path: Path) -> None:
    cases = write_corpus(tmp_path / "corpus", SAMPLE)
    assert len(cases) >= SAMPLE * 0.95  # a few cases onnx cannot serialize are left out
    infos = run_corpus(cases, list(MODES), TIMEOUT)
    summary = summarize(infos, list(MODES))
    assert summary["eligible"] >= len(cases) // 2, summary["ineligible"]
    bad = {
        mode: [f"{f['case']}: {f['outcome']}: {f['detail'][:200]}" for f in m["failures"]]
        for mode, m in summary["modes"].items()
    }
    assert not any(bad.values()), bad
    for mode, m in summary["modes"].items():
        assert m["ok"] > 0, (mode, m)
        assert set(m) >= set(FAILURES)
