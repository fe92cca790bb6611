"""Checkout-level pytest configuration.

pytester is enabled with `-p pytester` in pyproject's addopts rather than `pytest_plugins`
here: a top-level `pytest_plugins` breaks inner pytester runs that collect this checkout's
suites/ (pytest refuses pytest_plugins in a conftest that is not the rootdir's)."""
from __future__ import annotations

# Benchmarks are scripts run by hand (see BENCHMARKS.md), never collected as tests.
collect_ignore = ["benchmarks"]
