"""A client of the controller's verdict API (used by the CLI and the monitor)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


class ApiError(RuntimeError):
    def __init__(self, status: int, doc: dict):
        message = doc.get("error", {}).get("message", str(doc)) if isinstance(doc, dict) else str(doc)
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.doc = doc


class VerdictClient:
    def __init__(self, url: str, token: str, timeout: float = 2.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, doc: dict | None = None) -> dict:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {"error": {"message": body.decode(errors="replace")}}
            raise ApiError(err.code, doc) from None

    def verdict(self, **fields) -> dict:
        return self._call("POST", "/v1/verdicts", {k: v for k, v in fields.items() if v is not None})

    def blocks(self) -> list:
        return self._call("GET", "/v1/blocks")["blocks"]

    def health(self) -> dict:
        return self._call("GET", "/v1/health")
