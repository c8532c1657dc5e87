"""A strict, compiled parser for the DNS header and first question of many messages at once.

Input: where each message starts and ends in the batch buffer, how long its transport said it
is (to check the header's counts) and whether the capture cut it short. Output: per message a
status, the header fields, the question's type, hashes of the name and of its registered domain
(the last two labels: the simplification of a public-suffix list, which the product does not
ship; "a.b.co.uk" groups under "co.uk", which only makes a domain's counts larger), and the
properties of the labels left of the registered domain that the tunnel detector needs (lengths,
bytes outside host-name characters, digits, character entropy).

Bounds: every read is checked against the message end; a compression pointer must point
strictly before every place the name has already been read from and after the header (so
loops and forward jumps end the name), at most 32 pointers; a label length with the reserved
high bits (0x40, 0x80) is bad; a name longer than 255 bytes on the wire is bad. None of these
raises: each is a status, counted by the caller.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Statuses. EVIDENCE statuses say "this is not DNS" when the whole message was captured.
OK, SHORT, BAD_HEADER, BAD_LABEL, LOOP, TOO_LONG, TRUNCATED, NO_QUESTION, BAD_POINTER = range(9)
STATUS_NAMES = ("ok", "short", "bad_header", "bad_label", "pointer_loop", "name_too_long", "truncated",
                "no_question", "bad_pointer")

# Roles of a parsed message for the watcher.
NOTHING, QUERY, ANSWER, RAW_CLIENT, RAW_SERVER = range(5)

_FNV = np.uint64(0xCBF29CE484222325)
_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True)
def _lower(b):
    return b + 32 if 65 <= b <= 90 else b


@njit(cache=True, nogil=True)
def _ldh(b):
    # letters, digits, hyphen, underscore: what host names (and service labels) are made of
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 45 or b == 95


@njit(cache=True, nogil=True)
def _alloc(n):
    return (np.zeros(n, dtype=np.int8),          # 0 status
            np.zeros(n, dtype=np.int32),         # 1 flags
            np.full(n, -1, dtype=np.int32),      # 2 qtype
            np.zeros(n, dtype=np.uint64),        # 3 name_hash
            np.zeros(n, dtype=np.uint64),        # 4 reg_hash
            np.zeros(n, dtype=np.int16),         # 5 labels
            np.zeros(n, dtype=np.int16),         # 6 left_len
            np.zeros(n, dtype=np.int16),         # 7 left_max
            np.zeros(n, dtype=np.int16),         # 8 nonldh
            np.zeros(n, dtype=np.int16),         # 9 digits
            np.zeros(n, dtype=np.int8),          # 10 service
            np.zeros(n, dtype=np.int8),          # 11 arpa
            np.zeros(n, dtype=np.float32),       # 12 entropy
            np.zeros(n, dtype=np.uint64),        # 13 sig
            np.full(n, -1, dtype=np.int64),      # 14 name_at
            np.zeros(n, dtype=np.int64))         # 15 name_len


@njit(cache=True, nogil=True)
def _sig(buf, m, end, claimed):
    h = _FNV ^ np.uint64(claimed & 0xFFFF)
    for k in range(min(end - m, 32)):
        h = (h ^ np.uint64(buf[m + k])) * _PRIME
    return h


@njit(cache=True, nogil=True, inline="always")
def _header(buf, m, end, claimed):
    """(status, flags) from the 12-byte header: SHORT, BAD_HEADER, NO_QUESTION, or OK to go on."""
    if end - m < 12:
        return SHORT, 0
    fl = (np.int64(buf[m + 2]) << 8) | np.int64(buf[m + 3])
    opcode = (fl >> 11) & 0xF
    qd = (np.int64(buf[m + 4]) << 8) | np.int64(buf[m + 5])
    an = (np.int64(buf[m + 6]) << 8) | np.int64(buf[m + 7])
    ns = (np.int64(buf[m + 8]) << 8) | np.int64(buf[m + 9])
    ar = (np.int64(buf[m + 10]) << 8) | np.int64(buf[m + 11])
    # opcode 3 and 7-15 are unassigned; a question takes 5 bytes at least, a record 11
    if opcode == 3 or opcode > 6 or 5 * qd + 11 * (an + ns + ar) > claimed - 12:
        return BAD_HEADER, fl
    if qd == 0:
        return NO_QUESTION, fl
    return OK, fl


@njit(cache=True, nogil=True)
def _question(buf, m, end, lab_at, lab_len):
    """The first question's name and type: (status, labels, wire length, qtype); the labels'
    positions and lengths go to lab_at / lab_len."""
    pos = m + 12
    lowest = pos            # a pointer must point before every byte read so far
    jumps = 0
    wire = 1
    nl = 0
    after = -1
    while True:
        if pos >= end:
            return TRUNCATED, 0, 0, -1
        b = np.int64(buf[pos])
        if b == 0:
            if after < 0:
                after = pos + 1
            break
        kind = b & 0xC0
        if kind == 0xC0:
            if pos + 1 >= end:
                return TRUNCATED, 0, 0, -1
            target = m + (((b & 0x3F) << 8) | np.int64(buf[pos + 1]))
            if after < 0:
                after = pos + 2
            if target < m + 12:
                return BAD_POINTER, 0, 0, -1
            if target >= lowest or jumps >= 32:
                return LOOP, 0, 0, -1
            lowest = target
            jumps += 1
            pos = target
            continue
        if kind != 0:
            return BAD_LABEL, 0, 0, -1
        if pos + 1 + b > end:
            return TRUNCATED, 0, 0, -1
        wire += b + 1
        if wire > 255:
            return TOO_LONG, 0, 0, -1
        lab_at[nl] = pos + 1
        lab_len[nl] = b
        nl += 1
        pos += 1 + b
    if after + 4 > end:
        return TRUNCATED, 0, 0, -1
    return OK, nl, wire, (np.int64(buf[after]) << 8) | np.int64(buf[after + 1])


@njit(cache=True, nogil=True)
def _properties(buf, nl, lab_at, lab_len, hist):
    """Hashes of the name and of its last two labels (lower case), and the left part's length,
    longest label, bytes outside host-name characters, digits, entropy; service label; arpa."""
    hn = _FNV
    hr = _FNV
    reg_from = nl - 2 if nl >= 2 else 0
    ll = 0
    lm = 0
    bad_chars = 0
    dig = 0
    svc = 0
    for j in range(nl):
        a = lab_at[j]
        L = lab_len[j]
        if L > 0 and buf[a] == 95:
            svc = 1
        if j > 0:
            hn = (hn ^ np.uint64(46)) * _PRIME
            if j > reg_from:
                hr = (hr ^ np.uint64(46)) * _PRIME
        for k in range(L):
            c = _lower(np.int64(buf[a + k]))
            hn = (hn ^ np.uint64(c)) * _PRIME
            if j >= reg_from:
                hr = (hr ^ np.uint64(c)) * _PRIME
            else:
                hist[c] += 1
                if not _ldh(c):
                    bad_chars += 1
                elif 48 <= c <= 57:
                    dig += 1
        if j < reg_from:
            ll += L
            if L > lm:
                lm = L
    e = 0.0
    if ll > 0:
        for j in range(reg_from):
            a = lab_at[j]
            for k in range(lab_len[j]):
                c = _lower(np.int64(buf[a + k]))
                if hist[c] > 0:
                    p = hist[c] / ll
                    e -= p * np.log2(p)
                    hist[c] = 0
    # in-addr.arpa / ip6.arpa: the last label is "arpa" and the one before "in-addr" or "ip6"
    arpa = 0
    if nl >= 2 and lab_len[nl - 1] == 4:
        a = lab_at[nl - 1]
        if _lower(buf[a]) == 97 and _lower(buf[a + 1]) == 114 and _lower(buf[a + 2]) == 112 and \
                _lower(buf[a + 3]) == 97:
            a = lab_at[nl - 2]
            L = lab_len[nl - 2]
            if L == 7 and _lower(buf[a]) == 105 and _lower(buf[a + 1]) == 110 and buf[a + 2] == 45:
                arpa = 1
            elif L == 3 and _lower(buf[a]) == 105 and _lower(buf[a + 1]) == 112 and buf[a + 2] == 54:
                arpa = 1
    return hn, hr, ll, lm, bad_chars, dig, svc, e, arpa


@njit(cache=True, nogil=True)
def _write_name(buf, nl, lab_at, lab_len, names_out, used):
    for j in range(nl):
        if j > 0:
            names_out[used] = 46
            used += 1
        a = lab_at[j]
        for k in range(lab_len[j]):
            names_out[used] = _lower(buf[a + k])
            used += 1
    return used


@njit(cache=True, nogil=True)
def _parse_into(buf, s, e, c, k, status, flags, qtype, name_hash, reg_hash, labels, left_len, left_max, nonldh,
                digits, service, arpa, entropy, sig, name_at, name_len, lab_at, lab_len, hist, names_out, used):
    """Parse the message [s, e) (transport length c) into row k; returns names_out's fill.
    Only reached for a message whose header asks a question (the caller checked _header)."""
    st, nl, wire, qt = _question(buf, s, e, lab_at, lab_len)
    if st != OK:
        status[k] = st
        sig[k] = _sig(buf, s, e, c)
        return used
    qtype[k] = qt
    labels[k] = nl
    if (flags[k] >> 15) & 1:      # a response: its question is the client's; the status is all we need
        return used
    hn, hr, ll, lm, bad, dig, svc, ent, ar = _properties(buf, nl, lab_at, lab_len, hist)
    name_hash[k] = hn
    reg_hash[k] = hr
    left_len[k] = ll
    left_max[k] = lm
    nonldh[k] = bad
    digits[k] = dig
    service[k] = svc
    entropy[k] = ent
    arpa[k] = ar
    if used + wire <= len(names_out):
        name_at[k] = used
        used = _write_name(buf, nl, lab_at, lab_len, names_out, used)
        name_len[k] = used - name_at[k]
    return used


@njit(cache=True, nogil=True)
def parse(buf, starts, ends, claimed, names_out):
    """Parse every message [starts[i], ends[i]) of buf; claimed[i] is its length per transport.

    Returns the arrays of _alloc: status, flags (the header's second 16-bit word), qtype,
    name_hash, reg_hash, labels, left_len, left_max, nonldh, digits, service (a label starts with
    '_'), arpa (under in-addr.arpa or ip6.arpa), entropy (bits per character of the left part), sig
    (hash of the length and first 32 bytes, for messages that are not DNS), name_at and name_len
    (where the name's text is in names_out, -1 when it was not written). Name properties are
    computed for queries only (QR 0). Names are written as dotted lower-case text (the root as an
    empty text) while names_out has room.
    """
    n = len(starts)
    (status, flags, qtype, name_hash, reg_hash, labels, left_len, left_max, nonldh, digits, service, arpa, entropy,
     sig, name_at, name_len) = out = _alloc(n)
    lab_at = np.zeros(130, dtype=np.int64)       # a 255-byte name has at most 127 labels
    lab_len = np.zeros(130, dtype=np.int64)
    hist = np.zeros(256, dtype=np.int64)
    used = 0
    for i in range(n):
        s, e, c = starts[i], ends[i], claimed[i]
        st, fl = _header(buf, s, e, c)
        status[i] = st
        flags[i] = fl
        if st == OK:
            used = _parse_into(buf, s, e, c, i, status, flags, qtype, name_hash, reg_hash, labels, left_len,
                               left_max, nonldh, digits, service, arpa, entropy, sig, name_at, name_len, lab_at,
                               lab_len, hist, names_out, used)
        elif st != NO_QUESTION:
            sig[i] = _sig(buf, s, e, c)
    return out


@njit(cache=True, nogil=True)
def _frame_of(offsets, caplen, at, hint):
    """Index of the frame whose captured bytes hold `at` (offsets sorted), walking on from `hint`
    (the packets come in frame order, so the walk covers the batch once), else searching."""
    n = len(offsets)
    f = hint if 0 <= hint < n else 0
    if offsets[f] <= at:
        while f + 1 < n and offsets[f + 1] <= at:
            f += 1
    else:
        f = np.searchsorted(offsets, at, side="right") - 1
    if 0 <= f < n and offsets[f] <= at < offsets[f] + caplen[f]:
        return f
    return -1


@njit(cache=True, nogil=True)
def scan(buf, offsets, caplen, proto, sport, dport, l4, port, names_out):
    """Select, bound, parse and classify in one pass (each message's bytes are read once, while
    they are in cache): UDP and TCP packets to or from `port`.

    offsets must be sorted (the caller sorts them, with caplen, when a source did not: counts[2]
    says frames were not found). UDP: the length field bounds the message. TCP: only segments
    to the port that start with a length prefix of 12 or more are parsed (others: counts[1]).
    Returns rows (indices into the decoded columns), start, end (the transport's end or the
    captured end, whichever is first), claimed (the transport's length), cut (the capture ended
    first), udp, toward (sent to the server side), role (QUERY, ANSWER, RAW_CLIENT, RAW_SERVER or
    NOTHING), the arrays of parse() and counts [bad_udp, tcp_skipped, frames_not_found].
    """
    n = len(proto)
    m = 0
    for i in range(n):
        if (proto[i] == 17 or proto[i] == 6) and (sport[i] == port or dport[i] == port) and l4[i] >= 0:
            m += 1
    rows = np.empty(m, dtype=np.int64)
    start = np.empty(m, dtype=np.int64)
    end = np.empty(m, dtype=np.int64)
    claimed = np.empty(m, dtype=np.int64)
    cut = np.empty(m, dtype=np.bool_)
    udp = np.empty(m, dtype=np.bool_)
    toward = np.empty(m, dtype=np.bool_)
    role = np.zeros(m, dtype=np.int8)
    (status, flags, qtype, name_hash, reg_hash, labels, left_len, left_max, nonldh, digits, service, arpa, entropy,
     sig, name_at, name_len) = out = _alloc(m)
    lab_at = np.zeros(130, dtype=np.int64)
    lab_len = np.zeros(130, dtype=np.int64)
    hist = np.zeros(256, dtype=np.int64)
    used = 0
    counts = np.zeros(3, dtype=np.int64)
    k = 0
    f = 0
    for i in range(n):
        if not ((proto[i] == 17 or proto[i] == 6) and (sport[i] == port or dport[i] == port) and l4[i] >= 0):
            continue
        at = np.int64(l4[i])
        f = _frame_of(offsets, caplen, at, f)
        if f < 0:
            counts[2] += 1
            f = 0
            continue
        stop = offsets[f] + caplen[f]
        if proto[i] == 17:
            if at + 8 > stop:
                counts[0] += 1
                continue
            length = (np.int64(buf[at + 4]) << 8) | np.int64(buf[at + 5])
            if length < 8:
                counts[0] += 1
                continue
            s = at + 8
            c = length - 8
        else:
            if dport[i] != port or at + 20 > stop:
                counts[1] += 1
                continue
            p0 = at + (np.int64(buf[at + 12]) >> 4) * 4
            if p0 + 2 > stop:
                counts[1] += 1
                continue
            c = (np.int64(buf[p0]) << 8) | np.int64(buf[p0 + 1])
            if c < 12:
                counts[1] += 1
                continue
            s = p0 + 2
        e = min(s + c, stop)
        rows[k] = i
        start[k] = s
        claimed[k] = c
        end[k] = e
        cut[k] = s + c > stop
        udp[k] = proto[i] == 17
        way = dport[i] == port
        st, fl = _header(buf, s, e, c)
        status[k] = st
        flags[k] = fl
        if st == OK:
            used = _parse_into(buf, s, e, c, k, status, flags, qtype, name_hash, reg_hash, labels, left_len,
                               left_max, nonldh, digits, service, arpa, entropy, sig, name_at, name_len, lab_at,
                               lab_len, hist, names_out, used)
            st = status[k]
        elif st != NO_QUESTION:
            sig[k] = _sig(buf, s, e, c)
        parsed = st == OK or st == NO_QUESTION
        qr = (flags[k] >> 15) & 1
        if parsed and sport[i] == port and dport[i] == port:
            way = qr == 0          # server to server: the QR bit says who asks
        toward[k] = way
        if parsed:
            if st == OK and qr == 0 and way:
                role[k] = QUERY
            elif qr == 1 and not way:
                role[k] = ANSWER
        elif udp[k]:
            # not DNS: a header that cannot be, a name that breaks the rules; running out of bytes
            # only when the capture did not cut the message short
            hard = st == BAD_HEADER or st == BAD_LABEL or st == LOOP or st == TOO_LONG or st == BAD_POINTER
            if hard or not cut[k]:
                role[k] = RAW_CLIENT if way else RAW_SERVER
        k += 1
    return (rows[:k], start[:k], end[:k], claimed[:k], cut[:k], udp[:k], toward[:k], role[:k],
            _trim(out, k), counts)


@njit(cache=True, nogil=True)
def _trim(out, k):
    return (out[0][:k], out[1][:k], out[2][:k], out[3][:k], out[4][:k], out[5][:k], out[6][:k], out[7][:k],
            out[8][:k], out[9][:k], out[10][:k], out[11][:k], out[12][:k], out[13][:k], out[14][:k], out[15][:k])
