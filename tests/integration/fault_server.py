"""A real HTTP server on loopback that misbehaves on purpose, for fetch tests.

The first path segment picks the behaviour, the rest names a payload:
  /ok/NAME          200, Content-Length, Accept-Ranges + ETag, honours Range
  /truncate/NAME    200 announcing the full length, sends half, closes cleanly
  /html/NAME        200 with an HTML error page instead of the file
  /empty/NAME       200 with an empty body
  /flaky/NAME       500 on the first request for NAME, then like /ok
  /busy/NAME        503 with `Retry-After: 1` on the first request for NAME, then like /ok
  /missing/NAME     404
  /reset/NAME       sends a third of the body then resets the connection (RST), every time
  /resetonce/NAME   like /reset on the first request, then like /ok (so Range resumes)
  /norange/NAME     like /resetonce but never advertises or honours Range
  /stall/NAME       sends the headers, then nothing until the server stops
  /loop/NAME        302 to /loop2/NAME, which 302s back: a redirect loop
  /redirect/NAME    302 to http://localhost:PORT/ok/NAME (another origin) with a Set-Cookie
  /slow/NAME        like /ok, but sends 4 KiB every `slow_delay` seconds
  /flood/NAME       200 with no Content-Length, NAME's payload over and over (up to
                    FLOOD_LIMIT bytes) until the client hangs up; bytes sent in `flooded`
Every request is logged (path, headers) so tests can count downloads.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)  # when it arrived


FLOOD_LIMIT = 512 * 1024 * 1024  # what "streams forever" means here: far past any test limit


@dataclass
class FaultState:
    payloads: dict[str, bytes] = field(default_factory=dict)
    flooded: int = 0  # bytes the /flood/ mode managed to send before the client hung up
    requests: list[Request] = field(default_factory=list)
    slow_delay: float = 0.05
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path == path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            first = all(r.path != self.path for r in state.requests)
            state.requests.append(
                Request(self.path, {k.lower(): v for k, v in self.headers.items()})
            )
        parts = self.path.strip("/").split("/", 1)
        mode, name = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")
        body = state.payloads.get(name)
        if mode == "missing" or body is None:
            self._simple(404, b"not found")
            return
        if mode == "ok":
            self._serve(body, ranges=True)
        elif mode == "truncate":
            self._headers(200, len(body))
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif mode == "html":
            self._simple(200, b"<html><body>Please log in</body></html>", "text/html")
        elif mode == "empty":
            self._simple(200, b"")
        elif mode == "busy" and first:
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "busy":
            self._serve(body, ranges=True)
        elif mode == "flaky":
            if first:
                self._simple(500, b"internal error")
            else:
                self._serve(body, ranges=True)
        elif mode in ("reset", "resetonce", "norange"):
            ranges = mode != "norange"
            if mode == "reset" or first:
                self._headers(200, len(body), ranges=ranges)
                self.wfile.write(body[: len(body) // 3])
                self.wfile.flush()
                time.sleep(0.2)  # let the client read the part before the reset
                self._reset()
            else:
                self._serve(body, ranges=ranges)
        elif mode == "stall":
            self._headers(200, len(body))
            self.wfile.flush()
            state.stop.wait(30)
            self.close_connection = True
        elif mode in ("loop", "loop2"):
            other = "loop2" if mode == "loop" else "loop"
            self.send_response(302)
            self.send_header("Location", f"/{other}/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "redirect":
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/ok/{name}")
            self.send_header("Set-Cookie", "session=secret; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "slow":
            self._headers(200, len(body))
            for i in range(0, len(body), 4096):
                if state.stop.is_set():
                    break
                self.wfile.write(body[i : i + 4096])
                self.wfile.flush()
                time.sleep(state.slow_delay)
        elif mode == "flood":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")  # the body ends when the connection does
            self.end_headers()
            self.close_connection = True
            try:
                while state.flooded < FLOOD_LIMIT and not state.stop.is_set():
                    self.wfile.write(body)
                    with state.lock:
                        state.flooded += len(body)
            except OSError:
                pass  # the client hung up: what the test wants to see
        else:
            self._simple(400, b"unknown mode")

    def _headers(self, status: int, length: int, *, ranges: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"v1"')
        self.end_headers()

    def _serve(self, body: bytes, *, ranges: bool) -> None:
        wanted = self.headers.get("Range") if ranges else None
        if (
            wanted
            and wanted.startswith("bytes=")
            and self.headers.get("If-Range", '"v1"') == '"v1"'
        ):
            start = int(wanted[len("bytes=") :].split("-", 1)[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"v1"')
            self.end_headers()
            self.wfile.write(body[start:])
            return
        self._headers(200, len(body), ranges=ranges)
        self.wfile.write(body)

    def _simple(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: FaultState

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # broken connections are the point here; keep test output clean


class FaultServer:
    """Context manager: a FaultServer on 127.0.0.1, on an ephemeral port, in a thread."""

    def __init__(self) -> None:
        self.state = FaultState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, mode: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/{name}"

    def add(self, name: str, body: bytes) -> None:
        self.state.payloads[name] = body

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stop.set()
        self._server.shutdown()
        self._server.server_close()
