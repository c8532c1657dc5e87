"""The verdict interface between monitor and controller, version 1: validation.

A verdict is a JSON object. Everything is checked before anything changes:
unknown fields, wrong types, bad addresses and out-of-range numbers are
refused with the field that is wrong.

    {"action": "block" | "alert" | "unblock",
     "src_ip": "10.0.0.1"              block/alert by IPv4 source, or
     "src_mac": "00:00:00:00:00:01",   by source MAC,
     "in_port": 3,                     optionally only where it enters
     "duration": 60,                   seconds, 1..65535 (the OpenFlow hard timeout)
     "reason": "SYN flood",            free text, at most 256 characters
     "source": "rule:1000001",         who decided, at most 128 characters
     "block_id": 7}                    unblock: one block by id (or by src_ip/src_mac)
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from iadm.httpjson import ApiError, json_object

ACTIONS = ("block", "alert", "unblock")
MAX_DURATION = 0xFFFF
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_FIELDS = {"action", "src_ip", "src_mac", "in_port", "duration", "reason", "source", "block_id"}


class VerdictError(ApiError):
    """A refused verdict: HTTP status, message, and the field at fault."""


@dataclass(frozen=True)
class Verdict:
    action: str
    src_ip: str | None = None
    src_mac: str | None = None
    in_port: int | None = None
    duration: int | None = None
    reason: str = ""
    source: str = ""
    block_id: int | None = None


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
    in_port = _int(doc, "in_port", 1, 0xFFFFFF00)
    duration = _int(doc, "duration", 1, MAX_DURATION)
    block_id = _int(doc, "block_id", 1, 2**53)
    reason = _text(doc, "reason", 256)
    source = _text(doc, "source", 128)

    if src_ip is not None and src_mac is not None:
        raise VerdictError(400, "give src_ip or src_mac, not both", "src_mac")
    if in_port is not None and src_mac is None:
        raise VerdictError(400, "in_port narrows a src_mac block and needs src_mac", "in_port")
    if action == "unblock":
        if block_id is None and src_ip is None and src_mac is None:
            raise VerdictError(400, "unblock needs block_id, src_ip or src_mac", "block_id")
        if duration is not None:
            raise VerdictError(400, "unblock takes no duration", "duration")
    else:
        if block_id is not None:
            raise VerdictError(400, "block_id is only for unblock", "block_id")
        if src_ip is None and src_mac is None:
            raise VerdictError(400, f"{action} needs src_ip or src_mac", "src_ip")
    return Verdict(action, src_ip, src_mac, in_port, duration, reason, source, block_id)


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
