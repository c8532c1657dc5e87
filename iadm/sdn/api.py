"""The controller's verdict API: HTTP + JSON, bearer-token authenticated.

    GET  /v1/health     switches connected, blocks active
    GET  /v1/blocks     the active blocks
    POST /v1/verdicts   block / alert / unblock (schema in iadm.sdn.verdicts)

Every error is a JSON document {"error": {"status", "message", "field"?}}
and a refused request changes nothing.
"""
from __future__ import annotations

import hmac
import json
import logging
from http.server import BaseHTTPRequestHandler, HTTPServer

from iadm.sdn.verdicts import VerdictError, parse_verdict

log = logging.getLogger("iadm.api")

MAX_BODY = 16 * 1024
API_VERSION = 1


class _Handler(BaseHTTPRequestHandler):
    server_version = "iadm-controller"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 5  # a stalled client must not hold the single-threaded server

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.client_address[0], fmt % args)

    def _reply(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, err: VerdictError) -> None:
        if err.status >= 400:
            log.info("%s %s refused: %d %s", self.command, self.path, err.status, err)
        # The body of a refused request may be unread; do not reuse the connection.
        self.close_connection = True
        self._reply(err.status, err.as_json())

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.server.token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    def _route(self, method: str):
        routes = {"/v1/health": {"GET": self._health}, "/v1/blocks": {"GET": self._blocks},
                  "/v1/verdicts": {"POST": self._verdict}}
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if not self._authorised():
                raise VerdictError(401, "missing or wrong bearer token")
            if path not in routes:
                raise VerdictError(404, f"no route {path}; routes: {', '.join(sorted(routes))}")
            handler = routes[path].get(method)
            if handler is None:
                raise VerdictError(405, f"{path} takes {', '.join(routes[path])}, not {method}")
            status, doc = handler()
            self._reply(status, doc)
        except VerdictError as err:
            self._error(err)
        except Exception:  # the API must answer, never die with the request
            log.exception("internal error on %s %s", method, path)
            self._error(VerdictError(500, "internal error; see the controller log"))

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    def _health(self):
        core = self.server.core
        return 200, {"api_version": API_VERSION, "switches": [f"{d:016x}" for d in sorted(core.switches)],
                     "blocks": len(core.blocks())}

    def _blocks(self):
        return 200, {"blocks": self.server.core.blocks()}

    def _verdict(self):
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise VerdictError(415, "Content-Type must be application/json")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise VerdictError(411, "Content-Length is required")
        if int(length) > MAX_BODY:
            raise VerdictError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        verdict = parse_verdict(self.rfile.read(int(length)))
        return self.server.core.apply_verdict(verdict)


class VerdictServer(HTTPServer):
    """One request at a time: verdicts are small and the core is locked anyway."""
    allow_reuse_address = True

    def __init__(self, address: tuple, core, token: str):
        if not token:
            raise ValueError("the verdict API needs a token (config api.token or IADM_API_TOKEN)")
        self.core = core
        self.token = token
        super().__init__(address, _Handler)
