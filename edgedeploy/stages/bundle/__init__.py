"""The bundle stage: pack a deployment bundle (:mod:`.make`), and verify / inspect one (:mod:`.tools`)."""

from __future__ import annotations

from edgedeploy.stages.bundle.make import BundleArtifact, BundleResult, make_bundle, tool_versions
from edgedeploy.stages.bundle.tools import (
    BundleCheck,
    archive_not_ours,
    check_bundle_output,
    device_outputs,
    inspect_bundle,
    not_ours,
    safe_extract,
    verify_bundle,
)

__all__ = [
    "BundleArtifact",
    "BundleCheck",
    "BundleResult",
    "archive_not_ours",
    "check_bundle_output",
    "device_outputs",
    "inspect_bundle",
    "make_bundle",
    "not_ours",
    "safe_extract",
    "tool_versions",
    "verify_bundle",
]
