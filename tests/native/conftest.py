"""Fixtures of the native-layer tests (defined in tests/support)."""

from tests.support.files import blob  # noqa: F401
