"""The gateway bridge's OpenFlow 1.3 pipeline, built as plain data.

Every function here is pure: it returns FlowEntry / FlowDelete / MeterEntry
values that the app layer turns into framework messages (iadm.sdn.ofmsg) and
that the unit tests run through a fake flow table.

Tables (DESIGN.md section 3, with learning split from forwarding as Faucet
does, so that a host which only ever receives still gets learned):

  0 BLOCKS   verdict entries: drop, or an alert-only mark that counts and
             continues; miss -> table 1.
  1 LEARN    one entry per learned (in_port, eth_src) -> table 2;
             miss -> controller (metered) and table 2, so the switch keeps
             forwarding while the controller learns.
  2 FORWARD  one entry per learned eth_dst -> its port plus the monitor port;
             miss (unknown or broadcast destination) -> FLOOD, which already
             includes the monitor port, so flooded packets reach it once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TABLE_BLOCKS = 0
TABLE_LEARN = 1
TABLE_FORWARD = 2

PRIO_MISS = 0
PRIO_GUARD = 50       # above the learn table's miss, below what it learned
PRIO_LEARNED = 100
PRIO_BLOCK = 1000

# Pseudo ports, named as in OpenFlow; ofmsg maps them to the wire numbers.
FLOOD = "FLOOD"
CONTROLLER = "CONTROLLER"

PACKET_IN_METER_ID = 1
# Learned source entries age out so that a silent host is forgotten;
# destination entries are replaced on a move, never aged (see learn_entries).
LEARN_IDLE_TIMEOUT = 300
# Bytes of each packet-in sent to the controller: it only needs the headers.
PACKET_IN_BYTES = 128

ETH_TYPE_IPV4 = 0x0800

# Cookies tell our entries apart: the high byte is the kind, the rest an id.
COOKIE_KIND_SHIFT = 56
COOKIE_KIND_MASK = 0xFF << COOKIE_KIND_SHIFT
COOKIE_PIPELINE = 0x01 << COOKIE_KIND_SHIFT
COOKIE_LEARN = 0x02 << COOKIE_KIND_SHIFT
COOKIE_BLOCK = 0x03 << COOKIE_KIND_SHIFT
COOKIE_GUARD = 0x04 << COOKIE_KIND_SHIFT
COOKIE_ID_MASK = (1 << COOKIE_KIND_SHIFT) - 1


@dataclass(frozen=True)
class FlowEntry:
    """One flow-mod ADD. `match` maps OXM field names to a value or (value, mask)."""
    table: int
    priority: int
    match: dict = field(default_factory=dict)
    actions: tuple = ()          # apply-actions: ("output", port)
    goto: int | None = None
    meter: int | None = None
    idle_timeout: int = 0
    hard_timeout: int = 0
    cookie: int = 0
    notify_removed: bool = False


@dataclass(frozen=True)
class FlowDelete:
    """A flow-mod DELETE of every entry in `table` (None: all) whose cookie matches."""
    table: int | None
    cookie: int = 0
    cookie_mask: int = 0
    match: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MeterEntry:
    """A drop-band meter in packets per second (or kbit/s with kbps)."""
    meter_id: int
    rate_pps: int
    burst: int
    kbps: bool = False


@dataclass(frozen=True)
class MeterDelete:
    meter_id: int


# Rate-limit blocks get meters of their own, above the packet-in meter.
BLOCK_METER_BASE = 0x100


def block_meter_id(block_id: int) -> int:
    return BLOCK_METER_BASE + (block_id & 0xFFFFFF)


def block_cookie(block_id: int) -> int:
    return COOKIE_BLOCK | (block_id & COOKIE_ID_MASK)


def base_pipeline(packet_in_rate_pps: int | None) -> list:
    """What a freshly connected switch gets: a clean slate, the meter, the misses.

    With no meter support (packet_in_rate_pps None) packet-ins go unmetered.
    """
    ops = [FlowDelete(table=None)]
    meter = None
    if packet_in_rate_pps:
        meter = PACKET_IN_METER_ID
        ops.append(MeterEntry(meter, packet_in_rate_pps, burst=max(1, packet_in_rate_pps // 10)))
    return ops + [
        FlowEntry(TABLE_BLOCKS, PRIO_MISS, goto=TABLE_LEARN, cookie=COOKIE_PIPELINE),
        FlowEntry(TABLE_LEARN, PRIO_MISS, actions=(("output", CONTROLLER),),
                  goto=TABLE_FORWARD, meter=meter, cookie=COOKIE_PIPELINE),
        FlowEntry(TABLE_FORWARD, PRIO_MISS, actions=(("output", FLOOD),), cookie=COOKIE_PIPELINE),
    ]


def forward_actions(out_port: int, monitor_port: int | None) -> tuple:
    """Output to the destination and, once, to the monitor."""
    actions = [("output", out_port)]
    if monitor_port is not None and monitor_port != out_port:
        actions.append(("output", monitor_port))
    return tuple(actions)


def learn_entries(in_port: int, mac: str, monitor_port: int | None,
                  previous_port: int | None = None) -> list:
    """Entries that make `mac` known at `in_port`.

    The source entry stops further packet-ins for this host; the destination
    entry sends traffic for it straight to its port and mirrors it. When the
    host moved, its old source entry is removed; the destination entry is
    overwritten by the ADD with the same match.
    """
    mac = mac.lower()
    ops = []
    if previous_port is not None and previous_port != in_port:
        ops.append(FlowDelete(table=TABLE_LEARN, match={"in_port": previous_port, "eth_src": mac}))
    ops.append(FlowEntry(TABLE_LEARN, PRIO_LEARNED, match={"in_port": in_port, "eth_src": mac},
                         goto=TABLE_FORWARD, idle_timeout=LEARN_IDLE_TIMEOUT, cookie=COOKIE_LEARN))
    ops.append(FlowEntry(TABLE_FORWARD, PRIO_LEARNED, match={"eth_dst": mac},
                         actions=forward_actions(in_port, monitor_port), cookie=COOKIE_LEARN))
    return ops


def port_guard_entry(in_port: int, seconds: int, cookie: int | None = None) -> FlowEntry:
    """A port flooding the MAC table: in the learn table, frames from sources it has not learned
    are dropped at that port (no packet-in, no flood); the MACs learned there before keep their
    higher-priority entries. It lapses by itself after `seconds`. cookie: a guard verdict's block
    cookie (unblocked by id); by default the controller's own guard's, by port."""
    return FlowEntry(TABLE_LEARN, PRIO_GUARD, match={"in_port": in_port}, hard_timeout=min(int(seconds), 0xFFFF),
                     cookie=COOKIE_GUARD | (in_port & COOKIE_ID_MASK) if cookie is None else cookie,
                     notify_removed=True)


def unguard(block_id: int) -> FlowDelete:
    """A guard verdict's entry out of the learn table."""
    return FlowDelete(table=TABLE_LEARN, cookie=block_cookie(block_id), cookie_mask=~0 & 0xFFFFFFFFFFFFFFFF)


def block_match(src_ip: str | None = None, src_mac: str | None = None, in_port: int | None = None,
                dst_ip: str | None = None, ip_proto: int | None = None, src_port: int | None = None,
                dst_port: int | None = None) -> dict:
    """Match of a block: an IPv4 source, or a source MAC (optionally at one port), or the shape of
    an attack: destination (address or prefix), protocol, ports, ingress port.

    A flood with forged IPv4 sources from the LAN is blocked by the MAC and port it enters at,
    which the forger cannot change without also changing where it plugs in; one through the
    uplink, whose packets all carry the upstream router's MAC, by its shape.
    """
    match: dict = {}
    if src_mac is not None:
        match["eth_src"] = src_mac.lower()
    if in_port is not None:
        match["in_port"] = in_port
    if src_ip is not None or dst_ip is not None or ip_proto is not None:
        match["eth_type"] = ETH_TYPE_IPV4
    if src_ip is not None:
        match["ipv4_src"] = src_ip
    if dst_ip is not None:
        address, _, length = dst_ip.partition("/")
        if length and int(length) < 32:
            mask = (0xFFFFFFFF << (32 - int(length))) & 0xFFFFFFFF
            match["ipv4_dst"] = (address, ".".join(str((mask >> s) & 255) for s in (24, 16, 8, 0)))
        else:
            match["ipv4_dst"] = address
    if ip_proto is not None:
        match["ip_proto"] = ip_proto
        l4 = {6: "tcp", 17: "udp"}.get(ip_proto)
        if l4 and src_port is not None:
            match[f"{l4}_src"] = src_port
        if l4 and dst_port is not None:
            match[f"{l4}_dst"] = dst_port
    if not match or set(match) <= {"eth_type", "ip_proto"}:
        raise ValueError("a block needs a source, a destination or an ingress port")
    return match


def rate_limit_ops(block_id: int, match: dict, remaining_seconds: int, rate: int, kbps: bool = False) -> list:
    """A rate limit: the block's own meter (drop above the rate), and a table-0 entry that sends
    the shape through it and on to learning, so what is under the rate still gets through."""
    meter = block_meter_id(block_id)
    entry = block_entry(block_id, match, remaining_seconds, drop=False)
    return [MeterEntry(meter, rate, burst=max(1, rate // 10), kbps=kbps),
            FlowEntry(entry.table, entry.priority, match=entry.match, goto=TABLE_LEARN, meter=meter,
                      hard_timeout=entry.hard_timeout, cookie=entry.cookie, notify_removed=True)]


def block_entry(block_id: int, match: dict, remaining_seconds: int, drop: bool = True) -> FlowEntry:
    """A table-0 entry for a verdict: drop, or an alert-only mark that counts and continues.

    The hard timeout makes a false positive heal by itself even if the
    controller is gone; it is the time the block has left, so a block
    re-installed after a restart ends when it was meant to.
    """
    if remaining_seconds < 1:
        raise ValueError("a block entry needs at least one second left")
    return FlowEntry(TABLE_BLOCKS, PRIO_BLOCK, match=dict(match),
                     goto=None if drop else TABLE_LEARN,
                     hard_timeout=min(int(remaining_seconds), 0xFFFF),
                     cookie=block_cookie(block_id), notify_removed=True)


def unblock(block_id: int) -> FlowDelete:
    return FlowDelete(table=TABLE_BLOCKS, cookie=block_cookie(block_id), cookie_mask=~0 & 0xFFFFFFFFFFFFFFFF)
