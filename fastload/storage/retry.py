"""Retries of transient failures for the control plane (HEAD, LIST).

The data plane retries in C (csrc/fl_http_reader.c); both use the same
classification, backoff and budget (time-based: retry_deadline seconds from the
first failure, max_retries None = no count limit), so there is one rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fastload._native import http_reader
from fastload._native.status import Status

T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """One failed attempt: its status, whether to retry, and what to report."""

    code: Status
    transient: bool
    cause: str
    http_status: int = 0
    curl_code: int = 0
    retry_after: float = 0.0


def status_failure(status: int, cause: str, retry_after: float = 0.0, s3_code: str = "") -> Failure:
    by_code = http_reader.classify_s3_code(s3_code) if s3_code else None
    code, transient = by_code or http_reader.classify_status(status)
    return Failure(Status(code), transient, cause, http_status=status, retry_after=retry_after)


def curl_failure(curl_code: int, cause: str) -> Failure:
    code, transient = http_reader.classify_curl(curl_code)
    return Failure(Status(code), transient, cause, curl_code=curl_code)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int | None  # None: no count limit (the budget is retry_deadline)
    retry_deadline: float
    backoff_base: float
    backoff_cap: float

    def budget(self) -> str:
        """The budget as errors show it (the same words as the data plane's)."""
        return (
            f"max_retries={self.max_retries}, retry_deadline={self.retry_deadline:g}s, "
            f"backoff {self.backoff_base:g}-{self.backoff_cap:g}s"
        )

    def run(
        self, attempt: Callable[[float], T | Failure], budget: float
    ) -> tuple[T | Failure, int]:
        """Call ``attempt(seconds_left)`` until it returns a value or a final Failure; (result, attempts).

        ``budget`` bounds all attempts and backoffs together (request_timeout).
        """
        start = time.monotonic()
        first_fail = 0.0
        tries = 0
        while True:
            result = attempt(start + budget - time.monotonic())
            tries += 1
            if not isinstance(result, Failure) or not result.transient:
                return result, tries
            now = time.monotonic()
            first_fail = first_fail or now
            delay = http_reader.backoff(
                tries - 1, self.backoff_base, self.backoff_cap, result.retry_after
            )
            limit = (
                "max_retries"
                if self.max_retries is not None and tries > self.max_retries
                else "retry_deadline"
                if now + delay - first_fail > self.retry_deadline
                else "request_timeout"
                if now + delay >= start + budget
                else None
            )
            if limit:
                return Failure(
                    result.code,
                    False,
                    f"retries exhausted ({limit}) after {now - first_fail:.1f} s of retries "
                    f"(budget: {self.budget()}, request_timeout={budget:g}s); "
                    f"last failure: {result.cause}",
                    result.http_status,
                    result.curl_code,
                ), tries
            time.sleep(delay)
