"""JSON over HTTP for iadm's two small APIs (the controller's verdict API, the monitor's operator API).

Bearer-token authentication compared in constant time, routes with path
parameters, bounded JSON bodies, and one error shape everywhere:
{"error": {"status", "message", "field"?}}. A refused request changes nothing:
handlers validate everything before they touch state. `/metrics` (Prometheus
text) is the one route without a token, as Prometheus scrapes it; it only
counts things.

`ApiServer` serves both, so that no client can hold the others up:
- every connection has its own worker (a thread; a green thread under Ryu,
  whose manager patches threading), at most `max_connections` at once;
- a request's head and body must arrive within `read_deadline` seconds of
  its first byte (a whole-request deadline, not a per-read timeout, which a
  client sending one byte a second would defeat); a kept-alive connection
  may stay silent for `idle_timeout` between requests;
- at the cap, a new connection takes the place of the one that has waited
  longest on its client (stalled, slow or idle: none is being answered), so
  a crowd of stalled connections cannot lock a verdict out;
- HTTP/1.1 keep-alive: a client may send all its requests on one connection.
"""
from __future__ import annotations

import hmac
import io
import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
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



def plain_digits(text) -> bool:
    """Text that int() reads as a non-negative integer: ASCII digits only (str.isdigit() also
    says yes to superscripts and other scripts' digits, on which int() raises)."""
    return isinstance(text, str) and text.isascii() and text.isdigit()

def json_object(raw: bytes, error=ApiError) -> dict:
    """A request body that must be one JSON object; `error` (an ApiError class) names what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(400, "body must be a JSON object")
    return doc


class _Connection:
    """One client connection of an ApiServer: its socket and what it is waiting for."""
    __slots__ = ("sock", "deadline", "since", "waiting", "fresh", "busy")

    def __init__(self, sock, deadline: float):
        self.sock = sock
        self.since = time.monotonic()
        self.deadline = self.since + deadline   # the current request (or silence) must end by then
        self.waiting = False                    # blocked on the client (not being answered)
        self.fresh = True                       # nothing of the next request has arrived yet
        self.busy = False                       # a handler is working out an answer

    @property
    def evictable(self) -> bool:
        """Waiting on its client (for a request, its head or its body), not being answered."""
        return self.waiting or not self.busy

    def close(self) -> None:
        """Wake the worker blocked on this connection (it reads EOF and ends)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, each read bounded by what is left of the connection's deadline."""

    def __init__(self, conn: _Connection, server: "ApiServer"):
        self.conn, self.server = conn, server

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        conn = self.conn
        left = conn.deadline - time.monotonic()
        if left <= 0:
            self.server.counts["timed_out"] += 1
            raise TimeoutError("request not complete within the read deadline")
        conn.sock.settimeout(left)
        conn.waiting = True
        try:
            n = conn.sock.recv_into(buf)
        except TimeoutError:
            self.server.counts["timed_out"] += 1
            raise
        finally:
            conn.waiting = False
            conn.sock.settimeout(self.server.write_timeout)
        if n and conn.fresh:   # the first byte of a request: from now on, the read deadline
            conn.fresh = False
            conn.since = time.monotonic()
            conn.deadline = min(conn.deadline, conn.since + self.server.read_deadline)
        return n


class _SocketWriter(io.RawIOBase):
    def __init__(self, sock):
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sock.sendall(data)
        return len(data)


def _spawn_thread(target, *args) -> None:
    threading.Thread(target=target, args=args, daemon=True, name="api-connection").start()


class ApiServer(socketserver.TCPServer):
    """A TCP server with one worker per connection, a connection cap and read deadlines (see the module)."""
    allow_reuse_address = True
    request_queue_size = 128
    max_connections = 64
    read_deadline = 2.0    # seconds from a request's first byte to its last
    idle_timeout = 15.0    # seconds a kept-alive connection may wait for its next request
    write_timeout = 10.0   # seconds an answer may take to leave (a client that never reads)

    def __init__(self, address: tuple, handler, *, spawn=None, max_connections: int | None = None,
                 read_deadline: float | None = None, idle_timeout: float | None = None):
        if max_connections is not None:
            if max_connections < 1:
                raise ValueError(f"max_connections must be at least 1, not {max_connections}")
            self.max_connections = max_connections
        for name, value in (("read_deadline", read_deadline), ("idle_timeout", idle_timeout)):
            if value is not None:
                if not value > 0:
                    raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
                setattr(self, name, value)
        self.spawn = spawn or _spawn_thread
        self.connections: dict = {}     # socket -> _Connection
        self.counts = {"connections": 0, "evicted": 0, "refused": 0, "timed_out": 0}
        self._lock = threading.Lock()   # made here, after Ryu's manager has patched threading
        super().__init__(address, handler)

    def server_bind(self) -> None:
        super().server_bind()
        self.server_name, self.server_port = self.server_address[:2]

    def connection(self, sock) -> _Connection | None:
        return self.connections.get(sock)

    def process_request(self, request, client_address) -> None:
        if request.family in (socket.AF_INET, socket.AF_INET6):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # answers are one small write
        conn = _Connection(request, self.read_deadline)
        with self._lock:
            if len(self.connections) >= self.max_connections:
                candidates = [c for c in self.connections.values() if c.evictable]
                if not candidates:   # every worker is answering someone: come back later
                    self.counts["refused"] += 1
                    self._refuse(request)
                    return
                victim = min(candidates, key=lambda c: c.since)
                del self.connections[victim.sock]
                self.counts["evicted"] += 1
                victim.close()
            self.connections[request] = conn
            self.counts["connections"] += 1
        try:
            self.spawn(self._work, request, client_address)
        except Exception:
            with self._lock:
                self.connections.pop(request, None)
            raise

    def _work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._lock:
                self.connections.pop(request, None)
            self.shutdown_request(request)

    def _refuse(self, request) -> None:
        log.warning("API connection refused: %d connections open, all being answered", self.max_connections)
        body = json.dumps(ApiError(503, "too many connections; try again").as_json()).encode()
        try:
            request.settimeout(0.5)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("%s: connection ended: %s", client_address[0], exc)
        else:
            log.exception("API connection from %s failed", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            conns = list(self.connections.values())
        for conn in conns:
            conn.close()


class JsonHandler(BaseHTTPRequestHandler):
    """Subclasses set ROUTES: [(method, path pattern with {name} parts, handler method name)]."""
    server_version = "iadm"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 5  # reads under a server that is not an ApiServer (which keeps deadlines of its own)
    ROUTES: list = []
    _compiled: list | None = None

    def setup(self):
        self.conn = getattr(self.server, "connection", lambda sock: None)(self.request)
        if self.conn is None:
            return super().setup()
        self.connection = self.request
        self.connection.settimeout(self.server.write_timeout)
        self.rfile = io.BufferedReader(_DeadlineReader(self.conn, self.server), 64 * 1024)
        self.wfile = _SocketWriter(self.connection)

    def handle_one_request(self):
        conn = self.conn
        if conn is not None and getattr(self, "_answered", False):
            # kept alive after an answer: the next request may take idle_timeout to begin
            conn.fresh = True
            conn.since = time.monotonic()
            conn.deadline = conn.since + self.server.idle_timeout
        self._answered = True
        super().handle_one_request()

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
        # head and body in one write: two small writes on a kept-alive connection wait out the
        # client's delayed ACK (Nagle), 40 ms a request
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

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
        if length is None or not plain_digits(length):
            raise ApiError(411, "Content-Length is required")
        if int(length) > MAX_BODY:
            raise ApiError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            deadline = getattr(self.server, "read_deadline", self.timeout)
            raise ApiError(408, f"body of {length} bytes not received within {deadline:g} s") from None
        if len(body) < int(length):
            raise ApiError(400, f"body ended after {len(body)} of its {length} bytes")
        return body

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
        if self.conn is not None:
            self.conn.busy = True
        try:
            self._dispatch(method)
        finally:
            if self.conn is not None:
                self.conn.busy = False

    def _dispatch(self, method: str) -> None:
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
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise   # the client went away mid-answer: nobody to tell
        except Exception:  # the API must answer, never die with the request
            log.exception("internal error on %s %s", method, path)
            self._error(ApiError(500, "internal error; see the log"))

    def __getattr__(self, name: str):
        # Every method goes through the router, so one no route takes (HEAD, TRACE, made-up
        # ones) is a JSON 405 rather than the base class's HTML 501.
        if name.startswith("do_"):
            return lambda: self._route(name[3:])
        raise AttributeError(name)
