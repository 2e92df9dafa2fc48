"""``python -m edgedeploy``: the same as the ``edgedeploy`` command."""

from edgedeploy.cli import main

main()
