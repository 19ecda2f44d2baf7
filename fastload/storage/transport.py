"""Connections of one backend: native contexts for data, pycurl for control.

Data (ranged GETs into the caller's buffer) goes through the C driver in
``fastload._native.http_reader``; each ``HttpContext`` keeps its connections alive
between reads and serves one read at a time, so concurrent reads take
separate contexts from a pool. Control requests (HEAD, LIST) are small and
go through pycurl with the same retry rule.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastload._native import http_reader
from fastload._native.status import Status
from fastload.checks import control_character
from fastload.errors import CertificateError, RangeError, raise_native_error
from fastload.storage import libcurl
from fastload.storage.network_options import NetworkOptions
from fastload.storage.retry import Failure, RetryPolicy, curl_failure, status_failure

_CA_HINT = " (name the CA file with ca_bundle=, or AWS_CA_BUNDLE / SSL_CERT_FILE / CURL_CA_BUNDLE)"
# an S3 error code is a word (NoSuchKey, SlowDown): anything else in <Code> is not repeated
_S3_CODE = re.compile(rb"<Code>([A-Za-z0-9._-]{1,63})</Code>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A control answer (a listing page, an error, the first-byte GET of a size probe) is small;
# past this a server that never ends its body would fill the memory (a page of 1,000
# long keys is a few MB).
MAX_CONTROL_BODY = 64 << 20


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _check_header_lines(uri: str, headers: Sequence[str]) -> None:
    """A CR or LF would inject a header. No frame keeps a header line (a signature, a
    token) as a local: the failure names the header by its number."""
    bad = next((i for i, line in enumerate(headers) if control_character(line)), None)
    if bad is not None:
        raise ValueError(
            f"{uri}: request header #{bad} holds a control character (a CR or LF would "
            "inject a header)"
        )


def _no_op_progress(*_: int) -> int:
    return 0


def s3_error_code(body: bytes) -> str:
    """The <Code> of an S3 error body; nothing else (signature errors echo secrets)."""
    m = _S3_CODE.search(body)
    return m.group(1).decode("ascii", "replace") if m else ""


class Transport:
    def __init__(self, opts: NetworkOptions, *, follow_redirects: bool) -> None:
        self.opts = opts
        self.libcurl_path, self.libcurl_version = libcurl.load(opts.libcurl_path)
        self.ca_bundle = opts.resolved_ca_bundle()
        self.follow_redirects = follow_redirects
        self.retry = RetryPolicy(
            opts.max_retries, opts.retry_deadline, opts.backoff_base, opts.backoff_cap
        )
        self._lock = threading.Lock()
        self._contexts: list[Any] = []  # idle HttpContexts
        self._all: list[Any] = []
        self._retired: dict[str, int] = {}  # closed contexts' counters: totals never drop
        self._handles: list[Any] = []  # idle pycurl handles
        self._pid = os.getpid()

    # -- data plane ------------------------------------------------------------
    def _check_fork(self) -> None:
        # A child must not use (or free) the parent's connections: start afresh.
        if self._pid != os.getpid():
            self._contexts, self._all, self._handles = [], [], []
            self._lock = threading.Lock()
            self._pid = os.getpid()

    def _acquire(self) -> Any:
        with self._lock:
            self._check_fork()
            if self._contexts:
                return self._contexts.pop()
        o = self.opts
        ctx = http_reader.HttpContext(
            ca_bundle=self.ca_bundle,
            verify=o.verify,
            connect_timeout=o.connect_timeout,
            low_speed_limit=o.low_speed_limit,
            low_speed_time=o.low_speed_time,
            buffer_size=o.buffer_size,
            http2=o.http2,
            follow_redirects=self.follow_redirects,
            pin_version=o.pin_version,
            max_retries=o.max_retries,
            retry_deadline=o.retry_deadline,
            backoff_base=o.backoff_base,
            backoff_cap=o.backoff_cap,
            user_agent=o.user_agent,
        )
        with self._lock:
            self._all.append(ctx)
        return ctx

    def read(
        self,
        urls: Sequence[bytes],
        headers: Sequence[bytes | None],
        uris: list[str],
        table: np.ndarray,
        out: Any,
        part_size: int,
        max_inflight: int,
        timeout: float | None,
        cancel: Any,
        size_of: Callable[[int], int] | None = None,
        pins: Sequence[Any] | None = None,
    ) -> list[int]:
        """The data plane. ``size_of(i)`` finds source i's size for a 416 that did not say it;
        ``pins`` (per source, see the native reader) the versions the read must see.
        Returns the sources whose server ignored Range."""
        ctx = self._acquire()
        try:
            return list(
                ctx.read(
                    urls,
                    headers,
                    uris,
                    table,
                    out,
                    part_size,
                    max_inflight,
                    float(timeout) if timeout else 0.0,
                    cancel,
                    pins,
                )
            )
        except CertificateError as exc:
            exc.args = (exc.args[0] + _CA_HINT,)
            raise
        except RangeError as exc:
            if exc.object_size is None and size_of is not None and exc.uri in uris:
                exc.object_size = size = size_of(uris.index(exc.uri))
                exc.args = (f"{exc.args[0]}; object size is {size} bytes",)
            raise
        finally:
            with self._lock:
                kept = ctx in self._all
                if kept:
                    self._contexts.append(ctx)
            if not kept:  # close() ran during this read: freed now that nothing uses it
                ctx.close()

    def stats(self) -> dict[str, int]:
        """Totals over this backend's contexts: requests, retries, connects, bytes, writes,
        streams (objects read whole because the server ignored Range)."""
        total = {"requests": 0, "retries": 0, "connects": 0, "bytes": 0, "writes": 0, "streams": 0}
        with self._lock:
            for k, v in self._retired.items():
                total[k] = total.get(k, 0) + v
            for ctx in self._all:
                for k, v in ctx.stats().items():
                    total[k] += v
        return total

    # -- control plane ---------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        headers: Sequence[str],
        uri: str,
        *,
        accept: tuple[int, ...] = (200,),
    ) -> Response:
        """One HEAD/GET with retries; a Response when its status is in ``accept``, else raise.

        On the main thread, Ctrl-C ends it within about a second (libcurl's progress
        callback runs Python at least once a second, where the KeyboardInterrupt is raised).
        """
        import pycurl

        _check_header_lines(uri, headers)

        with self._lock:
            self._check_fork()
            handle = self._handles.pop() if self._handles else pycurl.Curl()
        try:
            result, attempts = self.retry.run(
                lambda left: self._attempt(handle, method, url, headers, accept, left),
                self.opts.request_timeout,
            )
        finally:
            with self._lock:
                self._handles.append(handle)
        if isinstance(result, Failure):
            hint = _CA_HINT if result.code == Status.TLS else ""
            raise_native_error(
                result.code,
                uri,
                http_status=result.http_status,
                curl_code=result.curl_code,
                attempts=attempts,
                message=f"{method} failed: {result.cause}{hint}",
            )
        return result

    def _attempt(
        self,
        c: Any,
        method: str,
        url: str,
        headers: Sequence[str],
        accept: tuple[int, ...],
        seconds_left: float,
    ) -> Response | Failure:
        import pycurl

        body = io.BytesIO()
        hdrs: dict[str, str] = {}
        on_main = threading.current_thread() is threading.main_thread()

        too_long: list[bool] = []

        def on_body(chunk: bytes) -> int:
            if body.tell() + len(chunk) > MAX_CONTROL_BODY:
                too_long.append(True)
                return 0  # ends the transfer (CURLE_WRITE_ERROR), reported below
            return body.write(chunk)

        def on_header(line: bytes) -> None:
            text = line.decode("latin-1")
            if text.startswith("HTTP/"):
                hdrs.clear()
            elif ":" in text:
                k, v = text.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()

        o = self.opts
        c.reset()
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.HTTPHEADER, list(headers))
        if on_main:
            # a Python callback at least once a second: where a pending Ctrl-C is raised
            # (pycurl aborts the transfer and re-raises it from perform())
            c.setopt(pycurl.NOPROGRESS, 0)
            c.setopt(pycurl.XFERINFOFUNCTION, _no_op_progress)
        c.setopt(pycurl.NOBODY, 1 if method == "HEAD" else 0)
        c.setopt(pycurl.WRITEFUNCTION, on_body)
        c.setopt(pycurl.HEADERFUNCTION, on_header)
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.PATH_AS_IS, 1)
        c.setopt(pycurl.SSL_VERIFYPEER, 1 if o.verify else 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 2 if o.verify else 0)
        if self.ca_bundle:
            c.setopt(pycurl.CAINFO, self.ca_bundle)
        c.setopt(pycurl.CONNECTTIMEOUT_MS, int(o.connect_timeout * 1000))
        c.setopt(pycurl.TIMEOUT_MS, max(1, int(seconds_left * 1000)))
        if o.low_speed_time > 0:  # a stalled answer is retried, as on the data plane
            c.setopt(pycurl.LOW_SPEED_LIMIT, o.low_speed_limit)
            c.setopt(pycurl.LOW_SPEED_TIME, o.low_speed_time)
        c.setopt(pycurl.USERAGENT, o.user_agent)
        # http(s) only, and no redirect from https:// down to http://; a redirect loop ends
        # after MAX_REDIRECTS (curl's own default has no limit before 8.3)
        http_s = pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS
        c.setopt(pycurl.PROTOCOLS, http_s)
        c.setopt(
            pycurl.REDIR_PROTOCOLS,
            pycurl.PROTO_HTTPS if url[:6].lower() == "https:" else http_s,
        )
        c.setopt(pycurl.FOLLOWLOCATION, 1 if self.follow_redirects else 0)
        c.setopt(pycurl.MAXREDIRS, http_reader.MAX_REDIRECTS)
        try:
            c.perform()
        except pycurl.error as exc:
            code, text = exc.args[0], str(exc.args[1]) if len(exc.args) > 1 else ""
            # curl's words may quote what the server sent: no control character in a message
            text = _CONTROL.sub("?", text)
            status = int(c.getinfo(pycurl.RESPONSE_CODE))
            if too_long:
                return Failure(
                    Status.HTTP,
                    False,
                    f"{method} answer longer than {MAX_CONTROL_BODY} bytes: refused",
                    http_status=status,
                    curl_code=code,
                )
            if 300 <= status < 400 and code in (
                pycurl.E_UNSUPPORTED_PROTOCOL,
                pycurl.E_TOO_MANY_REDIRECTS,
            ):  # too many redirects, or one to a refused scheme
                return Failure(
                    Status.HTTP,
                    False,
                    f"redirect refused: {text}",
                    http_status=status,
                    curl_code=code,
                )
            return curl_failure(code, text)
        status = int(c.getinfo(pycurl.RESPONSE_CODE))
        resp = Response(status, hdrs, body.getvalue())
        if status in accept:
            return resp
        code = s3_error_code(resp.body)
        retry_after = hdrs.get("retry-after", "")
        return status_failure(
            status,
            f"server error {code}" if code else "server error",
            float(retry_after) if retry_after.isdigit() else 0.0,
            code,
        )

    def close(self) -> None:
        """Free the idle connections now; a context a read still uses (another thread's)
        is freed by that read when it ends: freeing it under the read crashed the process.
        The transport stays usable (a later read connects afresh)."""
        with self._lock:
            for ctx in self._all:
                for k, v in ctx.stats().items():
                    self._retired[k] = self._retired.get(k, 0) + v
            for ctx in self._contexts:
                ctx.close()
            for h in self._handles:
                h.close()
            self._contexts, self._all, self._handles = [], [], []
