"""Values that must never be shown: a secret key, a session token, signed request headers.

A :class:`Secret` is not a str: it cannot be printed, formatted or concatenated by
accident, and its ``repr``/``str`` are redacted, so a traceback's captured locals
(``pytest --showlocals``, error reporters), a log line or an ``engine.network_options``
in a debugger show ``Secret('***')``. Code that needs the value calls :meth:`reveal`
at the point of use, in an expression, so no local variable holds it in the clear.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# The network options whose values are secrets.
SECRET_OPTIONS = ("secret_access_key", "session_token")
# The network options that are URLs: shown without a password (``user:***@``).
URL_OPTIONS = ("endpoint_url",)


class Secret:
    """A secret value (usually a str); ``reveal()`` returns it, nothing else shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else value

    def reveal(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))


def reveal(value: Any) -> Any:
    """The value behind a Secret, or ``value`` itself."""
    return value.reveal() if isinstance(value, Secret) else value


class RedactedList(Sequence[T]):
    """A read-only list whose items must not be shown (signed headers, credentialed URLs)."""

    __slots__ = ("_items",)

    def __init__(self, items: Sequence[T]) -> None:
        self._items = tuple(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        return self._items[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"RedactedList(<{len(self._items)} items>)"

    __str__ = __repr__


def wrap_secret_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the values of secret options wrapped in :class:`Secret` (never raises,
    so it can run first, before anything that could put the plain values in a traceback)."""
    return {
        k: Secret(v) if k in SECRET_OPTIONS and v is not None and not isinstance(v, Secret) else v
        for k, v in options.items()
    }


def shown_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a repr may show them: secrets as ``Secret('***')``, URL options
    without their password."""
    from fastload.storage.uri import redact

    return {
        k: redact(v) if k in URL_OPTIONS and isinstance(v, str) else v
        for k, v in wrap_secret_options(options).items()
    }


class RedactedOptions(dict):  # type: ignore[type-arg]
    """A dict of options whose repr shows them as :func:`shown_options` does; the values
    stay as given (a caller that keeps the options to rebuild from them, like fsspec's
    ``storage_options``, passes them on unchanged)."""

    def __repr__(self) -> str:
        return repr(shown_options(self))

    __str__ = __repr__
