"""Endpoints that stop answering, for stall tests.

* ``BlackHole``: a TCP server that accepts connections and never reads or answers.
* ``StallProxy``: an HTTP proxy in front of the moto server that forwards everything until
  told to stall: from a matching request (or the one after ``hang_after`` matching ones)
  on it swallows every request (no answer ever), or it freezes object GETs after a few
  bytes of the body, or it answers matching requests only after a delay (slow, not
  stalled: for deadlines). With ``drop_headers`` it forwards requests without those
  headers: an endpoint that ignores ``If-None-Match``, as Ceph RGW 16.2 does on versioned
  buckets (moto checks no signatures, so this works). With ``refuse_headers`` it answers
  a request carrying one of them 400 InvalidArgument, as Backblaze B2 answers
  ``x-amz-checksum-*`` headers.

Stalled handlers wait on an event that ``close()`` sets, so no thread outlives the test.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any


def relay(
    handler: BaseHTTPRequestHandler, upstream: tuple[str, int], body: bytes, headers: dict[str, str]
) -> tuple[http.client.HTTPResponse, bytes]:
    """Send the handler's request upstream and the answer's status and headers back; the
    caller writes the body (whole, or cut short)."""
    conn = http.client.HTTPConnection(*upstream, timeout=30)
    conn.request(handler.command, handler.path, body, headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    return resp, data


class BlackHole:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self._sock.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # held open, never read: the client's bytes go nowhere

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: StallProxy

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        proxy = self.proxy
        request = f"{self.command} {self.path}"
        with proxy.lock:
            proxy.requests.append(request)
            if proxy.hang_from is not None and proxy.hang_from in request:
                if proxy.hang_after:
                    proxy.hang_after -= 1
                else:
                    proxy.hanging = True
            hang = proxy.hanging
        if hang:
            proxy.release.wait()  # never answers (nor reads the body)
            self.close_connection = True
            return
        if proxy.delay_from is not None and proxy.delay_from in request:
            proxy.release.wait(proxy.delay)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        refused = sorted(k for k in self.headers if k.lower() in proxy.refuse_headers)
        if refused:  # as Backblaze B2 answers x-amz-checksum-* headers
            with proxy.lock:
                proxy.refused += 1
            message = f"Unsupported header '{refused[0]}'"
            error = f"<Error><Code>InvalidArgument</Code><Message>{message}</Message></Error>"
            self.send_response(400)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error.encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.drop_headers}
        _, data = relay(self, proxy.upstream, body, headers)
        cut = proxy.freeze_body_after
        if cut is not None and self._is_object_get() and len(data) > cut:
            with proxy.lock:
                proxy.frozen += 1
            self.wfile.write(data[:cut])
            self.wfile.flush()
            proxy.release.wait()  # headers and a few bytes sent, then nothing
            self.close_connection = True
            return
        self.wfile.write(data)

    def _is_object_get(self) -> bool:
        """A GET of a key (not a bucket listing or a bucket setting)."""
        path, _, query = self.path.partition("?")
        return self.command == "GET" and path.strip("/").count("/") >= 1 and "list-type" not in query

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


class StallProxy:
    def __init__(self, upstream_endpoint: str) -> None:
        host, port = upstream_endpoint.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.requests: list[str] = []
        self.hang_from: str | None = None  # e.g. "PUT /bucket/repo/data/"
        self.hang_after = 0  # matching requests answered before it hangs
        self.hanging = False
        self.freeze_body_after: int | None = None
        self.frozen = 0
        self.delay_from: str | None = None
        self.delay = 0.0
        self.drop_headers: set[str] = set()  # lower-case names
        self.refuse_headers: set[str] = set()  # lower-case names: a request with one gets a 400
        self.refused = 0
        handler: Any = type("Handler", (_Handler,), {"proxy": self})
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def forward_normally(self) -> None:
        with self.lock:
            self.hang_from, self.hanging, self.freeze_body_after = None, False, None
            self.delay_from = None

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
