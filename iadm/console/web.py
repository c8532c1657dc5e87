"""The console over HTTP, inside the operator API's server (same port, same token).

The operator API's handler hands every /console path here (`serve`). Pages are HTML rendered
by Jinja2 (autoescaped); assets come from the package's static/ directory. Security:
- no session cookie: a page redirects to the login form, anything else is 401;
- a POST without the session's CSRF token is 403;
- every answer carries a Content-Security-Policy allowing scripts and styles from this origin
  only (no inline script, no eval), no framing, forms posting back here only.
"""
from __future__ import annotations

import logging
import mimetypes
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jinja2

from iadm.console.app import Console, ConsoleError
from iadm.console.auth import Sessions
from iadm.httpjson import plain_digits

log = logging.getLogger("iadm.console")
HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
MAX_FORM = 16 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
NAV = [("inbox", "Inbox"), ("mitigations", "Mitigations"), ("devices", "Devices"), ("timeline", "Timeline"),
       ("detector", "Detector")]


def _when(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts))) if ts not in (None, "") else ""


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["left"] = lambda expires: max(0, int(float(expires) - time.time() + 0.999))
    env.globals["nav"] = NAV
    env.globals["page_query"] = lambda params, offset: urlencode({**params, "offset": max(0, offset)})
    return env


class ConsoleSite:
    """The console's routes: the pages, the actions, the login, the assets."""

    def __init__(self, console: Console, token: str, lifetime: float = 8 * 3600):
        self.console = console
        self.sessions = Sessions(token, lifetime)
        self.env = _environment()
        self.assets = {p.name: p.read_bytes() for p in Path(STATIC).iterdir() if p.is_file()}

    # --- the entry point ----------------------------------------------------------------------------
    def serve(self, handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/console"
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            self._route(handler, method, path, params)
        except ConsoleError as err:
            log.info("%s %s refused: %d %s", method, path, err.status, err)
            handler.close_connection = True   # a refused request's body may be unread
            self._send(handler, err.status, self._render("error.html", {"error": err, "session": None}))
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise
        except Exception:   # a page must answer, never take the API down with it
            log.exception("console: internal error on %s %s", method, path)
            self._send(handler, 500, self._render("error.html", {"error": ConsoleError(500, "internal error; see the "
                                                                                         "monitor's log"),
                                                                 "session": None}))

    def _route(self, handler, method: str, path: str, params: dict) -> None:
        if path.startswith("/console/static/"):
            return self._asset(handler, method, path[len("/console/static/"):])
        if path == "/console/login":
            return self._login(handler, method)
        session = self.sessions.find(handler.headers.get("Cookie"))
        if method == "GET":
            if session is None:
                if path.startswith("/console/api/"):
                    raise ConsoleError(401, "no session: log in at /console/login")
                return self._redirect(handler, "/console/login?" + urlencode({"next": path}))
            return self._page(handler, path, params, session)
        if method != "POST":
            raise ConsoleError(405, f"{path} takes GET or POST, not {method}")
        if session is None:
            raise ConsoleError(401, "no session: log in at /console/login")
        form = self._form(handler)
        if not Sessions.csrf_ok(session, form.get("csrf") or handler.headers.get("X-CSRF-Token")):
            raise ConsoleError(403, "missing or wrong CSRF token: reload the page and try again")
        return self._act(handler, path, form, session)

    # --- GET ---------------------------------------------------------------------------------------
    def _page(self, handler, path: str, params: dict, session) -> None:
        c = self.console
        parts = path.split("/")[2:]   # after /console
        if path == "/console":
            return self._redirect(handler, "/console/inbox")
        if path == "/console/api/version":
            return self._send(handler, 200, b'{"version": %d}' % c.store.version(), "application/json")
        if parts[0] == "groups" and len(parts) == 2:
            status, template, context = c.group_page(parts[1])
        elif len(parts) == 1 and parts[0] in ("inbox", "mitigations", "devices", "timeline", "detector"):
            status, template, context = {"inbox": c.inbox, "mitigations": c.mitigations, "devices": c.devices,
                                         "timeline": c.timeline, "detector": c.detector_page}[parts[0]](params)
        else:
            raise ConsoleError(404, f"no page {path}")
        context |= {"session": session, "here": parts[0], "counts": c.store.counts(c.gateway),
                    "version": c.store.version(), "path": handler.path}
        self._send(handler, status, self._render(template, context))

    def _asset(self, handler, method: str, name: str) -> None:
        if method != "GET" or name not in self.assets:
            raise ConsoleError(404, f"no asset {name!r}")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self._send(handler, 200, self.assets[name], ctype, cache=True)

    # --- POST --------------------------------------------------------------------------------------
    def _act(self, handler, path: str, form: dict, session) -> None:
        c = self.console
        parts = path.split("/")[2:]
        back = form.get("next") or ""
        if not back.startswith("/console/") or "//" in back:   # never a redirect off the console
            back = "/console/inbox"
        if path == "/console/logout":
            self.sessions.logout(session)
            return self._redirect(handler, "/console/login", cookie=Sessions.expired_cookie())
        if parts[0] == "groups" and len(parts) == 3:
            if parts[2] == "not-attack":
                c.not_attack(parts[1], session.who)
            else:
                c.set_state(parts[1], parts[2], session.who)
            return self._redirect(handler, back)
        if parts[0] == "mitigations" and len(parts) == 3 and parts[2] == "unblock":
            c.unblock(parts[1], session.who)
            return self._redirect(handler, back if back != "/console/inbox" else "/console/mitigations")
        if path == "/console/detector":
            try:
                c.configure(form)
            except ConsoleError as err:   # the form again, with what is wrong; the settings stay as they were
                status, template, context = c.detector_page(form, err)
                context |= {"session": session, "here": "detector", "counts": c.store.counts(c.gateway),
                            "version": c.store.version(), "path": path}
                return self._send(handler, status, self._render(template, context))
            return self._redirect(handler, "/console/detector")
        raise ConsoleError(404, f"no action {path}")

    def _login(self, handler, method: str) -> None:
        if method == "GET":
            next_path = parse_qs(urlsplit(handler.path).query).get("next", ["/console/inbox"])[-1]
            return self._send(handler, 200, self._render("login.html", {"error": None, "next": next_path,
                                                                        "session": None}))
        if method != "POST":
            raise ConsoleError(405, f"/console/login takes GET or POST, not {method}")
        form = self._form(handler)
        session = self.sessions.login(form.get("token", ""), (form.get("name") or "operator").strip()[:64])
        back = form.get("next") or "/console/inbox"
        if not back.startswith("/console/") or "//" in back or back.startswith("/console/login"):
            back = "/console/inbox"
        if session is None:
            log.warning("console: refused login from %s (wrong token)", handler.client_address[0])
            return self._send(handler, 401, self._render("login.html", {"error": "wrong token", "next": back,
                                                                        "session": None}))
        log.info("console: %s logged in from %s", session.who, handler.client_address[0])
        return self._redirect(handler, back, cookie=self.sessions.cookie(session))

    # --- the wire ----------------------------------------------------------------------------------
    def _form(self, handler) -> dict:
        length = handler.headers.get("Content-Length", "0")
        if not plain_digits(length):
            raise ConsoleError(411, "Content-Length is required")
        if int(length) > MAX_FORM:
            raise ConsoleError(413, f"form of {length} bytes is over the {MAX_FORM}-byte limit")
        ctype = handler.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if int(length) and ctype != "application/x-www-form-urlencoded":
            raise ConsoleError(415, "Content-Type must be application/x-www-form-urlencoded")
        try:
            body = handler.rfile.read(int(length)) if int(length) else b""
        except TimeoutError:
            raise ConsoleError(408, "form not received in time") from None
        try:
            return {k: v[-1] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise ConsoleError(400, "form is not UTF-8") from None

    def _render(self, template: str, context: dict) -> bytes:
        return self.env.get_template(template).render(**context).encode()

    def _redirect(self, handler, where: str, cookie: str | None = None) -> None:
        self._send(handler, 303, b"", "text/plain", headers={"Location": where, **(
            {"Set-Cookie": cookie} if cookie else {})})

    @staticmethod
    def _send(handler, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", cache: bool = False,
              headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            if not (cache and name == "Cache-Control"):
                handler.send_header(name, value)
        if cache:
            handler.send_header("Cache-Control", "max-age=3600")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler._headers_buffer.append(b"\r\n" + body)   # head and body in one write (see httpjson.reply)
        handler.flush_headers()
