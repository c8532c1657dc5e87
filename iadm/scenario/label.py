"""Labels by injection timing.

A window is one attack: the hosts that ran it (their MACs), and its start and
end, both taken with time.time() around the generator process. Capture
timestamps come from the kernel's CLOCK_REALTIME, the same clock, so the two
compare directly.

The rule, for a flow record r and a window w:
    r belongs to w  when  r's source MAC is one of w's attackers
                    and   r.stime <= w.end + grace  and  r.ltime >= w.start
i.e. the flow was started by an attacking host and overlaps the window
(stretched by `grace` at the end: packets in flight and queues drain after the
generator exits). A flow that straddles an edge is labelled by the window it
overlaps; if it overlaps two windows of the same host, the one it overlaps most.
The source MAC, not the source address, decides, so forged-source floods are
labelled by who really sent them. Everything else is Normal.

A window through the uplink (its host the router r1, whose MAC every packet from outside
carries, benign ones too) also names the prefix its sources were forged in (`src_net`): there
the record's source address must be inside it as well.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import ipaddress

import numpy as np
import pandas as pd

GRACE = 1.0


@dataclass
class Window:
    name: str
    kind: str
    hosts: list
    macs: list
    target: str
    start: float
    end: float
    category: str
    subcategory: str
    technique: str = ""     # what an alert should name (alert.metadata.technique)
    src_net: str = ""       # through the uplink: the prefix of the forged sources ("" on the LAN)

    def as_json(self) -> dict:
        return asdict(self)


def _mac_int(text: str) -> int:
    return int(text.replace(":", ""), 16)


def in_prefix(addresses, prefix: str) -> np.ndarray:
    """Per address (text), whether it is an IPv4 address inside `prefix`; parsed once per distinct value."""
    net = ipaddress.IPv4Network(prefix)
    values, inverse = np.unique(np.asarray(addresses, dtype=object).astype(str), return_inverse=True)

    def inside(text: str) -> bool:
        try:
            return ipaddress.IPv4Address(text) in net
        except ValueError:
            return False
    return np.array([inside(v) for v in values], dtype=bool)[inverse.ravel()] if len(values) else \
        np.zeros(0, dtype=bool)


def label_by_windows(records: pd.DataFrame, windows: list[Window], grace: float = GRACE) -> pd.DataFrame:
    out = records.assign(attack=0, category="Normal", subcategory="Normal")
    if not len(out):
        return out
    smac = pd.to_numeric(out["smac"], errors="coerce").fillna(0).to_numpy(dtype=np.uint64)
    stime = out["stime"].to_numpy(dtype=float)
    ltime = out["ltime"].to_numpy(dtype=float)
    best = np.full(len(out), -1, dtype=np.int64)
    best_overlap = np.full(len(out), -np.inf)
    for i, w in enumerate(windows):
        mine = np.isin(smac, np.array([_mac_int(m) for m in w.macs], dtype=np.uint64))
        if getattr(w, "src_net", ""):
            mine &= in_prefix(out["saddr"].to_numpy(), w.src_net)
        overlap = np.minimum(ltime, w.end + grace) - np.maximum(stime, w.start)
        inside = mine & (stime <= w.end + grace) & (ltime >= w.start) & (overlap > best_overlap)
        best[inside] = i
        best_overlap[inside] = overlap[inside]
    hit = best >= 0
    out.loc[hit, "attack"] = 1
    out.loc[hit, "category"] = np.array([w.category for w in windows], dtype=object)[best[hit]]
    out.loc[hit, "subcategory"] = np.array([w.subcategory for w in windows], dtype=object)[best[hit]]
    return out


def summary_table(labelled: pd.DataFrame) -> str:
    counts = labelled.groupby(["attack", "category", "subcategory"]).size().reset_index(name="flows")
    lines = [f"{'attack':>6}  {'category':15} {'subcategory':18} {'records':>9}"]
    for row in counts.itertuples(index=False):
        lines.append(f"{row.attack:>6}  {row.category:15} {row.subcategory:18} {row.flows:>9,}")
    lines.append(f"{'':>6}  {'total':34} {len(labelled):>9,}")
    return "\n".join(lines)
