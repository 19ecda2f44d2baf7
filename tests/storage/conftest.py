"""Fixtures of the storage tests (defined in tests/support; the servers are plugins)."""

from tests.support.files import blob, data_file  # noqa: F401
