"""Failed logins that a cleartext server states, and the passwords that were tried.

Counting sessions cannot tell a guesser from a device that opens one short session per job (a
camera uploading a snapshot by FTP opens a control connection per picture); the server's reply
can, and the client's request says whether the password changes from try to try:

  service  server port          refusal                                     credential read
  ftp      21                   reply 530 (RFC 959)                         "PASS <password>"
  mqtt     1883                 CONNACK return code 4 / 5 (3.1.1),           CONNECT's user name and
                                reason 0x86 / 0x87 (5.0)                     password fields
  http     80, 8080, 8000, ...  status 401                                  the Authorization header
                                                                            (Basic; Digest's is not
                                                                            a password: unread)

Per server and client, within `window` seconds (120): `failures` refusals (5: fail2ban's
maxretry) and fewer successes than half of them (an HTTP 401 is also the challenge that a
browser or a Digest client answers next, with a 2xx) are a finding:

  2100301 / 2100303 / 2100304 (ftp / mqtt / http): the client tried `distinct` (3) or more
          passwords, or none could be read (FTP and MQTT only: their refusal is a failed login,
          not a challenge). Password guessing; block the client.
  2100302 the client was refused again and again with the same one or two passwords: a device
          configured with a wrong password, not a guesser. An alert, never a block.

A retransmitted reply (same client port and sequence number) counts once. Bytes the capture cut
are not read. Selection is vectorised: only TCP segments from or to those ports are looked at, a
server's reply by its first bytes; HTTP requests are read (for Authorization) only from clients
that the server refused lately, so an HTTP flood costs a hash per packet.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

import numpy as np

from iadm.inspect._util import Once, frame_ends, frame_mac, ip_text, message_keys
from iadm.inspect.finding import MITRE_BRUTE_FORCE, SIDS, Finding

FTP_PORT, MQTT_PORT = 21, 1883
HTTP_PORTS = (80, 81, 8000, 8008, 8080, 8081, 8888)
SERVICE_OF = {FTP_PORT: "ftp", MQTT_PORT: "mqtt"} | {p: "http" for p in HTTP_PORTS}
SID_OF = {"ftp": 2100301, "mqtt": 2100303, "http": 2100304}
SAME_PASSWORD = 2100302
COUNTERS = ("refusals", "successes", "credentials", "repeats")
_PORTS = np.array(sorted(SERVICE_OF), dtype=np.int64)
_HTTP = np.array(HTTP_PORTS, dtype=np.int64)
READ = 16            # bytes of a payload's start read for every candidate segment
HEADERS = 4096       # bytes of an HTTP request searched for its Authorization header


class LoginFailureWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch."""

    MAX_PAIRS = 16384   # (server, client, service) followed at once; the least recent go first
    MAX_CREDENTIALS = 64

    def __init__(self, failures: int = 5, window: float = 120.0, distinct: int = 3, repeat: float = 60.0):
        self.failures, self.window, self.distinct = failures, window, distinct
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._once = Once(repeat)
        # (server, client, service) -> {"refused": deque of (time, client port, seq),
        #   "ok": deque of times, "credentials": {digest: time}}
        self._pairs: OrderedDict = OrderedDict()
        self._refused: OrderedDict = OrderedDict()          # web (server, client, port) key -> latest refusal
        self._refused_keys = np.zeros(0, dtype=np.uint64)   # the same keys, for np.isin

    def __call__(self, batch, decoded) -> list[Finding]:
        tcp = (decoded.proto == 6) & (decoded.l4 >= 0)
        replies = self._classify_replies(batch, decoded, np.flatnonzero(tcp & np.isin(decoded.sport, _PORTS)))
        web_refused = replies["keys"][replies["refused"] & replies["http"]]
        requests = self._select_requests(batch, decoded, np.flatnonzero(tcp & np.isin(decoded.dport, _PORTS)),
                                         np.union1d(self._refused_keys, web_refused))
        # one pass in capture order: a password counts for the refusals after it, not before
        rows = np.concatenate((requests["rows"], replies["rows"]))
        if not len(rows):
            return []
        out: list[Finding] = []
        n = len(requests["rows"])
        for k in np.argsort(decoded.ts[rows], kind="stable").tolist():
            if k < n:
                self._request(batch, decoded, requests, k)
            else:
                self._reply(batch, decoded, replies, k - n, out)
        return out

    # -- the client's side: the passwords tried -------------------------------------------------
    def _select_requests(self, batch, d, rows, web_refused) -> dict:
        rows, start, end = _payloads(batch, d, rows)
        head = _head(batch.buf, start, end)
        port = d.dport[rows].astype(np.int64)
        ftp = (port == FTP_PORT) & _starts(head, b"PASS ", fold=True)
        mqtt = (port == MQTT_PORT) & (head[:, 0] == 0x10)
        http = np.isin(port, _HTTP)
        if http.any() and len(web_refused):   # only clients refused lately, or in this batch
            keys = message_keys(d.dst_hi[rows], d.dst_lo[rows], d.src_hi[rows], d.src_lo[rows], port, port * 0)
            http &= np.isin(keys, web_refused)
        else:
            http[:] = False
        pick = ftp | mqtt | http
        return {"rows": rows[pick], "start": start[pick], "end": end[pick], "port": port[pick]}

    def _request(self, batch, d, requests, k: int) -> None:
        i, start = int(requests["rows"][k]), int(requests["start"][k])
        payload = bytes(batch.buf[start:min(int(requests["end"][k]), start + HEADERS)])
        service = SERVICE_OF[int(requests["port"][k])]
        credential = (_ftp_password(payload) if service == "ftp" else
                      _mqtt_credentials(payload) if service == "mqtt" else _http_authorization(payload))
        if credential is None:
            return
        self.counters["credentials"] += 1
        state = self._state(ip_text(d.dst_hi[i], d.dst_lo[i]), ip_text(d.src_hi[i], d.src_lo[i]), service)
        tried = state["credentials"]
        tried.pop(credential, None)
        tried[credential] = float(d.ts[i])
        while len(tried) > self.MAX_CREDENTIALS:
            del tried[next(iter(tried))]

    # -- the server's side: refusals and successes ----------------------------------------------
    def _classify_replies(self, batch, d, rows) -> dict:
        rows, start, end = _payloads(batch, d, rows)
        head = _head(batch.buf, start, end)
        port = d.sport[rows].astype(np.int64)
        length = end - start
        ftp, mqtt, http = port == FTP_PORT, port == MQTT_PORT, np.isin(port, _HTTP)
        status = _starts(head, b"HTTP/1.") & (head[:, 8] == ord(" "))
        connack = mqtt & (head[:, 0] == 0x20) & (length >= 4)
        refused = ((ftp & _starts(head, b"530") & (length >= 3))
                   | (connack & np.isin(head[:, 3], (4, 5, 0x86, 0x87)))
                   | (http & status & _at(head, 9, b"401")))
        ok = ((ftp & _starts(head, b"230")) | (connack & (head[:, 3] == 0))
              | (http & status & np.isin(head[:, 9], (ord("2"), ord("3")))))
        keys = message_keys(d.src_hi[rows], d.src_lo[rows], d.dst_hi[rows], d.dst_lo[rows], port, port * 0)
        # a web server's successes matter to a client it refused (lately, or in this batch) only
        ok &= ~http | np.isin(keys, np.union1d(self._refused_keys, keys[refused & http]))
        pick = refused | ok
        return {"rows": rows[pick], "refused": refused[pick], "http": http[pick], "keys": keys[pick],
                "port": port[pick]}

    def _reply(self, batch, d, replies, k: int, out) -> None:
        i = int(replies["rows"][k])
        service = SERVICE_OF[int(replies["port"][k])]
        state = self._state(ip_text(d.src_hi[i], d.src_lo[i]), ip_text(d.dst_hi[i], d.dst_lo[i]), service)
        t = float(d.ts[i])
        if not replies["refused"][k]:
            self.counters["successes"] += 1
            state["ok"].append(t)
            return
        at = int(d.l4[i])
        seq = int.from_bytes(bytes(batch.buf[at + 4:at + 8]), "big")
        cport = int(d.dport[i])
        if any(p == cport and s == seq for _, p, s in state["refused"]):
            self.counters["repeats"] += 1
            return
        self.counters["refusals"] += 1
        state["refused"].append((t, cport, seq))
        if service == "http":
            self._refused_lately(int(replies["keys"][k]), t)
        self._judge(batch, d, i, t, service, state, out)

    def _judge(self, batch, d, i, t, service, state, out) -> None:
        while state["refused"] and state["refused"][0][0] < t - self.window:
            state["refused"].popleft()
        while state["ok"] and state["ok"][0] < t - self.window:
            state["ok"].popleft()
        refused, successes = len(state["refused"]), len(state["ok"])
        if refused < self.failures or 2 * successes >= refused:
            return
        tried = [c for c, seen in state["credentials"].items() if t - self.window <= seen <= t]
        guessing = len(tried) >= self.distinct or (not tried and service != "http")
        if not guessing and not tried:
            return   # HTTP 401s with no password read (Digest, or the requests unseen): a challenge, maybe
        sid = SID_OF[service] if guessing else SAME_PASSWORD
        server, client = ip_text(d.src_hi[i], d.src_lo[i]), ip_text(d.dst_hi[i], d.dst_lo[i])
        if not self._once((sid, server, client), t):
            return
        mac = frame_mac(batch, d, i, source=False)   # the client's: the reply's destination
        out.append(Finding(
            ts=t, technique="brute_force", mitre=MITRE_BRUTE_FORCE, category="Theft", subcategory="BruteForce",
            sid=sid, signature=SIDS[sid], src_mac=0 if mac >> 40 & 1 else mac, src_ip=client, dest_ip=server,
            proto="tcp", dest_port=int(d.sport[i]), severity=1 if guessing else 3, block=guessing,
            evidence={"service": service, "failed_logins": refused, "successes": successes,
                      "passwords_tried": len(tried) if tried else None,
                      "sessions": len({p for _, p, _ in state["refused"]}), "window_s": self.window}))

    def _refused_lately(self, key: int, t: float) -> None:
        """A web server refused this client: its requests are read for their Authorization from
        now on (for `window` s after the latest refusal; the most recent MAX_PAIRS)."""
        lately = self._refused
        lately.pop(key, None)
        lately[key] = t
        while lately and (len(lately) > self.MAX_PAIRS or next(iter(lately.values())) < t - self.window):
            del lately[next(iter(lately))]
        self._refused_keys = np.fromiter(lately, dtype=np.uint64, count=len(lately))

    def _state(self, server: str, client: str, service: str) -> dict:
        key = (server, client, service)
        state = self._pairs.pop(key, None)
        if state is None:
            state = {"refused": deque(), "ok": deque(), "credentials": {}}
            if len(self._pairs) >= self.MAX_PAIRS:
                self._pairs.popitem(last=False)
        self._pairs[key] = state
        return state


# -- reading payloads --------------------------------------------------------------------------
def _payloads(batch, d, rows):
    """The TCP segments among `rows` that carry payload: (rows, payload start, captured end)."""
    tcp = d.l4[rows].astype(np.int64)
    ends = frame_ends(batch, tcp)
    header = (batch.buf[np.minimum(tcp + 12, len(batch.buf) - 1)].astype(np.int64) >> 4) * 4
    start = tcp + header
    room = (tcp + 13 <= ends) & (header >= 20) & (start < ends)
    return rows[room], start[room], ends[room]


def _head(buf, start, end) -> np.ndarray:
    """The first READ bytes of each payload (zeros past its captured end)."""
    at = start[:, None] + np.arange(READ)
    return np.where(at < end[:, None], buf[np.minimum(at, len(buf) - 1)], 0).astype(np.int64)


def _at(head, offset: int, text: bytes, fold: bool = False) -> np.ndarray:
    want = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    got = head[:, offset:offset + len(text)]
    if fold:   # ASCII letters in either case
        got = np.where((got >= ord("a")) & (got <= ord("z")), got - 32, got)
    return (got == want).all(axis=1)


def _starts(head, text: bytes, fold: bool = False) -> np.ndarray:
    return _at(head, 0, text, fold)


def _digest(*parts: bytes) -> str:
    return hashlib.blake2b(b"\0".join(parts), digest_size=8).hexdigest()   # kept, not the password


def _ftp_password(payload: bytes):
    line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    return _digest(b"ftp", line[5:]) if len(line) >= 5 else None


def _mqtt_credentials(payload: bytes):
    """CONNECT (MQTT 3.1, 3.1.1, 5.0): the user name and password fields, or None."""
    try:
        at, length = 1, 0
        for shift in (0, 7, 14, 21):                   # remaining length, a variable-length integer
            byte = payload[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        name_len = int.from_bytes(payload[at:at + 2], "big")
        at += 2 + name_len
        level, flags = payload[at], payload[at + 1]
        at += 4                                        # level, flags, keep-alive
        if level == 5:
            at += _varint_skip(payload, at)            # properties
        if not flags & 0x40:                           # no password field
            return None
        fields = []
        count = 1 + (2 if flags & 0x04 else 0) + (1 if flags & 0x80 else 0) + 1   # client id, will, user, password
        for k in range(count):
            if level == 5 and flags & 0x04 and k == 1:
                at += _varint_skip(payload, at)        # will properties
            n = int.from_bytes(payload[at:at + 2], "big")
            if at + 2 + n > len(payload):
                return None
            fields.append(payload[at + 2:at + 2 + n])
            at += 2 + n
        return _digest(b"mqtt", *fields[-2:] if flags & 0x80 else fields[-1:])
    except IndexError:
        return None


def _varint_skip(payload: bytes, at: int) -> int:
    """Bytes taken by a variable-length integer and the properties it counts."""
    value, used = 0, 0
    for shift in (0, 7, 14, 21):
        byte = payload[at + used]
        used += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return used + value


def _http_authorization(payload: bytes):
    """The Authorization header's value when it carries a password (Basic and the like); None
    for Digest, whose response changes with every nonce whatever the password."""
    headers = payload.split(b"\r\n\r\n", 1)[0]
    at = headers.lower().find(b"\r\nauthorization:")
    if at < 0:
        return None
    value = headers[at + 16:].split(b"\r\n", 1)[0].strip()
    if not value or value[:6].lower() == b"digest":
        return None
    return _digest(b"http", value)
