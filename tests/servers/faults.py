"""Fault servers on 127.0.0.1: one that accepts and never answers, one that answers a fixed HTTP status."""

from __future__ import annotations

import socket
import threading

from tests.servers.wire import SelfSignedCert, WireServer


class HangServer:
    """Accepts TCP connections and never sends a byte (nor reads a request to completion)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://{self.host}"

    def start(self) -> "HangServer":
        self._thread.start()
        return self

    def _loop(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class StatusServer(WireServer):
    """Answers every request with one HTTP status and a JSON error body; counts requests."""

    def __init__(self, status: int = 500, *, tls: SelfSignedCert | None = None) -> None:
        super().__init__(tls=tls)
        self.status = status
        self.requests = 0

    def handle(self, method, path, headers, body):
        with self.lock:
            self.requests += 1
        return self.status, {}, {
            "error": {"code": self.status, "message": "injected failure", "status": "INTERNAL"},
            "errors": ["injected failure"],
        }
