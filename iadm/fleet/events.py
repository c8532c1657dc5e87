"""Fleet events: EVE-shaped JSON with the gateway's name (`host`) and a unique `event_id`.

`host` is where Suricata puts the sensor's name in EVE; `event_id` is what makes a replayed or
re-delivered event land in PostgreSQL once. On the stream each entry has one field, `eve`, the
event's JSON (Suricata's redis output writes the same JSON; one field keeps the entry a copy of
the log line).
"""
from __future__ import annotations

import json
import socket
import time
import uuid

from iadm.alerts.log import eve_timestamp

FIELD = b"eve"
EVENT_TYPES = ("alert", "mitigation", "unblock", "feedback", "health")


class BadEvent(ValueError):
    """An entry that is not a fleet event; the message names the entry and what is wrong."""


def gateway_name(configured: str) -> str:
    return configured or socket.gethostname()


def envelope(event: dict, gateway_id: str, now=time.time) -> dict:
    """The event as it leaves the gateway: a shallow copy with host, event_id, event_type, timestamp.
    An event_id already there is kept (a re-sent event stays the same event)."""
    out = dict(event)
    out["host"] = gateway_id
    out.setdefault("event_id", uuid.uuid4().hex)
    out.setdefault("event_type", "alert")
    if "timestamp" not in out:
        out["timestamp"] = eve_timestamp(now())
    return out


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=_plain).encode()


def decode(entry_id, fields: dict) -> dict:
    """The event of one stream entry, checked: a dict with host, event_id, event_type and timestamp."""
    where = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    raw = fields.get(FIELD, fields.get("eve"))
    if raw is None:
        raise BadEvent(f"stream entry {where}: no 'eve' field (fields: {sorted(map(str, fields))})")
    try:
        event = json.loads(raw)
    except ValueError as exc:
        raise BadEvent(f"stream entry {where}: 'eve' is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise BadEvent(f"stream entry {where}: 'eve' is not a JSON object")
    for name in ("host", "event_id", "event_type", "timestamp"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise BadEvent(f"stream entry {where}: {name!r} is missing or not a non-empty string")
    if len(event["event_id"]) > 128 or len(event["host"]) > 64:
        raise BadEvent(f"stream entry {where}: event_id (<= 128) or host (<= 64 characters) too long")
    return event


def offers_key(key: str) -> str:
    """The stream of block offers and revocations beside the events stream."""
    return f"{key}:offers"


def is_offer(event: dict) -> bool:
    """A block offered to the fleet, or its revocation (iadm.sdn.sharing makes them)."""
    kind = event.get("event_type")
    if kind == "mitigation":
        return bool((event.get("mitigation") or {}).get("offer"))
    if kind == "unblock":
        return bool((event.get("unblock") or {}).get("revoke"))
    return kind == "feedback" and (event.get("feedback") or {}).get("verdict") == "not_attack"
