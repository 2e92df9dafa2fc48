"""The pipeline layer: stages put together (a config-driven run, the demo, doctor, ad-hoc bundles).

It calls the stages below it and is called only by the CLI above it (docs/design.md, "Layers").
"""

from __future__ import annotations

from edgedeploy.pipeline.run import PipelineResult, PrecisionOutcome, check_config, run_pipeline

__all__ = ["PipelineResult", "PrecisionOutcome", "check_config", "run_pipeline"]
