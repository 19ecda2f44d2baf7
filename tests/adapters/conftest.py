"""Fixtures of the adapter tests (defined in tests/support; test_interop.py has its own ``recs``)."""

from tests.support.torch_data import recs  # noqa: F401
