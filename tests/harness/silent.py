"""A PostgreSQL host hung in an outage: a port that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time


class SilentHost:
    """Hosts hung in an outage: a port that accepts connections and never answers. ``came``
    is set once ``expect`` connections are held; ``close`` drops them all (the clients then
    fail at once), refuses any more and sets ``closed``."""

    def __init__(self, expect: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.expect = expect
        self.held: list[socket.socket] = []
        self.came = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def dsn(self, dbname: str) -> str:
        where = f"host=127.0.0.1 port={self.port} dbname={dbname}"
        return f"{where} user=backup sslmode=disable gssencmode=disable"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.held.append(conn)
            if len(self.held) >= self.expect:
                self.came.set()

    def dropped(self, timeout: float) -> bool:
        """Whether every held connection was closed by its client within ``timeout``
        seconds (the process that asked has gone, and nothing it left holds them)."""
        deadline = time.monotonic() + timeout
        for conn in self.held:
            try:
                while True:  # what the client sent (its start-up packet), then its end
                    conn.settimeout(max(0.0, deadline - time.monotonic()))
                    if conn.recv(65536) == b"":
                        break
            except TimeoutError:
                return False
            except OSError:  # reset by the client: gone
                continue
        return True

    def close(self) -> None:
        self.closed.set()
        # shut down before closing: a listener closed while its accept() waits in another
        # thread goes on taking connections into its backlog, where they hang unanswered
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:  # already shut
            pass
        self.listener.close()
        for conn in self.held:
            conn.close()


# No connect gives up while a test runs (lifeboat's own timeout is 10 s): a cluster the
# silent host hears from was asked while every one before it was still waiting
SLOW_CONNECT = {"PGCONNECT_TIMEOUT": "600"}
