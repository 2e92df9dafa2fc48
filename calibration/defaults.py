"""Calibration defaults the CLI declares too: no imports, so that ``--help`` loads nothing for them."""

DEFAULT_PERCENTILE = 99.99  # the percentile algorithm's (and auto's) percentile of |x|
