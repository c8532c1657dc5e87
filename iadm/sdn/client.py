"""A client of the controller's verdict API (used by the CLI and the monitor).

One kept-alive connection, reused for every call: a verdict costs one request, not a TCP
handshake as well. When the server has closed an idle connection (it does after 15 s), the call
is made once more on a fresh one; a verdict repeated that way replaces its own block.
"""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse


class ApiError(RuntimeError):
    def __init__(self, status: int, doc: dict):
        message = doc.get("error", {}).get("message", str(doc)) if isinstance(doc, dict) else str(doc)
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.doc = doc


class VerdictClient:
    def __init__(self, url: str, token: str, timeout: float = 2.0):
        self.url = url.rstrip("/")
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._base = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()   # the monitor's responder and its operator API share one client

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _call(self, method: str, path: str, doc: dict | None = None) -> dict:
        body = None if doc is None else json.dumps(doc).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                conn = self._connection()
                try:
                    conn.request(method, self._base + path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (ConnectionError, http.client.HTTPException) as exc:
                    # a kept-alive connection the server closed meanwhile: once more, on a new one
                    conn.close()
                    self._conn = None
                    if not reused or attempt == 2:
                        raise ConnectionError(f"{self.url}: {exc or type(exc).__name__}") from None
                except OSError:
                    conn.close()
                    self._conn = None
                    raise
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                self._conn = None
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"error": {"message": data.decode(errors="replace")}}
        if resp.status >= 400:
            raise ApiError(resp.status, parsed)
        return parsed

    def verdict(self, **fields) -> dict:
        return self._call("POST", "/v1/verdicts", {k: v for k, v in fields.items() if v is not None})

    def blocks(self) -> list:
        return self._call("GET", "/v1/blocks")["blocks"]

    def health(self) -> dict:
        return self._call("GET", "/v1/health")
