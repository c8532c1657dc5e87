"""JSON over HTTP for iadm's two small APIs (the controller's verdict API, the monitor's operator API).

Bearer-token authentication compared in constant time, routes with path
parameters, bounded JSON bodies, and one error shape everywhere:
{"error": {"status", "message", "field"?}}. A refused request changes nothing:
handlers validate everything before they touch state. `/metrics` (Prometheus
text) is the one route without a token, as Prometheus scrapes it; it only
counts things.
"""
from __future__ import annotations

import hmac
import json
import logging
import re
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("iadm.api")

MAX_BODY = 16 * 1024


class ApiError(ValueError):
    """A refused request: HTTP status, message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field

    def as_json(self) -> dict:
        err = {"status": self.status, "message": str(self)}
        if self.field:
            err["field"] = self.field
        return {"error": err}


def json_object(raw: bytes, error=ApiError) -> dict:
    """A request body that must be one JSON object; `error` (an ApiError class) names what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(400, "body must be a JSON object")
    return doc


class JsonHandler(BaseHTTPRequestHandler):
    """Subclasses set ROUTES: [(method, path pattern with {name} parts, handler method name)]."""
    server_version = "iadm"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 5  # a stalled client must not hold a single-threaded server
    ROUTES: list = []
    _compiled: list | None = None

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.client_address[0], fmt % args)

    @classmethod
    def routes(cls) -> list:
        if cls._compiled is None or cls._compiled[0] is not cls:
            compiled = []
            for method, pattern, name in cls.ROUTES:
                regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
                compiled.append((method, pattern, re.compile(f"^{regex}$"), name))
            cls._compiled = (cls, compiled)
        return cls._compiled[1]

    # --- replies ------------------------------------------------------------------------------
    def reply(self, status: int, doc, content_type: str = "application/json") -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, err: ApiError) -> None:
        log.info("%s %s refused: %d %s", self.command, self.path, err.status, err)
        counter = getattr(self.server, "count_error", None)
        if counter:
            counter(err.status)
        self.close_connection = True   # the body of a refused request may be unread
        self.reply(err.status, err.as_json())

    # --- request parts ------------------------------------------------------------------------
    def authorised(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.server.token.encode())

    def raw_body(self) -> bytes:
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "Content-Type must be application/json")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411, "Content-Length is required")
        if int(length) > MAX_BODY:
            raise ApiError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        return self.rfile.read(int(length))

    def json_body(self) -> dict:
        return json_object(self.raw_body())

    def query(self) -> dict:
        """Query parameters, each given at most once."""
        params = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        for name, values in params.items():
            if len(values) > 1:
                raise ApiError(400, f"query parameter {name} given {len(values)} times", name)
        return {k: v[0] for k, v in params.items()}

    # --- dispatch -----------------------------------------------------------------------------
    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            found = [(m, p, regex.match(path), name) for m, p, regex, name in self.routes()]
            found = [(m, p, match, name) for m, p, match, name in found if match]
            if path != "/metrics" and not self.authorised():
                raise ApiError(401, "missing or wrong bearer token")
            if not found:
                raise ApiError(404, f"no route {path}; routes: "
                               + ", ".join(sorted({p for _, p, _, _ in self.routes()})))
            handler = next(((match, name) for m, _, match, name in found if m == method), None)
            if handler is None:
                raise ApiError(405, f"{path} takes {', '.join(sorted({m for m, *_ in found}))}, not {method}")
            match, name = handler
            self.reply(*getattr(self, name)(**match.groupdict()))   # (status, doc[, content type])
        except ApiError as err:
            self._error(err)
        except Exception:  # the API must answer, never die with the request
            log.exception("internal error on %s %s", method, path)
            self._error(ApiError(500, "internal error; see the log"))

    def __getattr__(self, name: str):
        # Every method goes through the router, so one no route takes (HEAD, TRACE, made-up
        # ones) is a JSON 405 rather than the base class's HTML 501.
        if name.startswith("do_"):
            return lambda: self._route(name[3:])
        raise AttributeError(name)
