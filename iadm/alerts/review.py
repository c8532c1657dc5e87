"""Alert review for operators: filters, a readable table, a summary."""
from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from iadm.alerts.log import eve_timestamp

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SOURCES = ("rule", "behaviour", "inspector", "model", "zscore")


def parse_time(text: str, now: float | None = None) -> float:
    """An ISO-8601 time (local time when it has no zone), epoch seconds, or an age: 90s, 10m, 2h, 1d."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return (time.time() if now is None else now) - float(relative.group(1)) * _UNIT[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"time {text!r}: expected ISO-8601 (2026-11-22T10:00), epoch seconds, "
                         f"or an age such as 10m") from None


@dataclass
class AlertFilter:
    since: float | None = None
    until: float | None = None
    src: str | None = None
    category: str | None = None
    sid: int | None = None
    source: str | None = None

    def __post_init__(self):
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"source {self.source!r}: expected one of {', '.join(SOURCES)}")

    def __call__(self, event: dict) -> bool:
        ts = event["_ts"]
        alert = event.get("alert") or {}
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts > self.until:
            return False
        if self.src is not None and self.src.lower() not in (str(event.get("src_ip", "")).lower(),
                                                             str(event.get("src_mac", "")).lower()):
            return False
        if self.category is not None and str(alert.get("category", "")).lower() != self.category.lower():
            return False
        if self.sid is not None and alert.get("signature_id") != self.sid:
            return False
        if self.source is not None and self.source not in str(event.get("verdict_source", "")).split("+"):
            return False
        return True


def _when(ts: float) -> str:
    return eve_timestamp(ts)[:23].replace("T", " ")


def table(events: list[dict]) -> str:
    header = ("time (UTC)", "src", "dest", "proto", "category", "sid", "source", "action", "signature")
    rows = []
    for e in events:
        alert = e.get("alert") or {}
        rows.append((_when(e["_ts"]), f"{e.get('src_ip', '')}:{e.get('src_port', '')}",
                     f"{e.get('dest_ip', '')}:{e.get('dest_port', '')}", str(e.get("proto", "")),
                     str(alert.get("category", "")), str(alert.get("signature_id", "") or ""),
                     str(e.get("verdict_source", "")), str(alert.get("action", "")),
                     str(alert.get("signature", ""))[:70]))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def summary(events: list[dict]) -> str:
    """Counts per technique (with its ATT&CK id), category, source address and rule, with first and last seen."""
    groups = {"technique": defaultdict(list), "category": defaultdict(list), "source address": defaultdict(list),
              "rule": defaultdict(list)}
    for e in events:
        alert = e.get("alert") or {}
        meta = alert.get("metadata") or {}
        technique = " ".join((meta.get("technique") or ["-"])[:1] + (meta.get("mitre_technique_id") or [])[:1])
        groups["technique"][technique].append(e["_ts"])
        groups["category"][str(alert.get("category", ""))].append(e["_ts"])
        groups["source address"][str(e.get("src_ip") or e.get("src_mac") or "")].append(e["_ts"])
        sid = alert.get("signature_id")
        rule = f"{sid} {alert.get('signature', '')}"[:70] if sid else "(model or z-score only)"
        groups["rule"][rule].append(e["_ts"])
    out = [f"{len(events)} alert(s)"]
    for title, group in groups.items():
        out.append(f"\nper {title}:")
        width = max([len(title)] + [len(k) for k in group])
        out.append(f"  {title.ljust(width)}  {'count':>7}  {'first seen (UTC)':23}  last seen (UTC)")
        for key, stamps in sorted(group.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            out.append(f"  {key.ljust(width)}  {len(stamps):>7}  {_when(min(stamps)):23}  {_when(max(stamps))}")
    return "\n".join(out)
