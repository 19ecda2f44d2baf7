"""Fixtures of the plan tests (defined in tests/support)."""

from tests.support.plan_data import records  # noqa: F401
