"""Console sessions: the operator API's token, given once in a login form, becomes a session cookie.

- The cookie (HttpOnly, SameSite=Strict, Path=/console) holds a random session id, never the
  token; scripts cannot read it and other sites' pages cannot send it.
- Each session has its own CSRF token: every state-changing request (POST) carries it, in the
  form's hidden `csrf` field or the X-CSRF-Token header, and it is compared in constant time.
- Sessions live in memory for `lifetime` seconds (a monitor restart logs everyone out) and are
  capped, so a login loop cannot fill the memory.
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "iadm_session"
MAX_SESSIONS = 256


@dataclass
class Session:
    sid: str
    csrf: str
    who: str
    expires: float


class Sessions:
    def __init__(self, token: str, lifetime: float = 8 * 3600, clock=time.time):
        if not token:
            raise ValueError("the console needs the operator API's token")
        self.token = token
        self.lifetime = lifetime
        self.clock = clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, token: str, who: str) -> Session | None:
        """A new session if `token` is the API's token; None otherwise."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), who or "operator",
                          now + self.lifetime)
        with self._lock:
            for sid in [s for s, v in self._by_id.items() if v.expires <= now]:
                del self._by_id[sid]
            if len(self._by_id) >= MAX_SESSIONS:   # the oldest goes
                del self._by_id[min(self._by_id, key=lambda s: self._by_id[s].expires)]
            self._by_id[session.sid] = session
        return session

    def find(self, cookie_header: str | None) -> Session | None:
        sid = cookie_value(cookie_header, COOKIE)
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is None or session.expires <= self.clock():
                self._by_id.pop(sid, None)
                return None
            return session

    def logout(self, session: Session) -> None:
        with self._lock:
            self._by_id.pop(session.sid, None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())

    def cookie(self, session: Session) -> str:
        return (f"{COOKIE}={session.sid}; Path=/console; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(self.lifetime)}")

    @staticmethod
    def expired_cookie() -> str:
        return f"{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"


def cookie_value(header: str | None, name: str) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
