"""Fixtures of the loop tests (defined in tests/support)."""

from tests.support.loader_data import recs  # noqa: F401
