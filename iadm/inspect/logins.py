"""Failed logins that a cleartext server states: FTP's "530 Not logged in".

Counting sessions cannot tell a guesser from a device that opens one short session per job (a
camera uploading a snapshot by FTP opens a control connection per picture); the server's reply
can. An FTP server answers a refused USER/PASS with reply code 530 (RFC 959), the same way every
time, whoever the client is. `failures` such replies from one server to one client within
`window` seconds (5 in 120 s: fail2ban's maxretry, Emerging Threats' FTP brute-force count) are
password guessing; the finding blocks the client (its MAC: the reply's Ethernet destination).

Selection is vectorised: TCP segments from port 21 whose payload starts with "530" (a
multi-line reply, "530-", counts once, by its first line). A retransmitted reply (same client
port and sequence number) counts once.
"""
from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np

from iadm.capture.batch import LINKTYPE_ETHERNET
from iadm.inspect._util import Once, frame_ends, ip_text
from iadm.inspect.finding import MITRE_BRUTE_FORCE, SIDS, Finding

FTP_PORT = 21
COUNTERS = ("replies_530", "repeats")


class LoginFailureWatch:
    """Stateful: `__call__(batch, decoded) -> list[Finding]` on every batch."""

    MAX_PAIRS = 16384   # (server, client) pairs remembered at once; the oldest go first

    def __init__(self, failures: int = 5, window: float = 120.0, repeat: float = 60.0):
        self.failures = failures
        self.window = window
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._once = Once(repeat)
        self._seen: OrderedDict = OrderedDict()   # (server, client) -> deque of (time, client port, seq)

    def __call__(self, batch, decoded) -> list[Finding]:
        sel = np.flatnonzero((decoded.proto == 6) & (decoded.sport == FTP_PORT) & (decoded.l4 >= 0))
        if not len(sel):
            return []
        tcp = decoded.l4[sel].astype(np.int64)
        ends = frame_ends(batch, tcp)
        header = (batch.buf[np.minimum(tcp + 12, len(batch.buf) - 1)].astype(np.int64) >> 4) * 4
        payload = tcp + header
        room = (tcp + 13 <= ends) & (header >= 20) & (payload + 3 <= ends)
        sel, tcp, payload = sel[room], tcp[room], payload[room]
        if not len(sel):
            return []
        code = batch.buf[payload[:, None] + np.arange(3)]
        refused = (code[:, 0] == ord("5")) & (code[:, 1] == ord("3")) & (code[:, 2] == ord("0"))
        sel, tcp = sel[refused], tcp[refused]
        out: list[Finding] = []
        for i, at in zip(sel.tolist(), tcp.tolist()):
            seq = int.from_bytes(bytes(batch.buf[at + 4:at + 8]), "big")
            self._reply(batch, decoded, i, seq, out)
        return out

    def _reply(self, batch, decoded, i: int, seq: int, out: list) -> None:
        t = float(decoded.ts[i])
        server = ip_text(decoded.src_hi[i], decoded.src_lo[i])
        client = ip_text(decoded.dst_hi[i], decoded.dst_lo[i])
        port = int(decoded.dport[i])
        key = (server, client)
        replies = self._seen.pop(key, None) or deque()
        self._seen[key] = replies
        if len(self._seen) > self.MAX_PAIRS:
            self._seen.popitem(last=False)
        if any(p == port and s == seq for _, p, s in replies):
            self.counters["repeats"] += 1
            return
        self.counters["replies_530"] += 1
        replies.append((t, port, seq))
        while replies and replies[0][0] < t - self.window:
            replies.popleft()
        if len(replies) < self.failures or not self._once((2100301, server, client), t):
            return
        frame = int(decoded.frame[i]) if decoded.frame is not None else -1
        mac = 0
        if frame >= 0 and int(batch.linktype[frame]) == LINKTYPE_ETHERNET:
            start = int(batch.offsets[frame])
            mac = int.from_bytes(bytes(batch.buf[start:start + 6]), "big")   # the client's: the reply's destination
        sessions = len({p for _, p, _ in replies})
        out.append(Finding(
            ts=t, technique="brute_force", mitre=MITRE_BRUTE_FORCE, category="Theft", subcategory="BruteForce",
            sid=2100301, signature=SIDS[2100301], src_mac=0 if mac >> 40 & 1 else mac, src_ip=client,
            dest_ip=server, proto="tcp", dest_port=FTP_PORT, severity=1, block=True,
            evidence={"service": "ftp", "failed_logins": len(replies), "sessions": sessions,
                      "window_s": self.window, "reply": "530"}))
