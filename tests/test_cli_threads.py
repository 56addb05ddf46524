"""The demo's default torch thread count leaves busy cores alone."""

from __future__ import annotations

import pytest

from tamis.cli import free_threads


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.63, 1), (2, 1.5, 1), (2, 3.0, 1), (16, 4.2, 12),
    (1, 0.0, 1), (4, -1.0, 4)])
def test_free_threads_counts_the_cores_not_busy(cores, load, expected):
    assert free_threads(cores, load) == expected
