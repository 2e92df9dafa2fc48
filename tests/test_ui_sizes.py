"""``ui.human_size``: the size every table, report and README prints, at the edges of its units."""

from __future__ import annotations

import pytest

from edgedeploy.ui import human_size


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1234, "1.23 kB"),
        (999_499, "999 kB"),
        (999_500, "1 MB"),  # 999.5 kB rounds to 1e+03 kB at 3 digits: the next unit
        (999_999, "1 MB"),
        (1_000_000, "1 MB"),
        (1_234_567, "1.23 MB"),
        (999_499_999, "999 MB"),
        (999_500_000, "1 GB"),
        (999_999_999, "1 GB"),
        (1_000_000_000, "1 GB"),
        (999_499_999_999, "999 GB"),
        (999_500_000_000, "1 TB"),
        (1_000_000_000_000, "1 TB"),
        (999_500_000_000_000, "1,000 TB"),  # the largest unit: never 1e+03
        (12_345_000_000_000_000, "12,345 TB"),
    ],
)
def test_human_size_rounds_before_it_picks_the_unit(n: int, said: str) -> None:
    assert human_size(n) == said


def test_human_size_of_nothing_is_the_placeholder() -> None:
    assert human_size(None) == "-" and human_size(None, "–") == "–"
