"""A hostile HTTP/1.1 server on 127.0.0.1 for the robustness tests: raw sockets, so a
script can send what no well-behaved server would (a Content-Range for other bytes, a
body longer or shorter than its Content-Length, bad chunks, a stall, huge headers).

``HostileServer(script)``: ``script(req)`` answers each request; ``req`` holds the
method, path, headers (lower-case names) and a running request number. It returns
bytes (sent as they are), an iterable of bytes and floats (a float: sleep that many
seconds, stopping early when the server stops), or None (close without answering).
A connection serves requests until the script's answer ends with ``Connection: close``
or the client hangs up. ``requests`` logs every request seen.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Answer = bytes | Iterable[bytes | float] | None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    number: int
    port: int

    def range(self) -> tuple[int, int] | None:
        """The (first, last) byte of a ``Range: bytes=a-b`` header, or None."""
        value = self.headers.get("range", "")
        if not value.startswith("bytes="):
            return None
        a, _, b = value[6:].partition("-")
        return int(a), int(b)


def response(
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
    close: bool = False,
) -> bytes:
    """A raw HTTP/1.1 response; ``length`` overrides the Content-Length sent (a lie)."""
    lines = [f"HTTP/1.1 {status} X"]
    hdrs = dict(headers or {})
    if "Transfer-Encoding" not in hdrs:
        hdrs.setdefault("Content-Length", str(len(body) if length is None else length))
    if close:
        hdrs["Connection"] = "close"
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def ranged(data: bytes, req: Request, headers: dict[str, str] | None = None) -> bytes:
    """The honest answer to ``req`` for an object holding ``data``."""
    r = req.range()
    if r is None:
        return response(200, b"" if req.method == "HEAD" else data, headers, length=len(data))
    a, b = r[0], min(r[1], len(data) - 1)
    hdrs = {"Content-Range": f"bytes {a}-{b}/{len(data)}", **(headers or {})}
    return response(206, data[a : b + 1], hdrs)


@dataclass
class HostileServer:
    script: Callable[[Request], Answer]
    tls: ssl.SSLContext | None = None  # serve https:// with this server context
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str = "obj.bin") -> str:
        return f"{self.endpoint}/{path.lstrip('/')}"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> socket.socket | None:
        if self.tls is None:
            return conn
        conn.settimeout(5)
        try:
            return self.tls.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return None

    def _read_head(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        """The next request's head (its body, if any, is not read: GET and HEAD have
        none); None when the client hung up or the server stops."""
        while b"\r\n\r\n" not in buf:
            if self._stop.is_set():
                return None
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return None
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        return head

    def _serve(self, raw: socket.socket) -> None:
        conn = self._handshake(raw)
        if conn is None:
            return
        conn.settimeout(0.2)
        buf = bytearray()
        try:
            while True:
                head = self._read_head(conn, buf)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                with self._lock:
                    req = Request(method, path, headers, len(self.requests), self.port)
                    self.requests.append(req)
                answer = self.script(req)
                if answer is None:
                    return
                pieces = [answer] if isinstance(answer, bytes) else answer
                closing = False
                for piece in pieces:
                    if isinstance(piece, (int, float)):
                        end = time.monotonic() + piece
                        while time.monotonic() < end and not self._stop.is_set():
                            time.sleep(min(0.02, piece))
                        continue
                    if b"Connection: close" in piece[:8192]:
                        closing = True
                    conn.sendall(piece)
                if closing:
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
