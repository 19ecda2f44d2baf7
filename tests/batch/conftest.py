"""Fixtures of the batch tests (defined in tests/support)."""

from tests.support.torch_data import recs  # noqa: F401
