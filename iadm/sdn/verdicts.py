"""The verdict interface between monitor and controller, version 1: validation.

A verdict is a JSON object. Everything is checked before anything changes:
unknown fields, wrong types, bad addresses and out-of-range numbers are
refused with the field that is wrong.

    {"action": "block" | "rate_limit" | "alert" | "unblock" | "guard",
     "src_ip": "10.0.0.1"              by IPv4 source, or
     "src_mac": "00:00:00:00:00:01",   by source MAC (not both),
     "in_port": 3 | "uplink",          where it enters (alone: everything from that port);
                                       "uplink": the controller's uplink port (a shape only),
     "dst_ip": "10.0.0.2" | "10.0.0.0/24",   the shape of an attack: its destination (prefix
     "ip_proto": 6 | "tcp" | "udp" | "icmp",   at least /8), protocol and ports, for a flood
     "src_port": 53, "dst_port": 80,           through the uplink (forged or many sources)
     "rate_pps": 1000 | "rate_kbps": 5000,     rate_limit: an OpenFlow meter; traffic of the
                                               same shape beyond the rate is dropped, below passes
     "duration": 60,                   seconds, 1..65535 (the OpenFlow hard timeout)
     "reason": "SYN flood",            free text, at most 256 characters
     "source": "rule:1000001",         who decided, at most 128 characters
     "block_id": 7}                    unblock: one block by id (or by src_ip/src_mac)

The monitor sees a flood's packets arrive with the upstream router's MAC, not on which port:
in_port "uplink" narrows a shape to traffic entering through the uplink, which the controller
resolves to its `openflow.uplink_port` (a 409 when it has none), so the LAN's own traffic of
the same shape is not limited with it.

A verdict that is not an unblock names a source (src_ip or src_mac), a destination (dst_ip) or
an ingress port; protocol and ports only narrow one of those, and ports need TCP or UDP.

"guard" is the answer to a MAC flood, which has no one source to block: the port guard of an
ingress port (learning stops there; frames from sources not learned there are dropped; the
hosts learned there keep working). The port is given (in_port) or is the one where src_mac, a
MAC the flood sent, entered: the monitor sees MACs, not ports. It takes nothing else.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from iadm.httpjson import ApiError, json_object

ACTIONS = ("block", "rate_limit", "alert", "unblock", "guard")
UPLINK = "uplink"   # in_port: the controller's uplink port, whichever number it has
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
MAX_RATE_PPS = 10_000_000
MAX_RATE_KBPS = 100_000_000
MIN_PREFIX = 8
MAX_DURATION = 0xFFFF
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_FIELDS = {"action", "src_ip", "src_mac", "in_port", "duration", "reason", "source", "block_id", "dst_ip",
           "ip_proto", "src_port", "dst_port", "rate_pps", "rate_kbps"}


class VerdictError(ApiError):
    """A refused verdict: HTTP status, message, and the field at fault."""


@dataclass(frozen=True)
class Verdict:
    action: str
    src_ip: str | None = None
    src_mac: str | None = None
    in_port: int | str | None = None   # a port number, or UPLINK
    duration: int | None = None
    reason: str = ""
    source: str = ""
    block_id: int | None = None
    dst_ip: str | None = None        # "a.b.c.d/len", normalised
    ip_proto: int | None = None
    src_port: int | None = None
    dst_port: int | None = None
    rate_pps: int | None = None
    rate_kbps: int | None = None

    @property
    def shaped(self) -> bool:
        """Matches the attack's shape (destination, protocol, ports), not one source."""
        return self.dst_ip is not None or (self.in_port is not None and self.src_mac is None and self.src_ip is None)


def _int(doc: dict, name: str, lo: int, hi: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise VerdictError(400, f"{name} must be an integer", name)
    if not lo <= value <= hi:
        raise VerdictError(400, f"{name} must be between {lo} and {hi}, got {value}", name)
    return value


def _text(doc: dict, name: str, limit: int) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise VerdictError(400, f"{name} must be a string", name)
    if len(value) > limit:
        raise VerdictError(400, f"{name} is longer than {limit} characters", name)
    return value


def parse_verdict(body: bytes) -> Verdict:
    doc = json_object(body, VerdictError)
    unknown = sorted(set(doc) - _FIELDS)
    if unknown:
        raise VerdictError(400, f"unknown field {unknown[0]!r}", unknown[0])
    action = doc.get("action")
    if action not in ACTIONS:
        raise VerdictError(400, f"action must be one of {', '.join(ACTIONS)}", "action")

    src_ip = doc.get("src_ip")
    if src_ip is not None:
        try:
            if not isinstance(src_ip, str):
                raise TypeError(src_ip)
            src_ip = str(ipaddress.IPv4Address(src_ip))
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise VerdictError(400, f"src_ip is not an IPv4 address: {src_ip!r}", "src_ip") from None
    src_mac = doc.get("src_mac")
    if src_mac is not None:
        if not isinstance(src_mac, str) or not _MAC.match(src_mac.lower()):
            raise VerdictError(400, f"src_mac is not a MAC address: {src_mac!r}", "src_mac")
        src_mac = src_mac.lower()
        if int(src_mac[:2], 16) & 1:
            raise VerdictError(400, "src_mac is a group address and cannot be a source", "src_mac")
    in_port = UPLINK if doc.get("in_port") == UPLINK else _int(doc, "in_port", 1, 0xFFFFFF00)
    duration = _int(doc, "duration", 1, MAX_DURATION)
    block_id = _int(doc, "block_id", 1, 2**53)
    reason = _text(doc, "reason", 256)
    source = _text(doc, "source", 128)

    dst_ip = doc.get("dst_ip")
    if dst_ip is not None:
        try:
            if not isinstance(dst_ip, str):
                raise TypeError(dst_ip)
            net = ipaddress.IPv4Network(dst_ip, strict=False)
        except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError):
            raise VerdictError(400, f"dst_ip is not an IPv4 address or prefix: {dst_ip!r}", "dst_ip") from None
        if net.prefixlen < MIN_PREFIX:
            raise VerdictError(400, f"dst_ip {net} is broader than /{MIN_PREFIX}", "dst_ip")
        dst_ip = str(net)
    ip_proto = doc.get("ip_proto")
    if isinstance(ip_proto, str):
        if ip_proto.lower() not in PROTOCOLS:
            raise VerdictError(400, f"ip_proto must be a number or one of {', '.join(PROTOCOLS)}", "ip_proto")
        ip_proto = PROTOCOLS[ip_proto.lower()]
    elif ip_proto is not None:
        ip_proto = _int(doc, "ip_proto", 1, 255)
    src_port = _int(doc, "src_port", 1, 65535)
    dst_port = _int(doc, "dst_port", 1, 65535)
    rate_pps = _int(doc, "rate_pps", 1, MAX_RATE_PPS)
    rate_kbps = _int(doc, "rate_kbps", 1, MAX_RATE_KBPS)

    if src_ip is not None and src_mac is not None:
        raise VerdictError(400, "give src_ip or src_mac, not both", "src_mac")
    if in_port is not None and src_ip is not None:
        raise VerdictError(400, "in_port narrows a src_mac block or a shape; not a src_ip block", "in_port")
    if in_port == UPLINK and (dst_ip is None or src_mac is not None or action == "guard"):
        raise VerdictError(400, 'in_port "uplink" narrows a shape (dst_ip); the uplink itself is never blocked',
                           "in_port")
    if (src_port is not None or dst_port is not None) and ip_proto not in (6, 17):
        raise VerdictError(400, "ports need ip_proto tcp (6) or udp (17)", "dst_port" if dst_port else "src_port")
    if action == "rate_limit":
        if (rate_pps is None) == (rate_kbps is None):
            raise VerdictError(400, "rate_limit needs one of rate_pps or rate_kbps", "rate_pps")
    elif rate_pps is not None or rate_kbps is not None:
        raise VerdictError(400, f"{action} takes no rate (rate_limit does)", "rate_pps" if rate_pps else "rate_kbps")
    if action == "guard":
        narrowed = [name for name, value in (("src_ip", src_ip), ("dst_ip", dst_ip), ("ip_proto", ip_proto),
                                             ("src_port", src_port), ("dst_port", dst_port)) if value is not None]
        if narrowed:
            raise VerdictError(400, f"guard is of a whole port: no {narrowed[0]}", narrowed[0])
        if src_mac is None and in_port is None:
            raise VerdictError(400, "guard needs in_port, or src_mac (a MAC seen at that port)", "in_port")
    if action == "unblock":
        if block_id is None and src_ip is None and src_mac is None:
            raise VerdictError(400, "unblock needs block_id, src_ip or src_mac", "block_id")
        if duration is not None:
            raise VerdictError(400, "unblock takes no duration", "duration")
    else:
        if block_id is not None:
            raise VerdictError(400, "block_id is only for unblock", "block_id")
        if src_ip is None and src_mac is None and dst_ip is None and in_port is None:
            raise VerdictError(400, f"{action} needs src_ip, src_mac, dst_ip or in_port", "src_ip")
    return Verdict(action, src_ip, src_mac, in_port, duration, reason, source, block_id, dst_ip, ip_proto,
                   src_port, dst_port, rate_pps, rate_kbps)


class Allowlist:
    """Addresses that are never blocked: configured hosts, the gateway, controller and monitor."""

    def __init__(self, entries):
        self.networks = []
        self.macs = set()
        for entry in entries:
            entry = str(entry).strip().lower()
            if _MAC.match(entry):
                self.macs.add(entry)
            else:
                try:
                    self.networks.append(ipaddress.IPv4Network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"allowlist entry {entry!r} is neither an IPv4 address/CIDR nor a MAC") from None

    def covers_destination(self, verdict: Verdict) -> str | None:
        """The allowlist entry inside a drop's destination (dropping all traffic to the gateway, the
        controller or the monitor of one shape is an outage: such a shape may be rate-limited only)."""
        if verdict.dst_ip is None:
            return None
        net = ipaddress.IPv4Network(verdict.dst_ip)
        for entry in self.networks:
            if entry.overlaps(net):
                return str(entry)
        return None

    def covers(self, verdict: Verdict) -> str | None:
        """The allowlist entry that protects the verdict's target, or None."""
        if verdict.src_ip is not None:
            addr = ipaddress.IPv4Address(verdict.src_ip)
            for net in self.networks:
                if addr in net:
                    return str(net)
        if verdict.src_mac is not None and verdict.src_mac in self.macs:
            return verdict.src_mac
        return None
