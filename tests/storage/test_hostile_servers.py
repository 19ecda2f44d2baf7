"""The http(s):// and s3:// engine against hostile or broken servers: raw sockets on
127.0.0.1 (tests/support/hostile.py) that answer other bytes than asked for, lie about
lengths, compress unasked, change the object between parts, stall, trickle, send huge
headers, retry forever, redirect anywhere, and list S3 prefixes wrongly.

Each ends in data that is right, or a named error (the URI without its credentials, the
byte range, what was wrong) within the knobs' bounds: no crash, no hang, no wrong bytes,
no secret in any message, repr or captured local, no control character from the server
in a message."""

from __future__ import annotations

import gzip
import logging
import os
import re
import socket
import ssl
import threading
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

import fastload
from fastload import errors
from fastload._native import http_reader
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset
from fastload.storage.block_reader import BlockReader
from fastload.storage.cache import NodeCache
from fastload.storage.engine import RangeEngine
from fastload.storage.uri import parse_uri
from tests.support.hostile import HostileServer, Request, ranged, response
from tests.support.network import FAST_RETRY, table, traceback_locals
from tests.support.servers import ACCESS_KEY, SECRET_KEY, payload

pytestmark = [pytest.mark.http, pytest.mark.usefixtures("clean_aws_env")]

DATA = payload(64 << 10, 11)
N = len(DATA)
PASSWORD = "PASSWORD-do-not-leak"
PRESIGNED = "X-Amz-Signature=PRESIGNED-do-not-leak&X-Amz-Credential=AKIA-do-not-leak"
TOKEN = "TOKEN-do-not-leak"


def engine(**kw) -> RangeEngine:
    return RangeEngine(**{**FAST_RETRY, **kw})


def s3_engine(srv: HostileServer, **kw) -> RangeEngine:
    return engine(
        endpoint_url=srv.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        session_token=TOKEN,
        region="us-east-1",
        **kw,
    )


def read(eng: RangeEngine, url: str, ranges=((0, 1000),)) -> bytes:
    return bytes(eng.read_ranges(url, list(ranges)))


def want(ranges=((0, 1000),)) -> bytes:
    return b"".join(DATA[o : o + n] for o, n in ranges)


def check_named(exc: BaseException, shown: str, *secrets: str) -> str:
    """The error names ``shown`` (the URI as errors show it); no secret is in its text or
    repr, no credential option, signature or ``secrets`` (what the server echoed) in the
    locals of its frames either, and no control character the server sent in its text."""
    text = str(exc)
    assert text.startswith(shown), text
    shown_text = text + repr(exc)
    for s in (PASSWORD, "PRESIGNED-do-not-leak", "AKIA-do-not-leak"):
        assert s not in shown_text, s  # the caller's own URL: its frames hold it as written
    everything = shown_text + traceback_locals(exc)
    assert not re.search(r"Signature=[0-9a-f]{8}", everything)  # a SigV4 signature
    for s in (SECRET_KEY, TOKEN, *secrets):
        assert s not in everything, s
    assert not re.search(r"[\x00-\x1f\x7f]", text), text
    return text


@pytest.fixture
def hostile():
    """hostile(script) -> a HostileServer, closed after the test."""
    servers: list[HostileServer] = []

    def make(script, **kw) -> HostileServer:
        servers.append(HostileServer(script, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# -- a 206 must hold the bytes asked for -------------------------------------------------


def _gzipped_range(req: Request) -> bytes:
    a, b = req.range()
    body = gzip.compress(DATA[a : b + 1])
    return response(206, body, {"Content-Range": f"bytes {a}-{b}/{N}", "Content-Encoding": "gzip"})


def _gzipped_chunked(req: Request) -> bytes:
    a, b = req.range()
    body = gzip.compress(payload(b - a + 1, 5))  # random bytes: longer compressed
    head = response(
        206,
        b"",
        {
            "Content-Range": f"bytes {a}-{b}/{N}",
            "Content-Encoding": "gzip",
            "Transfer-Encoding": "chunked",
        },
    )
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def _chunked_longer(req: Request) -> bytes:
    a, b = req.range()
    body = DATA[a : b + 1]
    head = response(
        206, b"", {"Content-Range": f"bytes {a}-{a + 499}/{N}", "Transfer-Encoding": "chunked"}
    )
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


WRONG_206 = {
    # other bytes than asked for: refused before (a regression guard)
    "other start": (
        lambda q: response(206, DATA[5:1005], {"Content-Range": f"bytes 5-1004/{N}"}),
        "bytes 5-1004",
    ),
    # before: each of these was written as if it were bytes 0-999
    "no Content-Range": (lambda q: response(206, DATA[7:1007]), "without a Content-Range"),
    "Content-Range shorter than the body": (
        lambda q: response(206, DATA[:1000], {"Content-Range": f"bytes 0-499/{N}"}),
        "bytes 0-499 in a body of 1000 bytes",
    ),
    "one byte claimed": (
        lambda q: response(206, DATA[:1000], {"Content-Range": f"bytes 0-0/{N}"}),
        "bytes 0-0 in a body of 1000 bytes",
    ),
    "compressed range": (_gzipped_range, r"\(Content-Encoding: gzip\)"),
    "chunked past its Content-Range": (_chunked_longer, "more body than its Content-Range"),
    "compressed range of no length": (
        _gzipped_chunked,
        r"\(Content-Encoding: gzip\) in a body of no",
    ),
    # before: a RangeError blaming the caller's range
    "end past its own total": (
        lambda q: response(206, DATA[:1000], {"Content-Range": "bytes 0-999/10"}),
        "malformed Content-Range",
    ),
    "no numbers": (
        lambda q: response(206, DATA[:1000], {"Content-Range": "bytes x-y/z"}),
        "malformed Content-Range",
    ),
    "a number past int64": (
        lambda q: response(206, DATA[:1000], {"Content-Range": f"bytes 0-{(1 << 70)}/{N}"}),
        "malformed Content-Range",
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_206))
def test_a_206_that_does_not_hold_the_asked_bytes_is_refused_by_name(hostile, case):
    script, why = WRONG_206[case]
    srv = hostile(script)
    url = f"http://user:{PASSWORD}@127.0.0.1:{srv.port}/obj.bin?{PRESIGNED}"
    with engine(max_retries=2) as eng:
        with pytest.raises(errors.HTTPStatusError) as info:
            read(eng, url)
    text = check_named(
        info.value, f"http://user:***@127.0.0.1:{srv.port}/obj.bin?X-Amz-Signature=***"
    )
    assert "bytes 0-999: server answered" in text and re.search(why, text), text
    assert "for a request of 0-999" in text
    assert len(srv.requests) == 1  # the server is broken, not busy: no retry


def test_a_whole_object_stream_holds_no_bytes_past_its_content_range(hostile):
    """A server known to ignore Range is read with one streamed GET per object; a stream
    whose (chunked) body runs past the Content-Range it sent was scattered in full."""

    def script(q: Request) -> bytes:
        if q.number == 0:
            return response(200, DATA)  # ignores Range: later reads stream
        head = response(
            200, b"", {"Content-Range": f"bytes 0-99/{N}", "Transfer-Encoding": "chunked"}
        )
        return head + b"%x\r\n%s\r\n0\r\n\r\n" % (N, DATA)

    srv = hostile(script)
    with engine() as eng:
        with pytest.warns(errors.RangeIgnoredWarning):
            assert read(eng, srv.url()) == want()
        with pytest.raises(errors.HTTPStatusError, match="more body than its Content-Range"):
            read(eng, srv.url(), [(0, 50), (5000, 1000)])
    assert "range" not in srv.requests[1].headers


def test_a_206_of_fewer_bytes_than_asked_is_resumed(hostile):
    """A server that sends less than asked for (and says so) is asked for the rest."""

    def script(q: Request) -> bytes:
        a, b = q.range()
        b = min(b, a + 299)  # 300 bytes per answer at most
        return response(206, DATA[a : b + 1], {"Content-Range": f"bytes {a}-{b}/{N}"})

    srv = hostile(script)
    with engine() as eng:
        assert read(eng, srv.url()) == want()
    assert [q.range() for q in srv.requests] == [(0, 999), (300, 999), (600, 999), (900, 999)]


def test_a_compressed_whole_object_is_refused_and_a_stored_encoding_is_read_as_stored(hostile):
    gz = gzip.compress(DATA)
    srv = hostile(lambda q: response(200, gz, {"Content-Encoding": "gzip"}))
    with engine() as eng:
        with pytest.raises(errors.HTTPStatusError, match=r"compressed \(Content-Encoding: gzip"):
            read(eng, srv.url())
    # an object stored compressed (S3's Content-Encoding metadata): its ranges are the
    # stored bytes, their lengths agree, and they are read as they are stored
    srv = hostile(lambda q: ranged(gz, q, {"Content-Encoding": "gzip"}))
    with engine() as eng:
        assert read(eng, srv.url(), [(0, 100), (200, 50)]) == gz[:100] + gz[200:250]


def test_bodies_longer_than_their_length_or_with_bytes_after_the_last_chunk(hostile):
    """Bytes past Content-Length, or after the terminal chunk, are never the next
    answer's: every part on the kept-alive connection still gets its own bytes."""

    def extra(q: Request) -> bytes:
        return ranged(DATA, q) + b"HTTP/1.1 206 X\r\nContent-Length: 3\r\n\r\nBAD"

    def chunked(q: Request) -> bytes:
        a, b = q.range()
        head = response(
            206, b"", {"Content-Range": f"bytes {a}-{b}/{N}", "Transfer-Encoding": "chunked"}
        )
        body = DATA[a : b + 1]
        return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\nGARBAGE"

    ranges = [(0, 16384), (20000, 16384), (40000, 16384)]
    for script in (extra, chunked):
        srv = hostile(script)
        with engine(part_size=16384, max_inflight_parts=1) as eng:
            assert read(eng, srv.url(), ranges) == want(ranges)


def test_a_whole_object_answer_shorter_or_longer_than_its_length(hostile):
    """A server that ignores Range: a 200 cut short is read again (from where it stopped);
    bytes after its Content-Length never reach the next read on the connection."""

    def short_once(q: Request) -> bytes:
        if q.number == 0:
            return response(200, DATA[: N // 2], length=N, close=True)
        return response(200, DATA)

    srv = hostile(short_once)
    ranges = [(0, 1000), (N - 1000, 1000)]
    with engine() as eng, pytest.warns(errors.RangeIgnoredWarning):
        assert read(eng, srv.url(), ranges) == want(ranges)
        assert eng.stats()["retries"] == 1
    srv = hostile(lambda q: response(200, DATA + b"EXTRA-BYTES", length=N))
    with engine() as eng, pytest.warns(errors.RangeIgnoredWarning):
        for _ in range(3):
            assert read(eng, srv.url(), ranges) == want(ranges)


def test_a_body_cut_mid_transfer_is_resumed_then_bounded(hostile):
    def cut_once(q: Request):
        if q.number == 0:
            a, b = q.range()
            return [
                response(
                    206,
                    DATA[a : a + 300],
                    {"Content-Range": f"bytes {a}-{b}/{N}"},
                    length=b - a + 1,
                    close=True,
                )
            ]
        return ranged(DATA, q)

    srv = hostile(cut_once)
    with engine() as eng:
        assert read(eng, srv.url()) == want()
        assert eng.stats()["retries"] == 1
    assert [q.range() for q in srv.requests] == [(0, 999), (300, 999)]

    def always_cut(q: Request):
        a, b = q.range()
        return response(
            206,
            DATA[a : a + 10],
            {"Content-Range": f"bytes {a}-{b}/{N}"},
            length=b - a + 1,
            close=True,
        )

    srv = hostile(always_cut)
    with engine(max_retries=2) as eng:
        with pytest.raises(errors.ShortReadError, match="after 3 attempts") as info:
            read(eng, srv.url())
    check_named(info.value, srv.url())
    assert len(srv.requests) == 3


# -- sizes past any object --------------------------------------------------------------


def test_a_size_past_int64_is_no_size_and_a_huge_one_is_named_when_it_cannot_be_had(hostile):
    """Before: size() returned 10**23 and read() raised a bare OverflowError; a claimed
    4 EiB object a MemoryError that named no URI."""

    def script(q: Request) -> bytes:
        if q.method == "HEAD":
            return response(200, b"", length=10**23)
        return response(206, b"x", {"Content-Range": f"bytes 0-0/{10**23}"})

    srv = hostile(script)
    with engine() as eng:
        with pytest.raises(errors.HTTPStatusError, match="reported no object size") as info:
            eng.read(srv.url())
    check_named(info.value, srv.url())
    srv = hostile(lambda q: response(200, b"", length=1 << 62))
    with engine() as eng:
        assert eng.size(srv.url()) == 1 << 62
        with pytest.raises(MemoryError, match=rf"^{re.escape(srv.url())}: cannot allocate"):
            eng.read(srv.url())


def _endless_chunked(q: Request):
    """A 200 whose chunked body goes on (here: for 200 MiB)."""
    yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"<Contents>".ljust(1 << 20, b"a"))
    for _ in range(200):
        yield chunk


def test_a_control_answer_that_never_ends_is_cut_at_a_bound(hostile):
    """Before: the size probe (a HEAD without a length, then a first-byte GET) and a
    listing page read any body into memory until request_timeout (100 MB in 3 s here)."""

    # a HEAD without a length: the size is asked for with a first-byte GET
    srv = hostile(
        lambda q: [b"HTTP/1.1 200 OK\r\n\r\n"] if q.method == "HEAD" else _endless_chunked(q)
    )
    with engine(request_timeout=300) as eng:
        with pytest.raises(errors.HTTPStatusError, match="GET answer longer than") as info:
            eng.size(srv.url())
        check_named(info.value, srv.url())
    srv = hostile(_endless_chunked)
    with s3_engine(srv, request_timeout=300) as eng:
        with pytest.raises(errors.HTTPStatusError, match="GET answer longer than") as info:
            eng.list("s3://bkt/pre/")
        check_named(info.value, "s3://bkt/pre/")


# -- one read, one version --------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        ({"ETag": '"v1"'}, {"ETag": '"v2"'}, r'ETag "v1" became "v2"'),
        ({}, {"total": N + 7}, rf"its size was {N} bytes, the server now says {N + 7}"),
        (
            {"Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"},
            {"Last-Modified": "Tue, 02 Jan 2024 00:00:00 GMT"},
            "Last-Modified",
        ),
    ],
    ids=["etag", "size", "last-modified"],
)
def test_a_version_change_between_the_parts_of_one_read_fails(hostile, change):
    first, later, why = change

    def script(q: Request) -> bytes:
        a, b = q.range()
        hdrs = dict(first if a == 0 else later)
        total = hdrs.pop("total", N)
        hdrs["Content-Range"] = f"bytes {a}-{b}/{total}"
        return response(206, DATA[a : b + 1], hdrs)

    srv = hostile(script)
    ranges = [(0, 4096), (30000, 4096)]
    out = bytearray(8192)
    with engine(part_size=4096, max_inflight_parts=1) as eng:
        with pytest.raises(errors.ObjectChangedError, match=why) as info:
            eng.read_into(
                [srv.url()],
                table([(0, o, n, d) for (o, n), d in zip(ranges, (0, 4096), strict=True)]),
                out,
            )
    check_named(info.value, f"{srv.url()} bytes 30000-34095")


def test_long_etags_that_differ_past_their_first_bytes_still_differ(hostile):
    """Before: ETags were compared in their first 127 bytes, so two versions whose long
    ETags differ after that were mixed in one read."""
    long_tag = '"' + "e" * 200

    def script(q: Request) -> bytes:
        a, b = q.range()
        tag = long_tag + ('1"' if a == 0 else '2"')
        return response(206, DATA[a : b + 1], {"Content-Range": f"bytes {a}-{b}/{N}", "ETag": tag})

    srv = hostile(script)
    with engine(part_size=4096, max_inflight_parts=1) as eng:
        with pytest.raises(errors.ObjectChangedError, match="ETag") as info:
            read(eng, srv.url(), [(0, 4096), (8192, 4096)])
        check_named(info.value, srv.url())
    # one long ETag throughout, from the HEAD (the control plane) and every GET: no change
    srv = hostile(lambda q: ranged(DATA, q, {"ETag": long_tag + '"'}))
    with engine(part_size=4096) as eng:
        assert eng.size(srv.url()) == N
        assert bytes(eng.read(srv.url())) == DATA


# -- stalls and slow servers ------------------------------------------------------------


def test_a_server_that_never_answers_ends_in_the_timeout_knob(hostile):
    srv = hostile(lambda q: [3600.0])
    with engine(timeout=0.5) as eng:
        with pytest.raises(errors.ReadTimeoutError, match=r"timeout=0.5s") as info:
            read(eng, srv.url())
        check_named(info.value, f"{srv.url()} bytes 0-999")
        with pytest.raises(errors.ReadTimeoutError, match="request_timeout=0.5s") as info:
            eng.size(srv.url())  # the HEAD obeys it too
        check_named(info.value, srv.url())


def test_a_server_trickling_one_byte_a_second_is_a_stalled_transfer(hostile):
    def trickle(q: Request):
        a, b = q.range()
        yield response(206, b"", {"Content-Range": f"bytes {a}-{b}/{N}"}, length=b - a + 1)
        for i in range(a, b + 1):
            yield DATA[i : i + 1]
            yield 1.0

    srv = hostile(trickle)
    with engine(low_speed_limit=100, low_speed_time=1, max_retries=1) as eng:
        with pytest.raises(errors.ReadTimeoutError, match="Less than 100 bytes/sec") as info:
            read(eng, srv.url())
    text = check_named(info.value, f"{srv.url()} bytes 0-999")
    assert "retries exhausted (max_retries)" in text and "after 2 attempts" in text


def test_a_loader_over_a_stalling_s3_server_names_the_stall(hostile):
    """Before: a stall that low_speed_time ended, in a loader without timeout_seconds,
    surfaced as 'TypeError: unsupported format string passed to NoneType.__format__'."""
    page = _page(["pre/a.bin", "pre/b.bin"])

    def script(q: Request):
        return response(200, page) if "list-type" in q.path else [3600.0]

    srv = hostile(script)
    with s3_engine(srv, low_speed_time=1, max_retries=0) as eng:
        ds = ObjectDataset("s3://bkt/pre/", engine=eng)
        with pytest.raises(errors.ReadTimeoutError, match="Operation too slow") as info:
            for _ in DataLoader(ds, batch_size=2, engine=eng):
                pass
    check_named(info.value, "s3://bkt/pre/")


@pytest.mark.parametrize("shape", ["one huge header", "many headers"])
def test_huge_response_headers_end_in_a_named_error(hostile, shape):
    big = (
        {"X-Big": "a" * 400_000}
        if shape == "one huge header"
        else {f"X-{i}": "a" * 100 for i in range(5000)}
    )
    srv = hostile(
        lambda q: response(206, DATA[:1000], {"Content-Range": f"bytes 0-999/{N}", **big})
    )
    with engine(max_retries=1) as eng:
        with pytest.raises(errors.TransferError) as info:
            read(eng, srv.url())
    check_named(info.value, f"{srv.url()} bytes 0-999")
    assert len(srv.requests) <= 2


# -- busy servers: retries are bounded and counted ---------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_busy_answers_are_retried_within_the_budget_and_counted(hostile, status):
    srv = hostile(lambda q: response(status, b"busy", {"Retry-After": "0"}))
    with engine(max_retries=3) as eng:
        with pytest.raises(errors.HTTPStatusError, match="after 4 attempts") as info:
            read(eng, srv.url())
        assert eng.stats()["retries"] == 3
    text = check_named(info.value, f"{srv.url()} bytes 0-999")
    assert "retries exhausted (max_retries)" in text and f"HTTP {status}" in text
    assert len(srv.requests) == 4


@pytest.mark.parametrize("plane", ["GET", "HEAD"])
def test_a_retry_after_past_any_deadline_stops_the_retries_at_once(hostile, plane):
    """Before: the data plane's number overflowed (undefined behaviour) and the GET was
    retried at once, as often as max_retries allowed."""
    srv = hostile(lambda q: response(503, b"", {"Retry-After": "9" * 30}))
    with engine(max_retries=3) as eng:
        with pytest.raises(errors.HTTPStatusError, match=r"retries exhausted \(retry_deadline\)"):
            read(eng, srv.url()) if plane == "GET" else eng.size(srv.url())
    assert len(srv.requests) == 1


# -- error bodies -----------------------------------------------------------------------

ECHOING_403 = (
    b'<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>no</Message>'
    b"<StringToSign>AWS4-HMAC-SHA256 ECHOED-do-not-leak</StringToSign>"
    b"<SignatureProvided>ECHOED-do-not-leak</SignatureProvided></Error>"
)


@pytest.mark.parametrize(
    "status,body,cls,code",
    [
        (403, ECHOING_403, errors.AccessDeniedError, "SignatureDoesNotMatch"),
        (404, b"<Error><Code>NoSuchKey</Code></Error>", errors.ObjectNotFoundError, "NoSuchKey"),
    ],
)
def test_an_xml_error_names_the_uri_and_the_s3_code_and_nothing_else(
    hostile, status, body, cls, code
):
    srv = hostile(lambda q: response(status, body, {"Content-Type": "application/xml"}))
    url = f"http://user:{PASSWORD}@127.0.0.1:{srv.port}/o.bin?{PRESIGNED}"
    with engine() as eng:
        with pytest.raises(cls) as info:
            read(eng, url)
    text = check_named(
        info.value,
        f"http://user:***@127.0.0.1:{srv.port}/o.bin?X-Amz-Signature=***&X-Amz-Credential=*** "
        "bytes 0-999",
        "ECHOED-do-not-leak",
    )
    assert f"server error {code}; HTTP {status}" in text
    # over S3: the signed GET and the ListObjectsV2 request alike
    with s3_engine(srv) as eng:
        with pytest.raises(cls) as info:
            eng.read_ranges("s3://bkt/key.bin", [(0, 1000)])
        check_named(info.value, "s3://bkt/key.bin bytes 0-999", "ECHOED-do-not-leak")
        assert f"server error {code}" in str(info.value)
        with pytest.raises(cls) as info:
            eng.list("s3://bkt/pre/")
        check_named(info.value, "s3://bkt/pre/", "ECHOED-do-not-leak")
        assert f"server error {code}" in str(info.value)


def test_an_error_code_that_is_no_word_is_not_repeated(hostile):
    """Before: a <Code> with CR LF and a terminal escape went into the message as sent."""
    body = b"<Error><Code>NoSuchKey\r\nX-Injected: 1\x1b[31m</Code></Error>"
    srv = hostile(lambda q: response(404, body))
    with engine() as eng:
        with pytest.raises(errors.ObjectNotFoundError) as info:
            read(eng, srv.url())
    text = check_named(info.value, f"{srv.url()} bytes 0-999")
    assert "Injected" not in text and text.endswith("server error; HTTP 404")
    with s3_engine(srv) as eng:
        with pytest.raises(errors.ObjectNotFoundError) as info:
            eng.list("s3://bkt/pre/")
    assert "Injected" not in check_named(info.value, "s3://bkt/pre/")


def test_a_changed_etag_with_control_characters_is_named_without_them(hostile):
    def script(q: Request) -> bytes:
        a, b = q.range()
        etag = '"v1"' if a == 0 else '"v2\x1b[2J\x07"'
        return response(206, DATA[a : b + 1], {"Content-Range": f"bytes {a}-{b}/{N}", "ETag": etag})

    srv = hostile(script)
    with engine(part_size=4096, max_inflight_parts=1) as eng:
        with pytest.raises(
            errors.ObjectChangedError, match=r'ETag "v1" became "v2\?\[2J\?"'
        ) as info:
            read(eng, srv.url(), [(0, 4096), (8192, 4096)])
    check_named(info.value, srv.url())


# -- redirects --------------------------------------------------------------------------


class Listener:
    """A port that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture
def listener():
    ln = Listener()
    yield ln
    ln.close()


def _redirect(code: int, location: str):
    return lambda q: response(code, b"", {"Location": location})


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_redirect_to_another_origin_carries_no_credentials(hostile, code):
    other = hostile(lambda q: ranged(DATA, q))
    for target in (f"http://127.0.0.1:{other.port}/x.bin", f"http://localhost:{other.port}/x.bin"):
        srv = hostile(_redirect(code, target))
        url = f"http://user:{PASSWORD}@127.0.0.1:{srv.port}/o.bin?{PRESIGNED}"
        with engine() as eng:
            assert read(eng, url) == want()
            assert eng.size(url) == N
        assert srv.requests[0].headers.get("authorization", "").startswith("Basic ")
    assert len(other.requests) == 4
    for q in other.requests:
        assert "authorization" not in q.headers and "cookie" not in q.headers
        assert q.path == "/x.bin"  # and the presigned query stayed with its origin


def test_s3_requests_follow_no_redirect(hostile):
    """A signed request is never sent anywhere else (nor is its session token)."""
    other = hostile(lambda q: ranged(DATA, q))
    body = b"<Error><Code>TemporaryRedirect</Code></Error>"
    srv = hostile(
        lambda q: response(307, body, {"Location": f"http://127.0.0.1:{other.port}/bkt/key.bin"})
    )
    with s3_engine(srv) as eng:
        with pytest.raises(errors.HTTPStatusError, match="redirect not followed") as info:
            eng.read_ranges("s3://bkt/key.bin", [(0, 1000)])
        check_named(info.value, "s3://bkt/key.bin bytes 0-999")
        with pytest.raises(errors.HTTPStatusError) as info:
            eng.list("s3://bkt/pre/")
        check_named(info.value, "s3://bkt/pre/")
    assert srv.requests[0].headers["authorization"].startswith("AWS4-HMAC-SHA256")
    assert other.requests == []


@pytest.mark.parametrize("scheme", ["file", "ftp", "gopher", "dict"])
def test_a_redirect_to_another_scheme_is_refused_on_both_planes(hostile, listener, scheme):
    """Before: ftp:// was followed (curl's default), and the data plane named the refusal
    'server error; HTTP 302'."""
    target = "file:///etc/passwd" if scheme == "file" else f"{scheme}://127.0.0.1:{listener.port}/x"
    srv = hostile(_redirect(302, target))
    with engine(connect_timeout=2) as eng:
        for call in (lambda: read(eng, srv.url()), lambda: eng.size(srv.url())):
            with pytest.raises(errors.HTTPStatusError, match="redirect refused") as info:
                call()
            text = check_named(info.value, srv.url())
            assert f'Protocol "{scheme}"' in text and "HTTP 302" in text
    assert listener.accepted == []


def test_a_redirect_from_https_down_to_http_is_refused(hostile, tls_ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_ca.cert, tls_ca.key)
    plain = hostile(lambda q: ranged(DATA, q))
    srv = hostile(_redirect(302, f"http://127.0.0.1:{plain.port}/x.bin"), tls=ctx)
    url = f"https://user:{PASSWORD}@127.0.0.1:{srv.port}/o.bin"
    with engine(ca_bundle=tls_ca.ca, http2=False) as eng:
        for call in (lambda: read(eng, url), lambda: eng.size(url)):
            with pytest.raises(errors.HTTPStatusError, match='redirect refused.*Protocol "http"'):
                call()
    assert plain.requests == []
    # https to https elsewhere is followed
    tls_other = hostile(lambda q: ranged(DATA, q), tls=ctx)
    srv = hostile(_redirect(302, f"https://127.0.0.1:{tls_other.port}/x.bin"), tls=ctx)
    with engine(ca_bundle=tls_ca.ca, http2=False) as eng:
        assert read(eng, srv.url()) == want()


@pytest.mark.parametrize("growing", [False, True])
def test_a_redirect_loop_ends_after_max_redirects_on_both_planes(hostile, growing):
    srv = hostile(lambda q: response(302, b"", {"Location": q.path + ("x" if growing else "")}))
    with engine() as eng:
        for call in (lambda: read(eng, srv.url()), lambda: eng.size(srv.url())):
            before = len(srv.requests)
            with pytest.raises(errors.HTTPStatusError, match="redirect refused") as info:
                call()
            check_named(info.value, srv.url())
            assert f"Maximum ({http_reader.MAX_REDIRECTS}) redirects" in str(info.value)
            # before, the HEAD followed 30 (libcurl's default; older ones: no limit)
            assert len(srv.requests) - before == http_reader.MAX_REDIRECTS + 1


def test_follow_redirects_false_names_the_knob(hostile):
    other = hostile(lambda q: ranged(DATA, q))
    srv = hostile(_redirect(302, f"http://127.0.0.1:{other.port}/x.bin"))
    with engine(follow_redirects=False) as eng:
        with pytest.raises(errors.HTTPStatusError, match=r"follow_redirects=False\); HTTP 302"):
            read(eng, srv.url())
    assert other.requests == []


# -- S3 listings ------------------------------------------------------------------------


def _page(keys, token=None, truncated=False, before=b"") -> bytes:
    contents = b"".join(
        b"<Contents><Key>%s</Key><Size>%d</Size><ETag>&quot;e&quot;</ETag>"
        b"<LastModified>2024-01-01T00:00:00.000Z</LastModified></Contents>" % (k.encode(), 100)
        for k in keys
    )
    t = b"<IsTruncated>%s</IsTruncated>" % (b"true" if truncated else b"false")
    if token:
        t += b"<NextContinuationToken>%s</NextContinuationToken>" % token.encode()
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        + before
        + b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        + t
        + contents
        + b"</ListBucketResult>"
    )


def _query(q: Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(q.path).query).items()}


_LAUGHS = (
    b"<!DOCTYPE l [<!ENTITY l0 'lol'>"
    + b"".join(b"<!ENTITY l%d '%s'>" % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
    + b"]>"
)


def _cycle(q: Request) -> bytes:
    nxt = {"": "A", "A": "B", "B": "A"}[_query(q).get("continuation-token", "")]
    return _page([f"pre/k{q.number}"], token=nxt, truncated=True)


BAD_LISTINGS = {
    "not xml": (lambda q: b"<html>hi</html>", "no ListBucketResult element"),
    "cut short": (lambda q: _page(["pre/a", "pre/b"])[:-40], r"cut short"),
    "cut inside a key": (lambda q: _page(["pre/a", "pre/b"])[:-150], r"cut short"),
    "IsTruncated without a token": (
        lambda q: _page(["pre/a"], truncated=True),
        "no NextContinuationToken",
    ),
    "the same token again": (
        lambda q: _page(["pre/a"], token="A", truncated=True),
        "the same NextContinuationToken again",
    ),
    "a cycle of tokens": (_cycle, "a NextContinuationToken it sent before"),
    "a key outside the prefix": (
        lambda q: _page(["pre/a", "other/b"]),
        r"named the key 'other/b', outside the prefix 'pre/'",
    ),
    "a key escaping the prefix": (
        lambda q: _page(["pre/a", "../../etc/passwd"]),
        r"named the key '../../etc/passwd', outside the prefix 'pre/'",
    ),
    "billion laughs": (
        lambda q: _page(["pre/&l9;"], before=_LAUGHS),
        "declares a DTD or entities",
    ),
    "billion laughs, no Size": (
        lambda q: _page(["pre/&l9;"], before=_LAUGHS).replace(b"<Size>100</Size>", b""),
        "declares a DTD or entities",
    ),
    "an external entity": (
        lambda q: _page(
            ["pre/&x;"], before=b'<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        ),
        "declares a DTD or entities",
    ),
    "a Size that is no number": (
        lambda q: _page(["pre/a"]).replace(b"<Size>100", b"<Size>lots"),
        "Size is 'lots'",
    ),
    "a negative Size": (
        lambda q: _page(["pre/a"]).replace(b"<Size>100", b"<Size>-5"),
        "Size is '-5'",
    ),
    "a Size past int64": (
        lambda q: _page(["pre/a"]).replace(b"<Size>100", b"<Size>" + b"9" * 25),
        "Size is '9999",
    ),
    "a bad Size in a page the parser reads": (
        lambda q: (
            _page(["pre/a"])
            .replace(b"<Size>100", b"<Size>x")
            .replace(b"<ETag>&quot;e&quot;</ETag>", b"")
        ),
        "Size is 'x'",
    ),
}


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("case", sorted(BAD_LISTINGS))
def test_a_broken_or_hostile_listing_is_a_named_error(hostile, case, concurrency):
    script, why = BAD_LISTINGS[case]

    def guarded(q: Request) -> bytes:
        if q.number > 50:  # a listing that loops: an error here rather than a hang
            return response(500, b"<Error><Code>LoopedTooLong</Code></Error>")
        return response(200, script(q))

    srv = hostile(guarded)
    with s3_engine(srv, list_concurrency=concurrency, max_retries=0) as eng:
        with pytest.raises(errors.HTTPStatusError) as info:
            eng.list("s3://bkt/pre/")
    text = check_named(info.value, "s3://bkt/pre/: ListObjectsV2")
    assert re.search(why, text), text
    assert len(srv.requests) <= 4


def test_listed_keys_holding_dot_dot_stay_keys_and_touch_nothing_outside(hostile, tmp_path):
    """'../' is a legal S3 key character: such a key is listed and read as the key it is;
    the cache names entries by hash and fs.get() writes nothing outside its target."""
    keys = ["pre/ok.bin", "pre/../../escaped.bin", "pre/a/../../../../escaped2.bin"]

    def script(q: Request) -> bytes:
        path = urlsplit(q.path).path
        if "list-type" in q.path:
            return response(200, _page(keys))
        if q.method == "HEAD":
            return response(404, b"") if path.endswith("/pre") else response(200, length=100)
        return ranged(DATA[:100], q)

    srv = hostile(script)
    with s3_engine(srv) as eng:
        listed = eng.list("s3://bkt/pre/")
        assert listed == sorted(f"s3://bkt/{k}" for k in keys)
        sent = {urlsplit(q.path).path for q in srv.requests}
        cache = NodeCache(tmp_path / "cache")
        reader = BlockReader(
            eng, {u: (np.array([0]), np.array([100])) for u in listed}, cache=cache
        )
        out = np.zeros(300, np.uint8)
        reader.read_into(listed, table([(i, 0, 100, 100 * i) for i in range(3)]), out)
        assert out.tobytes() == DATA[:100] * 3
        # the keys went to the server as they are (PATH_AS_IS), not resolved
        gets = {urlsplit(q.path).path for q in srv.requests} - sent
        assert "/bkt/pre/../../escaped.bin" in gets
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    fs = fastload.filesystem(
        skip_instance_cache=True,
        endpoint_url=srv.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
    )
    try:
        fs.get("s3://bkt/pre/", str(dest) + "/", recursive=True)
    except ValueError as exc:  # fsspec refuses a path outside the destination
        assert "outside the destination" in str(exc)
    made = {
        os.path.relpath(os.path.join(d, f), tmp_path)
        for d, _, fs_ in os.walk(tmp_path)
        for f in fs_
    }
    assert all(
        m.startswith(("cache" + os.sep, os.path.join("a", "b", "dest") + os.sep)) for m in made
    ), made


@pytest.mark.parametrize(
    "case", ["a cycle of tokens", "a key outside the prefix", "the same token again"]
)
@pytest.mark.parametrize("listing", ["list_pages_after", "list_dir"])
def test_other_listings_have_the_same_guards(hostile, case, listing):
    """The batched-read listing (list_pages_after) and the one-level listing of fsspec's ls
    (list_dir) page on their own: they check the same."""
    script, why = BAD_LISTINGS[case]
    srv = hostile(lambda q: response(200, script(q)) if q.number < 50 else response(500))
    with s3_engine(srv, max_retries=0) as eng:
        backend, pre = eng.backend("s3"), parse_uri("s3://bkt/pre/")
        with pytest.raises(errors.HTTPStatusError, match=why) as info:
            if listing == "list_dir":
                backend.list_dir(pre)
            else:
                backend.list_pages_after(pre, "", "pre/~", 1000)
    check_named(info.value, "s3://bkt/pre/: ListObjectsV2")
    assert len(srv.requests) <= 3


def _folders(prefixes) -> bytes:
    p = b"".join(
        b"<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % x.encode() for x in prefixes
    )
    return _page([]).replace(b"</ListBucketResult>", p + b"</ListBucketResult>")


@pytest.mark.parametrize(
    "grow,why",
    [("", "the prefix asked for"), ("x" * 99 + "/", "longer than 1024 bytes")],
    ids=["itself", "ever deeper"],
)
def test_a_listing_that_names_ever_more_sub_prefixes_ends(hostile, grow, why):
    """Before: a delimiter page naming the asked prefix as its only sub-prefix started the
    same listing again, forever (300 requests here, then the server's guard)."""
    srv = hostile(
        lambda q: (
            response(200, _folders([_query(q)["prefix"] + grow]))
            if q.number < 50
            else response(500, b"<Error><Code>LoopedTooLong</Code></Error>")
        )
    )
    with s3_engine(srv, list_concurrency=8, max_retries=0) as eng:
        with pytest.raises(errors.HTTPStatusError, match=why) as info:
            eng.list("s3://bkt/pre/")
    check_named(info.value, "s3://bkt/pre/: ListObjectsV2 named the sub-prefix")
    assert len(srv.requests) <= 12


def test_a_loader_over_urls_with_credentials_logs_and_warns_without_them(hostile, caplog):
    """Its debug log lines, the range-ignored warning and a failure name each URL
    redacted (a password, a presigned signature)."""
    srv = hostile(
        lambda q: response(200, DATA[:100]) if "bad" not in q.path else response(403, ECHOING_403)
    )
    urls = [f"http://user:{PASSWORD}@127.0.0.1:{srv.port}/o{i}.bin?{PRESIGNED}" for i in range(4)]
    with engine() as eng:
        ds = ObjectDataset(urls, sizes=[100] * 4, engine=eng)
        with (
            caplog.at_level(logging.DEBUG, logger="fastload"),
            pytest.warns(errors.RangeIgnoredWarning) as warned,
        ):
            batches = list(DataLoader(ds, batch_size=2, engine=eng))
        assert len(batches) == 2
        bad = ObjectDataset([urls[0].replace("o0", "bad")], sizes=[100], engine=eng)
        with pytest.raises(errors.AccessDeniedError) as info:
            list(DataLoader(bad, batch_size=1, engine=eng))
    shown = f"http://user:***@127.0.0.1:{srv.port}/bad.bin?X-Amz-Signature=***"
    check_named(info.value, shown, "ECHOED-do-not-leak")
    texts = [r.getMessage() for r in caplog.records] + [str(w.message) for w in warned]
    assert any("127.0.0.1" in t for t in texts)
    for t in texts:
        for s in (PASSWORD, "PRESIGNED-do-not-leak", "AKIA-do-not-leak"):
            assert s not in t, t


def test_a_stalled_control_answer_is_cut_by_low_speed_time(hostile):
    """Before: low_speed_time acted on the data plane only; a HEAD or listing page that
    trickled ran until request_timeout (30 s here)."""

    def trickle(q: Request):
        yield b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n"
        for _ in range(100):
            yield b"X-Slow: 1\r\n"
            yield 1.0

    srv = hostile(trickle)
    with engine(low_speed_time=1, request_timeout=30, max_retries=1) as eng:
        with pytest.raises(errors.ReadTimeoutError, match="Operation too slow") as info:
            eng.size(srv.url())
    text = check_named(info.value, srv.url())
    assert "retries exhausted (max_retries)" in text and len(srv.requests) == 2


def test_a_get_of_another_version_than_the_listed_one_fails_or_is_read_again(hostile):
    """Before: a listing pinned only the size, so a GET of another version of the same
    size passed for the listed one (and a cache kept it under the listed version)."""
    served = {"etag": '"v1"'}

    def script(q: Request) -> bytes:
        if "list-type" in q.path:
            return response(200, _page(["pre/a.bin"]).replace(b"&quot;e&quot;", b"&quot;v1&quot;"))
        return ranged(DATA[:100], q, {"ETag": served["etag"]})

    srv = hostile(script)
    with s3_engine(srv) as eng:
        assert eng.list("s3://bkt/pre/") == ["s3://bkt/pre/a.bin"]
        assert read(eng, "s3://bkt/pre/a.bin", [(0, 100)]) == DATA[:100]  # the listed one
        served["etag"] = '"v2"'  # replaced after the listing, same size
        with pytest.raises(errors.ObjectChangedError, match='ETag "v1" became "v2"') as info:
            read(eng, "s3://bkt/pre/a.bin", [(0, 100)])
        check_named(info.value, "s3://bkt/pre/a.bin bytes 0-99")
        assert bytes(eng.read("s3://bkt/pre/a.bin")) == DATA[:100]  # the new one, afresh
    # the same tag written otherwise (unquoted in a listing, weak in a GET) is one version
    for listed, sent in ((b"v1", '"v1"'), (b"&quot;v1&quot;", 'W/"v1"'), (b"v1", "v1")):
        served["etag"] = sent
        srv = hostile(
            lambda q, listed=listed: (
                response(200, _page(["pre/a.bin"]).replace(b"&quot;e&quot;", listed))
                if "list-type" in q.path
                else ranged(DATA[:100], q, {"ETag": served["etag"]})
            )
        )
        with s3_engine(srv) as eng:
            eng.list("s3://bkt/pre/")
            assert read(eng, "s3://bkt/pre/a.bin", [(0, 100)]) == DATA[:100]


def test_a_redirect_to_a_server_that_is_down_is_a_transfer_failure_retried(hostile):
    """Not a refused redirect (and before, not 'server error; HTTP 302'): the target's
    failure is retried within the budget, on both planes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    srv = hostile(_redirect(302, f"http://127.0.0.1:{closed}/x.bin"))
    with engine(max_retries=1) as eng:
        with pytest.raises(errors.TransferError, match="after 2 attempts") as info:
            read(eng, srv.url())
        check_named(info.value, f"{srv.url()} bytes 0-999")
        with pytest.raises(errors.TransferError, match="after 2 attempts") as info:
            eng.size(srv.url())
        check_named(info.value, srv.url())
    assert len(srv.requests) == 4
