"""``doctor`` reports what is installed; the device scripts' ``--tool auto`` runs it before every
build and benchmark, so it must not pay for importing the heavy optional packages."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata


def test_doctor_reports_torch_and_scikit_learn_without_importing_them() -> None:
    code = (
        "import json, sys\n"
        "from edgedeploy.pipeline.doctor import diagnose\n"
        "checks = {c.name: c.detail for c in diagnose()}\n"
        "print(json.dumps({'checks': checks, 'imported': sorted({'torch', 'sklearn'} & set(sys.modules))}))\n"
    )
    said = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert said["imported"] == []
    for name, distribution in (("torch", "torch"), ("scikit-learn", "scikit-learn")):
        try:
            expected = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            expected = "not installed"
        assert said["checks"][name] == expected


def test_doctor_calls_a_package_that_is_not_there_not_installed() -> None:
    from edgedeploy.pipeline import doctor

    assert doctor._installed_version("no_such_module_here", "no-such-distribution") is None
    assert doctor._installed_version("json", "no-such-distribution") is None  # a module, no distribution
