"""Bidirectional flow table that writes Argus status records and racluster-style flow records.

Flows live in preallocated numpy arrays ("slots"); a vectorised hash index
(iadm.flows.slotindex) maps flow keys to slots. One compiled pass per batch
walks the packets in capture order, and every record that comes due is
written to a row buffer in that pass: the cost follows packets and records,
never the table's size or the capture's duration.

Semantics (Argus 3, the tool that made Bot-IoT's rows; docs/features.md):
- A flow is the 5-tuple in both directions; its source is the sender of the
  first packet Argus would call the start (see `_source_is_sender`). ICMP echo
  flows are keyed by the echo id; other ICMP and ARP between two hosts form one
  flow each.
- **Status records.** Each flow's status interval starts at the first packet
  after its previous record closed; a record holds the packets before
  start + status_interval and closes when time reaches that point (a later
  packet of any flow, or `advance(now)` when the link is quiet). Each record
  has its own stime, ltime, counts and state; a later record's stime is its
  first source packet (Argus's own rule, tests/unit/test_argus_crafted.py).
- **Flow records.** The status records of a flow key folded together, as
  `racluster` does: counts summed, stime/ltime the extremes, and
  mean/stddev/sum/min/max the statistics of the status records' durations
  (population stddev). A flow record ends when its key has been silent for
  `flow_timeout` (never, offline: one record per key, as racluster), when the
  table needs its slot, or at the end of the capture. `running` rows carry the
  flow record so far at every status record, for a live detector that cannot
  wait for the end.
- A flow silent for `idle_timeout` starts afresh on its next packet (Argus's
  flow timeout): a new direction decision and new TCP state.
- smac: the MAC of the latest packet in the source direction, so a host that
  sends on a flow key another opened (forged sources repeat) is the one the
  record, and a block, points at.
- Bounded memory: at most max_flows slots. A new flow that finds the table
  full evicts the least recently active flows first (their records are
  written, counted as `evicted`), in steps of 1/16 of the table.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from iadm.capture.decode import Decoded
from iadm.flows.records import US_SLACK, make_records, state_number
from iadm.flows.slotindex import SlotIndex, grow_free_stack

KEY_WORDS = 5

# Slot columns. Float: the open status record (R_*), the flow record so far (M_*), the flow's
# last packet and the open record's deadline.
R_START, R_LAST, M_STIME, M_LTIME, M_SUM, M_SUMSQ, M_MIN, M_MAX, F_LAST, H_SYN, H_SYNACK, H_ACK, H_ASK, \
    H_ANSWER, R_SFIRST, R_OWDSUM, R_OWDN, M_OWDSUM, M_OWDN = range(19)
NSF = 19
# Int: record counts and flags, the flow's flags so far (for TCP state), flow-record totals,
# the record generation (stale deadline entries), key fields, and bookkeeping.
(R_SPKTS, R_DPKTS, R_SBYTES, R_DBYTES, R_SFLAGS, R_DFLAGS, F_SFLAGS, F_DFLAGS, M_SPKTS, M_DPKTS,
 M_SBYTES, M_DBYTES, M_NREC, GEN, DIR, SMAC, PROTO, SPORT, DPORT, ICMP_T, ICMP_C, FRESH, EXPIRED,
 M_STATE, F_SYN, F_NREC, F_SA, F_DSEEN) = range(28)
NSI = 28
# F_DSEEN: which of the flow's delays (bit 0 synack, bit 1 answer) a record has already carried
# F_SA: a TCP flow life that began with a SYN-ACK (Argus takes its sender for the source until
# the connection shows otherwise): pending, turned round, or settled by a RST.
SA_NONE, SA_PENDING, SA_TURNED, SA_SETTLED = 0, 1, 2, 3

# Row buffer columns: one row per record written (a closed status record with the flow record
# so far, or a final flow record).
O_STIME, O_LTIME, O_MSTIME, O_MLTIME, O_MSUM, O_MSUMSQ, O_MMIN, O_MMAX, O_SYNACK, O_ACKDAT, O_ANSWER, \
    O_OWD = range(12)
NOF = 12
(O_SLOT, O_FINAL, O_DIR, O_SMAC, O_SPKTS, O_DPKTS, O_SBYTES, O_DBYTES, O_STATE, O_SFLAGS, O_DFLAGS,
 O_MSPKTS, O_MDPKTS, O_MSBYTES, O_MDBYTES, O_MNREC, O_MSTATE, O_PROTO, O_SPORT, O_DPORT, O_FSFLAGS,
 O_FDFLAGS, O_NEWDELAY) = range(23)
NOI = 23

# Queue state: [head, tail] of the deadline ring and of the silence ring, and how many slots
# the pass listed in `gone` (flow records that ended on their timeout).
Q_HEAD, Q_TAIL, X_HEAD, X_TAIL, Q_GONE = range(5)

TH_SYN, TH_RST, TH_ACK = 0x02, 0x04, 0x10
INF = np.inf
_NO_OWD = np.zeros(0)   # a batch without sensor stamps


@njit(cache=True, nogil=True)
def _flow_keys(s_hi, s_lo, d_hi, d_lo, sport, dport, proto):
    """Each packet's flow key, canonically oriented (the smaller endpoint is "A"), and whether
    the packet goes B to A (swap)."""
    n = len(s_hi)
    keys = np.empty((n, KEY_WORDS), dtype=np.uint64)
    swap = np.empty(n, dtype=np.bool_)
    for i in range(n):
        sp, dp = np.uint64(sport[i]), np.uint64(dport[i])
        sw = s_hi[i] > d_hi[i] or (s_hi[i] == d_hi[i] and (s_lo[i] > d_lo[i] or (s_lo[i] == d_lo[i] and sp > dp)))
        swap[i] = sw
        if sw:
            keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3] = d_hi[i], d_lo[i], s_hi[i], s_lo[i]
            pa, pb = dp, sp
        else:
            keys[i, 0], keys[i, 1], keys[i, 2], keys[i, 3] = s_hi[i], s_lo[i], d_hi[i], d_lo[i]
            pa, pb = sp, dp
        keys[i, 4] = (np.uint64(proto[i]) << np.uint64(32)) | (pa << np.uint64(16)) | pb
    return keys, swap


@njit(cache=True, nogil=True)
def _source_is_sender(proto, flags, sport, dport):
    """Whether the sender of a flow's first packet is its source: yes for a SYN or a SYN-ACK (a
    SYN-ACK flow turns round later, see `_turn_round`); a TCP flow first seen mid-way is given the
    side that looks like the client, the higher port when exactly one side has a well-known port."""
    if proto != 6:
        return True
    if flags & TH_SYN:
        return True
    if sport < 1024 <= dport:
        return False
    return True


@njit(cache=True, nogil=True)
def _open_flow(SI, s, sw, proto, sport, dport, icmp_t, icmp_c, flags):
    """A flow (or a new life of a flow key) from its first packet; returns its DIR (source is A)."""
    SI[s, PROTO] = proto
    icmp = icmp_t >= 0
    SI[s, SPORT] = icmp_t if icmp else sport
    SI[s, DPORT] = icmp_c if icmp else dport
    SI[s, ICMP_T], SI[s, ICMP_C] = icmp_t, icmp_c
    sender_is_a = not sw
    SI[s, DIR] = sender_is_a if _source_is_sender(proto, flags, sport, dport) else not sender_is_a
    if not SI[s, DIR] == sender_is_a:       # the source is the receiver: ports as the source sees them
        if not icmp:
            SI[s, SPORT], SI[s, DPORT] = dport, sport
    SI[s, F_SFLAGS] = SI[s, F_DFLAGS] = 0
    SI[s, F_SYN] = 1 if proto == 6 and flags & TH_SYN and not flags & TH_ACK else 0
    SI[s, F_SA] = SA_PENDING if proto == 6 and flags & TH_SYN and flags & TH_ACK else SA_NONE
    SI[s, F_NREC] = 0
    SI[s, F_DSEEN] = 0


@njit(cache=True, nogil=True)
def _turn_round(SI, SF, s, flags):
    """A flow that began with a SYN-ACK, at a later packet. Argus (probed with crafted captures)
    keeps the SYN-ACK's sender as the source while only SYN-ACKs come; the first other packet, from
    either side, turns the flow round (the SYN-ACK's receiver becomes the source, and the records
    from then on are CLO unless they carry a FIN or RST); a RST first settles it as it is."""
    if flags & TH_RST:
        SI[s, F_SA] = SA_SETTLED
        return
    if flags & TH_SYN and flags & TH_ACK:
        return
    SI[s, F_SA] = SA_TURNED
    SI[s, DIR] = not SI[s, DIR]
    for a, b in ((SPORT, DPORT), (R_SPKTS, R_DPKTS), (R_SBYTES, R_DBYTES), (R_SFLAGS, R_DFLAGS),
                 (F_SFLAGS, F_DFLAGS), (M_SPKTS, M_DPKTS), (M_SBYTES, M_DBYTES)):
        SI[s, a], SI[s, b] = SI[s, b], SI[s, a]


@njit(cache=True, nogil=True)
def _handshake(SF, s, from_source, flags, t):
    """The TCP handshake seen at the mirror, split there (Argus's synack and ackdat): the source's
    SYN, the destination's SYN-ACK after it (the server side of the round trip), then the source's
    first ACK after that (the client side). Retransmissions keep the first of each."""
    syn, ack = flags & TH_SYN, flags & TH_ACK
    if from_source:
        if syn and not ack and SF[s, H_SYN] != SF[s, H_SYN]:
            SF[s, H_SYN] = t
        elif ack and not syn and SF[s, H_SYNACK] == SF[s, H_SYNACK] and SF[s, H_ACK] != SF[s, H_ACK]:
            SF[s, H_ACK] = t
    elif syn and ack and SF[s, H_SYN] == SF[s, H_SYN] and SF[s, H_SYNACK] != SF[s, H_SYNACK]:
        SF[s, H_SYNACK] = t


@njit(cache=True, nogil=True)
def _exchange(SF, s, from_source, t):
    """A UDP request/response flow (DNS, NTP, CoAP, ...): the source's first packet, and the
    destination's first answer after it (the responder's delay plus the path's round trip)."""
    if from_source:
        if SF[s, H_ASK] != SF[s, H_ASK]:
            SF[s, H_ASK] = t
    elif SF[s, H_ASK] == SF[s, H_ASK] and SF[s, H_ANSWER] != SF[s, H_ANSWER]:
        SF[s, H_ANSWER] = t


@njit(cache=True, nogil=True)
def _reset_handshake(SF, s):
    SF[s, H_SYN] = SF[s, H_SYNACK] = SF[s, H_ACK] = SF[s, H_ASK] = SF[s, H_ANSWER] = np.nan


@njit(cache=True, nogil=True)
def _reset_flow_record(SI, SF, s):
    SF[s, M_STIME], SF[s, M_LTIME] = INF, -INF
    SF[s, M_SUM] = SF[s, M_SUMSQ] = SF[s, M_MAX] = 0.0
    SF[s, M_MIN] = INF
    SI[s, M_SPKTS] = SI[s, M_DPKTS] = SI[s, M_SBYTES] = SI[s, M_DBYTES] = SI[s, M_NREC] = 0
    SI[s, M_STATE] = 0
    SI[s, EXPIRED] = 0
    SF[s, M_OWDSUM] = SF[s, M_OWDN] = 0.0


@njit(cache=True, nogil=True)
def _write_row(SI, SF, OF, OI, n, s, final):
    OI[n, O_SLOT], OI[n, O_FINAL], OI[n, O_DIR], OI[n, O_SMAC] = s, final, SI[s, DIR], SI[s, SMAC]
    OI[n, O_PROTO], OI[n, O_SPORT], OI[n, O_DPORT] = SI[s, PROTO], SI[s, SPORT], SI[s, DPORT]
    OF[n, O_MSTIME], OF[n, O_MLTIME], OF[n, O_MSUM], OF[n, O_MSUMSQ] = \
        SF[s, M_STIME], SF[s, M_LTIME], SF[s, M_SUM], SF[s, M_SUMSQ]
    OF[n, O_MMIN], OF[n, O_MMAX] = SF[s, M_MIN], SF[s, M_MAX]
    OI[n, O_MSPKTS], OI[n, O_MDPKTS], OI[n, O_MSBYTES], OI[n, O_MDBYTES] = \
        SI[s, M_SPKTS], SI[s, M_DPKTS], SI[s, M_SBYTES], SI[s, M_DBYTES]
    OI[n, O_MNREC], OI[n, O_MSTATE] = SI[s, M_NREC], SI[s, M_STATE]
    OI[n, O_FSFLAGS], OI[n, O_FDFLAGS] = SI[s, F_SFLAGS], SI[s, F_DFLAGS]
    # the handshake's two halves as Argus names them (NaN where the flow's handshake was not seen)
    OF[n, O_SYNACK], OF[n, O_ACKDAT] = SF[s, H_SYNACK] - SF[s, H_SYN], SF[s, H_ACK] - SF[s, H_SYNACK]
    OF[n, O_ANSWER] = SF[s, H_ANSWER] - SF[s, H_ASK] if SI[s, PROTO] == 17 else np.nan


@njit(cache=True, nogil=True)
def _microseconds(last, start):
    """last - start as Argus has it: both truncated to whole microseconds (records.US_SLACK)."""
    return (np.floor(last * 1e6 + US_SLACK) - np.floor(start * 1e6 + US_SLACK)) / 1e6


@njit(cache=True, nogil=True)
def _close_record(SI, SF, OF, OI, n, s):
    """Close slot s's open status record into row n, folding it into the flow record."""
    start, last = SF[s, R_START], SF[s, R_LAST]
    # Argus dates a flow's later status records from their first source packet (the first
    # record from the flow's first packet); the interval itself still runs from the first packet.
    if SI[s, F_NREC] > 0 and SF[s, R_SFIRST] < INF:
        start = SF[s, R_SFIRST]
    dur = _microseconds(last, start)
    SF[s, M_STIME] = min(SF[s, M_STIME], start)
    SF[s, M_LTIME] = max(SF[s, M_LTIME], last)
    SF[s, M_SUM] += dur
    SF[s, M_SUMSQ] += dur * dur
    SF[s, M_MIN] = min(SF[s, M_MIN], dur)
    SF[s, M_MAX] = max(SF[s, M_MAX], dur)
    SI[s, M_SPKTS] += SI[s, R_SPKTS]
    SI[s, M_DPKTS] += SI[s, R_DPKTS]
    SI[s, M_SBYTES] += SI[s, R_SBYTES]
    SI[s, M_DBYTES] += SI[s, R_DBYTES]
    SI[s, M_NREC] += 1
    owd = SF[s, R_OWDSUM] / SF[s, R_OWDN] if SF[s, R_OWDN] > 0 else np.nan
    SF[s, M_OWDSUM] += SF[s, R_OWDSUM]
    SF[s, M_OWDN] += SF[s, R_OWDN]
    state = state_number(SI[s, PROTO], SI[s, R_SFLAGS], SI[s, R_DFLAGS], SI[s, F_SFLAGS], SI[s, F_DFLAGS],
                         SI[s, F_SYN], SI[s, R_SPKTS], SI[s, R_DPKTS], SI[s, F_NREC], SI[s, ICMP_T],
                         SI[s, ICMP_C], SI[s, F_SA] == SA_TURNED)
    SI[s, F_NREC] += 1
    SI[s, M_STATE] = state
    _write_row(SI, SF, OF, OI, n, s, 0)
    OF[n, O_STIME], OF[n, O_LTIME] = start, last
    OI[n, O_SPKTS], OI[n, O_DPKTS], OI[n, O_SBYTES], OI[n, O_DBYTES] = \
        SI[s, R_SPKTS], SI[s, R_DPKTS], SI[s, R_SBYTES], SI[s, R_DBYTES]
    OI[n, O_STATE], OI[n, O_SFLAGS], OI[n, O_DFLAGS] = state, SI[s, R_SFLAGS], SI[s, R_DFLAGS]
    OF[n, O_OWD] = owd     # this status record's stamped source packets (running rows too)
    # the delays this record is the first to carry (a running record's new_delay): a detector that
    # measures each flow's handshake once needs no flow state
    new = 0
    if OF[n, O_SYNACK] == OF[n, O_SYNACK] and not SI[s, F_DSEEN] & 1:
        new |= 1
    if OF[n, O_ANSWER] == OF[n, O_ANSWER] and not SI[s, F_DSEEN] & 2:
        new |= 2
    SI[s, F_DSEEN] |= new
    OI[n, O_NEWDELAY] = new
    SF[s, R_START], SF[s, R_LAST], SF[s, R_SFIRST] = INF, -INF, INF
    SF[s, R_OWDSUM] = SF[s, R_OWDN] = 0.0
    SI[s, R_SPKTS] = SI[s, R_DPKTS] = SI[s, R_SBYTES] = SI[s, R_DBYTES] = SI[s, R_SFLAGS] = SI[s, R_DFLAGS] = 0


@njit(cache=True, nogil=True)
def _final_row(SI, SF, OF, OI, n, s):
    """Row n: slot s's flow record as it ends (its open status record must be closed first)."""
    _write_row(SI, SF, OF, OI, n, s, 1)
    OF[n, O_STIME], OF[n, O_LTIME] = SF[s, M_STIME], SF[s, M_LTIME]
    OI[n, O_SPKTS] = OI[n, O_DPKTS] = OI[n, O_SBYTES] = OI[n, O_DBYTES] = 0
    OI[n, O_STATE], OI[n, O_SFLAGS], OI[n, O_DFLAGS] = SI[s, M_STATE], 0, 0
    OF[n, O_OWD] = SF[s, M_OWDSUM] / SF[s, M_OWDN] if SF[s, M_OWDN] > 0 else np.nan   # the whole flow's
    OI[n, O_NEWDELAY] = 0


@njit(cache=True, nogil=True)
def _run(clock, ts, slot, swap, wirelen, flags, macs, proto, sport, dport, icmp_t, icmp_c, owd, lo, hi, until,
         SI, SF, due_slot, due_gen, due_at, quiet_slot, quiet_gen, quiet_at, Q, gone, OF, OI, interval, idle,
         flow_timeout):
    """Packets lo..hi-1 into their flows and records out, in time order; then the deadlines up to
    `until`. Returns (next packet, rows written, whether it stopped for room): a full row buffer
    or ring stops the pass, and the caller drains and calls again from there."""
    n = 0
    rows = len(OF)
    ring = len(due_slot)
    qring = len(quiet_slot)
    i = lo
    while True:
        t = clock[i] if i < hi else until
        # Records whose interval ended by now, in deadline order (deadlines only grow).
        while Q[Q_HEAD] < Q[Q_TAIL] and due_at[Q[Q_HEAD] % ring] <= t:
            if n >= rows or Q[X_TAIL] - Q[X_HEAD] >= qring:
                return i, n, True
            k = Q[Q_HEAD] % ring
            Q[Q_HEAD] += 1
            s = due_slot[k]
            if SI[s, GEN] == due_gen[k] and SF[s, R_START] < INF:
                _close_record(SI, SF, OF, OI, n, s)
                n += 1
                if flow_timeout > 0:
                    q = Q[X_TAIL] % qring
                    # From the deadline, not from now: deadlines only grow, and a packet long after
                    # the record ended must find the flow record already over.
                    quiet_slot[q], quiet_gen[q], quiet_at[q] = s, SI[s, GEN], due_at[k] + flow_timeout
                    Q[X_TAIL] += 1
        # Flow records whose key stayed silent for flow_timeout since their last status record.
        while Q[X_HEAD] < Q[X_TAIL] and quiet_at[Q[X_HEAD] % qring] <= t:
            if n >= rows:
                return i, n, True
            k = Q[X_HEAD] % qring
            Q[X_HEAD] += 1
            s = quiet_slot[k]
            if SI[s, GEN] == quiet_gen[k] and SF[s, R_START] == INF and SI[s, EXPIRED] == 0 \
                    and SI[s, M_NREC] > 0:
                _final_row(SI, SF, OF, OI, n, s)
                n += 1
                SI[s, EXPIRED] = 1
                gone[Q[Q_GONE]] = s
                Q[Q_GONE] += 1
        if i >= hi:
            return i, n, False
        if Q[Q_TAIL] - Q[Q_HEAD] >= ring:
            return i, n, True
        s = slot[i]
        if SI[s, FRESH] or SI[s, EXPIRED]:
            if SI[s, EXPIRED]:
                SI[s, EXPIRED] = 0     # a new flow record on the same key (the old one is written)
            _reset_flow_record(SI, SF, s)
            _open_flow(SI, s, swap[i], proto[i], sport[i], dport[i], icmp_t[i], icmp_c[i], flags[i])
            _reset_handshake(SF, s)
            SI[s, FRESH] = 0
        elif ts[i] - SF[s, F_LAST] >= idle:
            if SF[s, R_START] < INF:   # an interval longer than the idle timeout: close it first
                if n >= rows:
                    return i, n, True
                _close_record(SI, SF, OF, OI, n, s)
                n += 1
            _open_flow(SI, s, swap[i], proto[i], sport[i], dport[i], icmp_t[i], icmp_c[i], flags[i])
            _reset_handshake(SF, s)
        elif SI[s, F_SA] == SA_PENDING:
            _turn_round(SI, SF, s, flags[i])
        if SF[s, R_START] == INF:      # a new status record: its deadline joins the ring
            SF[s, R_START] = ts[i]
            SI[s, GEN] += 1
            k = Q[Q_TAIL] % ring
            due_slot[k], due_gen[k], due_at[k] = s, SI[s, GEN], t + interval
            Q[Q_TAIL] += 1
        # a record starts at its first packet in capture order, even if a later one is stamped earlier
        SF[s, R_LAST] = max(SF[s, R_LAST], ts[i])
        SF[s, F_LAST] = max(SF[s, F_LAST], ts[i])
        from_source = (not swap[i]) == SI[s, DIR]
        # a turned-round flow dates its records from the SYN-ACK sender's side, as Argus does
        if from_source != (SI[s, F_SA] == SA_TURNED) and SF[s, R_SFIRST] == INF:
            SF[s, R_SFIRST] = ts[i]
        if proto[i] == 6:
            _handshake(SF, s, from_source, flags[i], ts[i])
        elif proto[i] == 17:
            _exchange(SF, s, from_source, ts[i])
        if from_source:
            SI[s, R_SPKTS] += 1
            SI[s, R_SBYTES] += wirelen[i]
            SI[s, R_SFLAGS] |= flags[i]
            SI[s, F_SFLAGS] |= flags[i]
            # The latest source-direction sender: a host that reuses a flow key someone
            # else opened (forged sources repeat) answers for what it sends now.
            SI[s, SMAC] = macs[i]
            if len(owd) and owd[i] == owd[i]:   # a sensor's send-time stamp (iadm.flows.owd; empty: none)
                SF[s, R_OWDSUM] += owd[i]
                SF[s, R_OWDN] += 1.0
        else:
            SI[s, R_DPKTS] += 1
            SI[s, R_DBYTES] += wirelen[i]
            SI[s, R_DFLAGS] |= flags[i]
            SI[s, F_DFLAGS] |= flags[i]
        i += 1


@njit(cache=True, nogil=True)
def _end_flows(slots, SI, SF, OF, OI):
    """Rows for slots that leave the table: the open status record, then the flow record."""
    n = 0
    for s in slots:
        if SF[s, R_START] < INF:
            _close_record(SI, SF, OF, OI, n, s)
            n += 1
        if SI[s, M_NREC] > 0 and SI[s, EXPIRED] == 0:
            _final_row(SI, SF, OF, OI, n, s)
            n += 1
        SI[s, GEN] += 1        # its ring entries go stale
    return n


class FlowTable:
    """Packets in, rows out: see the module doc. `add`, `advance` and `flush` return record frames
    of the chosen kind: "status" (Argus status records), "flow" (one racluster-style record per
    flow, at its end) or "running" (the flow record so far, at every status record)."""

    ROWS = 1 << 17   # rows a pass writes before the caller drains them: fewer, larger record frames
    INITIAL_FLOWS = 1 << 14

    def __init__(self, status_interval: float = 5.0, idle_timeout: float = 30.0, max_flows: int = 1 << 18,
                 kind: str = "flow", flow_timeout: float | None = None):
        if status_interval <= 0 or idle_timeout <= 0 or max_flows < 16:
            raise ValueError("status_interval and idle_timeout must be positive, max_flows at least 16")
        if kind not in ("status", "flow", "running"):
            raise ValueError(f"record kind {kind!r}: choose status, flow or running")
        if flow_timeout is not None and flow_timeout <= 0:
            raise ValueError("flow_timeout must be positive (or None: a flow record lasts to the end)")
        self.status_interval = float(status_interval)
        self.idle_timeout = float(idle_timeout)
        self.flow_timeout = float(flow_timeout or 0.0)
        self.kind = kind
        # The table starts small and doubles as flows arrive, up to max_flows (then the least
        # recently active are evicted): memory follows the flows a site has, not the cap.
        self.max_flows = int(max_flows)
        self.capacity = c = min(self.max_flows, self.INITIAL_FLOWS)
        self.SI = np.zeros((c, NSI), dtype=np.int64)
        self.SF = np.zeros((c, NSF), dtype=np.float64)
        self.key_words = np.zeros((c, 4), dtype=np.uint64)
        self.active = np.zeros(c, dtype=bool)
        self.index = SlotIndex(c, KEY_WORDS)
        self.free = np.arange(c - 1, -1, -1, dtype=np.int64)   # a stack: free[:nfree]
        self.nfree = c
        self._due = self._ring(1 << 12)
        self._quiet = self._ring(1 << 12 if self.flow_timeout else 1)
        self.Q = np.zeros(5, dtype=np.int64)
        self.gone = np.zeros(self.ROWS, dtype=np.int64)
        self._gone = []
        self.OF = np.zeros((self.ROWS, NOF))
        self.OI = np.zeros((self.ROWS, NOI), dtype=np.int64)
        self.clock = -np.inf
        self.seq = 0
        self.stats = {"flows_created": 0, "flows_expired": 0, "evicted": 0, "records": 0}

    @staticmethod
    def _ring(size: int):
        return np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64), np.zeros(size)

    def __len__(self) -> int:
        return len(self.index)

    # --- packets in ------------------------------------------------------
    def add(self, packets: Decoded) -> list:
        """Account a batch of packets; returns the record frames that became due."""
        out = []
        n = len(packets)
        if n == 0:
            return out
        # A running maximum keeps slightly unordered captures in time order.
        clock = np.maximum.accumulate(np.maximum(packets.ts, self.clock))
        step = max(1, self.max_flows // 4)   # at most a quarter of the table per step: eviction finds room
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            slot = self._place(packets, lo, hi, out)
            self._pass(clock, packets, slot, lo, hi, clock[hi - 1], out)
        self.clock = clock[-1]
        self._reclaim()
        return out

    def advance(self, now: float) -> list:
        """Close what came due by `now` without a packet (a live monitor's quiet link)."""
        out = []
        if now <= self.clock or not hasattr(self, "_empty"):
            return out
        self.clock = now
        self._pass(None, None, None, 0, 0, now, out)
        self._reclaim()
        return out

    def flush(self) -> list:
        """Final records for every flow still in the table (end of a capture)."""
        out = []
        self._end(np.flatnonzero(self.active), out)
        return out

    def _place(self, p: Decoded, lo: int, hi: int, out: list) -> np.ndarray:
        """The slot of every packet lo..hi-1; new flows are marked to be opened at their first packet."""
        sl = slice(lo, hi)
        keys, self._swap = _flow_keys(p.src_hi[sl], p.src_lo[sl], p.dst_hi[sl], p.dst_lo[sl], p.sport[sl],
                                      p.dport[sl], p.proto[sl])
        slot, first, self.nfree = self.index.insert(keys, self.free, self.nfree)
        self._mark_new(slot[first], keys[first])
        missing = np.flatnonzero(slot < 0)
        if len(missing) and self.capacity < self.max_flows:   # room to grow: the rest get the new slots
            self._widen(self.capacity - self.nfree + len(missing))
            placed, first, self.nfree = self.index.insert(keys[missing], self.free, self.nfree)
            slot[missing] = placed
            self._mark_new(placed[first], keys[missing[first]])
            missing = missing[placed < 0]
        if len(missing):   # the table is full: evict, then place the rest
            self._evict(len(missing), protect=slot[slot >= 0], out=out)
            placed, first, self.nfree = self.index.insert(keys[missing], self.free, self.nfree)
            if (placed < 0).any():
                raise RuntimeError(f"flow table of {self.capacity} has no room for {len(missing)} new flows")
            slot[missing] = placed
            self._mark_new(placed[first], keys[missing[first]])
        return slot

    def _widen(self, flows: int) -> None:
        """Capacity for `flows` flows (doubling, up to max_flows). Slots keep their numbers, and the
        new ones go under the free stack, so slots are handed out in the order a table of the full
        size would hand them out: the records do not depend on when the table grew."""
        old = self.capacity
        new = min(self.max_flows, max(2 * old, 1 << max(int(flows) - 1, 1).bit_length()))

        def wider(array):
            out = np.zeros((new,) + array.shape[1:], dtype=array.dtype)
            out[:old] = array
            return out

        self.SI, self.SF, self.key_words, self.active = (wider(a) for a in (self.SI, self.SF, self.key_words,
                                                                              self.active))
        self.free, self.nfree = grow_free_stack(self.free, self.nfree, old, new)
        self.index.grow(new)
        self.capacity = new

    def _mark_new(self, slots, keys) -> None:
        self.key_words[slots] = keys[:, :4]
        self.SI[slots, FRESH] = 1
        self.SI[slots, EXPIRED] = 0
        self.SF[slots, R_START], self.SF[slots, R_LAST], self.SF[slots, F_LAST] = np.inf, -np.inf, -np.inf
        self.SF[slots, R_SFIRST] = np.inf
        self.SF[slots, R_OWDSUM] = self.SF[slots, R_OWDN] = 0.0
        self.SI[slots, R_SPKTS:R_DFLAGS + 1] = 0
        self.active[slots] = True
        self.stats["flows_created"] += len(slots)

    def _pass(self, clock, p, slot, lo, hi, until, out) -> None:
        """Run the compiled pass to the end, draining the row buffer and growing rings as it fills."""
        if p is None:
            args, clock, start, end = self._empty, np.zeros(0), 0, 0
        else:
            sl = slice(lo, hi)
            args = (p.ts[sl], slot, self._swap, p.wirelen[sl], p.tcp_flags[sl], p.src_mac[sl], p.proto[sl],
                    p.sport[sl], p.dport[sl], p.icmp_type[sl], p.icmp_code[sl],
                    p.owd[sl] if p.owd is not None and len(p.owd) else _NO_OWD)
            self._empty = tuple(a[:0] for a in args)   # same types for a quiet pass: no second compile
            clock = clock[sl]
            start, end = 0, hi - lo
        while True:
            start, rows, full = _run(clock, *args, start, end, until, self.SI, self.SF, *self._due, *self._quiet,
                                     self.Q, self.gone, self.OF, self.OI, self.status_interval, self.idle_timeout,
                                     self.flow_timeout)
            self._drain(rows, out)
            if self.Q[Q_GONE]:
                self._gone.append(self.gone[:self.Q[Q_GONE]].copy())
                self.Q[Q_GONE] = 0
            if not full:
                return
            # It stopped for rows (drained above) or for a ring: each ring doubles once half full.
            self._due = self._grow(self._due, Q_HEAD, Q_TAIL)
            if self.flow_timeout:
                self._quiet = self._grow(self._quiet, X_HEAD, X_TAIL)

    def _grow(self, ring, head, tail):
        size = len(ring[0])
        h, t = self.Q[head], self.Q[tail]
        if t - h < size // 2:
            return ring
        order = np.arange(h, t) % size
        grown = self._ring(size * 2)
        for new, old in zip(grown, ring):
            new[:t - h] = old[order]
        self.Q[head], self.Q[tail] = 0, t - h
        return grown

    def _drain(self, rows: int, out: list) -> None:
        if not rows:
            return
        of, oi = self.OF[:rows], self.OI[:rows]
        keep = oi[:, O_FINAL] == (1 if self.kind == "flow" else 0)
        self.stats["records"] += int(keep.sum())
        if keep.any():
            seqs = np.arange(self.seq + 1, self.seq + 1 + int(keep.sum()), dtype=np.int64)
            self.seq += len(seqs)
            out.append(make_records(of[keep], oi[keep], self.key_words, seqs,
                                    merged=self.kind != "status", running=self.kind == "running"))

    def _end(self, slots: np.ndarray, out: list) -> None:
        for at in range(0, len(slots), self.ROWS // 2):
            part = slots[at:at + self.ROWS // 2]
            self._drain(_end_flows(part, self.SI, self.SF, self.OF, self.OI), out)
        self._release(slots)

    def _reclaim(self) -> None:
        """Give back the slots of flow records that ended on their timeout during the pass (after
        it: a later packet of the same batch may have started a new flow record in one)."""
        if not self._gone:
            return
        gone = np.concatenate(self._gone)
        self._gone = []
        self.stats["flows_expired"] += len(gone)
        gone = np.unique(gone[self.active[gone] & (self.SI[gone, EXPIRED] == 1)])
        self.SI[gone, GEN] += 1
        self._release(gone)

    def _evict(self, count: int, protect: np.ndarray, out: list) -> None:
        """Make room: the least recently active flows go, never one this batch is updating."""
        want = min(self.capacity, count - self.nfree + self.capacity // 16)
        last = np.where(self.active, self.SF[:, F_LAST], np.inf)
        last[protect] = np.inf
        victims = np.argpartition(last, want - 1)[:want]
        victims = victims[np.isfinite(last[victims])]
        self.stats["evicted"] += len(victims)
        self._end(victims, out)

    def _release(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        self.index.remove(slots)
        self.active[slots] = False
        self.free[self.nfree:self.nfree + len(slots)] = slots
        self.nfree += len(slots)
