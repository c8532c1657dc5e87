"""What a run shows: per attack, when it started, was detected and was blocked, what leaked, what it cost.

Every time comes from CLOCK_REALTIME: capture timestamps (tcpdump, kernel),
the monitor's detection time and the controller's barrier-confirmed install
time (both time.time()), so the differences are latencies.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iadm.alerts.log import read_events
from iadm.capture.decode import decode
from iadm.capture.pcapfile import read_pcap
from iadm.scenario.label import GRACE
from iadm.scenario.runner import RunResult
from iadm.scenario.spec import UNBLOCKABLE, host_ip, host_mac

BENIGN_HOST = "h1"


def packet_sources(pcap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Timestamps, source MACs and IPv4 source addresses (as integers; 0 for other packets)."""
    ts, macs, v4 = [], [], []
    for batch in read_pcap(str(pcap)):
        d = decode(batch)
        ts.append(d.ts)
        macs.append(d.src_mac)
        mapped = (d.src_hi == 0) & ((d.src_lo >> np.uint64(32)) == np.uint64(0xFFFF))
        v4.append(np.where(mapped, d.src_lo & np.uint64(0xFFFFFFFF), np.uint64(0)))
    if not ts:
        return np.zeros(0), np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
    return np.concatenate(ts), np.concatenate(macs), np.concatenate(v4)


def _in_net(v4: np.ndarray, prefix: str) -> np.ndarray:
    net = ipaddress.IPv4Network(prefix)
    shift = np.uint64(32 - net.prefixlen)
    return (v4 >> shift) == np.uint64(int(net.network_address) >> (32 - net.prefixlen))


def packet_times(pcap) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and source MACs (as integers) of every packet of a capture."""
    ts, macs = [], []
    for batch in read_pcap(str(pcap)):
        d = decode(batch)
        ts.append(d.ts)
        macs.append(d.src_mac)
    if not ts:
        return np.zeros(0), np.zeros(0, dtype=np.uint64)
    return np.concatenate(ts), np.concatenate(macs)


@dataclass
class AttackOutcome:
    name: str
    start: float                    # window start (generator launched)
    first_packet: float | None      # first attack packet at the victim
    detected: float | None          # the monitor's first alert about an attacking host
    blocked: float | None           # the drop rule confirmed on the switch
    before: int                     # attack packets at the victim before the block
    after: int                      # ... and after it
    benign_lost: int                # Host1's requests to Host2 unanswered during the attack
    blocked_hosts: list
    kind: str = ""
    expected_technique: str = ""    # what the scenario says it is (its kind's technique)
    techniques: list = field(default_factory=list)   # named by the alerts about the attacker (metadata.technique)
    block_matches: list = field(default_factory=list)  # the drop rules' matches (eth_src, in_port)
    mitigation: str = ""            # "MAC block", "shape drop", "rate limit" (the first one installed)
    block_ids: list = field(default_factory=list)      # the controller's ids of the mitigations
    uplink: bool = False            # came through the uplink (r1), sources forged in a prefix

    @property
    def blockable(self) -> bool:
        return self.kind not in UNBLOCKABLE

    @property
    def named(self) -> bool:
        """Detected with the technique it is (any technique when the scenario gives none)."""
        return self.detected is not None and (not self.expected_technique
                                               or self.expected_technique in self.techniques)

    @property
    def passed(self) -> bool:
        """Blocked; or, for a kind that cannot be blocked by design, detected and named."""
        return self.blocked is not None if self.blockable else self.named

    @property
    def detection_latency(self) -> float | None:
        return self.detected - self.first_packet if self.detected and self.first_packet else None

    @property
    def time_to_block(self) -> float | None:
        return self.blocked - self.first_packet if self.blocked and self.first_packet else None


_PROTO_OF_KIND = {"reflection": 17, "udp-flood": 17, "syn-flood": 6}


def _mitigation(verdict: dict) -> str:
    match = verdict.get("match") or {}
    if "eth_src" in match:
        return "MAC block"
    if "ipv4_src" in match:
        return "source block"
    return "rate limit" if verdict.get("action") == "rate_limit" else "shape drop"


def _uplink_outcome(w, events, victims, failed, queued: float = 0.0) -> AttackOutcome:
    """An attack through the uplink: its packets are r1's MAC and a source in the window's prefix;
    its mitigation is a verdict on its shape (toward the target, its protocol), not on a host."""
    ts, src, v4 = victims.get(w.target, (np.zeros(0), np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)))
    macs = np.array([int(m.replace(":", ""), 16) for m in w.macs], dtype=np.uint64)
    mine = ts[np.isin(src, macs) & _in_net(v4, w.src_net) & (ts >= w.start - 0.5) & (ts <= w.end + GRACE)]
    victim, proto = host_ip(w.target), _PROTO_OF_KIND.get(w.kind)
    during = [e for e in events if w.start - 0.5 <= e["_ts"] <= w.end + 5]
    about = [e for e in during if e.get("src_mac") in w.macs
             or (e.get("src_mac") is None and victim in (e.get("dest_ip"), e.get("src_ip"))
                 and str(e.get("proto", "")).lower() == {17: "udp", 6: "tcp"}.get(proto))]
    shapes = [e["verdict"] for e in about if e.get("verdict", {}).get("installed_on")
              and e["verdict"].get("action") in ("block", "rate_limit")
              and (e["verdict"].get("match") or {}).get("ipv4_dst") == victim
              and (e["verdict"].get("match") or {}).get("ip_proto") == proto]
    shapes.sort(key=lambda v: v["installed_at"])
    blocked = shapes[0]["installed_at"] if shapes else None
    named = _techniques(about)
    matches = []
    for v in shapes:
        if v.get("match") not in matches:
            matches.append(v.get("match"))
    return AttackOutcome(
        name=w.name, start=w.start, first_packet=float(mine.min()) if len(mine) else None,
        detected=min((e["_ts"] for e in about), default=None), blocked=blocked,
        before=int((mine < blocked).sum()) if blocked else len(mine),
        after=int((mine >= blocked + queued).sum()) if blocked else 0,
        benign_lost=int(((failed >= w.start) & (failed <= w.end + GRACE)).sum()),
        blocked_hosts=sorted({str(v["match"]["eth_src"]) for v in shapes if "eth_src" in (v.get("match") or {})}),
        kind=w.kind, expected_technique=getattr(w, "technique", ""), techniques=named, block_matches=matches,
        mitigation=_mitigation(shapes[0]) if shapes else "", block_ids=[v.get("block_id") for v in shapes],
        uplink=True)


def _techniques(events) -> list[str]:
    """The techniques the alerts named, in the order they were first named."""
    named = []
    for e in sorted(events, key=lambda e: e["_ts"]):
        for t in (e.get("alert", {}).get("metadata", {}) or {}).get("technique", []) or []:
            if t and t not in named:
                named.append(t)
    return named


def outcomes(result: RunResult) -> list[AttackOutcome]:
    events = list(read_events(str(result.alert_log))) if result.alert_log and result.alert_log.exists() else []
    sources = {host: packet_sources(path) for host, path in result.victim_pcaps.items() if path.exists()}
    victims = {host: v[:2] for host, v in sources.items()}
    failed = np.array(result.devices.get(BENIGN_HOST, {}).get("failed_at", []), dtype=float)
    out = []
    for w in result.windows:
        # a shaped link's queue still holds what the switch forwarded before the rule: those packets
        # reach the victim up to its queue's length after the mitigation, and are not leaks past it
        queued = float(result.queued.get(w.target, 0.0))
        if getattr(w, "src_net", ""):
            out.append(_uplink_outcome(w, events, sources, failed, queued))
            continue
        macs = np.array([int(m.replace(":", ""), 16) for m in w.macs], dtype=np.uint64)
        ts, src = victims.get(w.target, (np.zeros(0), np.zeros(0, dtype=np.uint64)))
        mine = ts[np.isin(src, macs) & (ts >= w.start - 0.5) & (ts <= w.end + GRACE)]
        about = [e for e in events if e.get("src_mac") in w.macs and w.start - 0.5 <= e["_ts"] <= w.end + 5]
        blocks = [e["verdict"] for e in about if e.get("verdict", {}).get("installed_on")
                  and e["verdict"].get("action") == "block"]
        blocked = min((b["installed_at"] for b in blocks), default=None)
        named = _techniques(about)
        matches = []
        for b in sorted(blocks, key=lambda b: b["installed_at"]):
            m = b.get("match") or {}
            if m not in matches:
                matches.append(m)
        out.append(AttackOutcome(
            name=w.name, start=w.start, first_packet=float(mine.min()) if len(mine) else None,
            detected=min((e["_ts"] for e in about), default=None), blocked=blocked,
            before=int((mine < blocked).sum()) if blocked else len(mine),
            after=int((mine >= blocked + queued).sum()) if blocked else 0,
            benign_lost=int(((failed >= w.start) & (failed <= w.end + GRACE)).sum()),
            blocked_hosts=sorted({str(b.get("match", {}).get("eth_src")) for b in blocks}),
            kind=w.kind, expected_technique=getattr(w, "technique", ""), techniques=named, block_matches=matches,
            mitigation=_mitigation(min(blocks, key=lambda b: b["installed_at"])) if blocks else "",
            block_ids=[b.get("block_id") for b in sorted(blocks, key=lambda b: b["installed_at"])]))
    return out


def _t(value: float | None, t0: float) -> str:
    return f"t+{value - t0:6.2f}s" if value is not None else "      -  "


def _ms(value: float | None) -> str:
    return f"{value * 1000:7.0f} ms" if value is not None else "        -"


def _technique(r: AttackOutcome) -> str:
    """The technique the alerts named: the expected one first, others after it; '!' when it is missing."""
    if r.detected is None:
        return "-"
    others = [t for t in r.techniques if t != r.expected_technique]
    if r.expected_technique and r.expected_technique in r.techniques:
        return ",".join([r.expected_technique] + others)
    return ("! " if r.expected_technique else "") + (",".join(others) or "none")


def _match(r: AttackOutcome) -> str:
    if r.blocked is None:
        return f"not blockable: {UNBLOCKABLE[r.kind]}" if not r.blockable else "-"
    m = r.block_matches[0] if r.block_matches else {}
    if r.uplink:   # no host: the flood's shape
        return f"{r.mitigation}: " + _shape({k: v for k, v in m.items() if k != "eth_type"})
    who = m.get("eth_src") or m.get("ipv4_src") or "?"
    return f"{who} port {m['in_port']}" if m.get("in_port") is not None else str(who)


def _shape(match: dict) -> str:
    """A block with no source (shaped on its victim): its match fields."""
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(match.items())) + "}"


def table(result: RunResult, rows: list[AttackOutcome]) -> str:
    header = (f"{'attack':30} {'first packet':>12} {'detected':>11} {'technique named':16} {'blocked':>11} "
              f"{'blocked by (MAC, switch port)':30} {'detect lat.':>11} {'to block':>10} {'leaked before':>13} "
              f"{'after':>6} {'benign lost':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.name[:30]:30} {_t(r.first_packet, result.t0):>12} {_t(r.detected, result.t0):>11} "
                     f"{_technique(r)[:16]:16} {_t(r.blocked, result.t0):>11} {_match(r)[:30]:30} "
                     f"{_ms(r.detection_latency):>11} {_ms(r.time_to_block):>10} "
                     f"{r.before:>13,} {r.after:>6,} {r.benign_lost:>11}")
    wrong = [f"{r.name} (expected {r.expected_technique}, named {', '.join(r.techniques) or 'nothing'})"
             for r in rows if r.detected is not None and not r.named]
    if wrong:
        lines.append("technique not named: " + "; ".join(wrong))
    h1 = result.devices.get(BENIGN_HOST, {}).get("counts", {})
    sent = sum(c["sent"] for c in h1.values())
    answered = sum(c["answered"] for c in h1.values())
    per_service = ", ".join(f"{k} {v['answered']}/{v['sent']}" for k, v in h1.items())
    lines.append(f"\nbenign Host1 -> Host2 over the whole run: {answered}/{sent} requests answered ({per_service})")
    lines.append("blocks on the controller: " + (", ".join(
        f"{b['match'].get('eth_src') or b['match'].get('ipv4_src') or _shape(b['match'])} "
        f"({b['action']}: {b['reason'][:50]})"
        for b in result.blocks) or "none"))
    if result.alert_log:
        lines.append(f"alert log: {result.alert_log}  (review: iadm alerts {result.alert_log} --summary)")
    return "\n".join(lines)


def timeline(result: RunResult, rows: list[AttackOutcome], path, bin_seconds: float = 0.1) -> None:
    """Packets/s per host at the monitor port, attack windows shaded, detection and block marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts, src = packet_times(result.pcap)
    t0 = result.t0
    end = max([w.end for w in result.windows] + [ts.max() if len(ts) else t0]) - t0 + 2
    bins = np.arange(-2, end + bin_seconds, bin_seconds)
    hosts = ["h1", "h2"] + [f"d{i}" for i in range(1, 6)] + [f"a{i}" for i in range(1, 21)]
    names = {int(host_mac(h).replace(":", ""), 16): h for h in hosts}
    fig, ax = plt.subplots(figsize=(12, 5))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)   # more hosts than tab10's colours
    for mac in np.unique(src):
        mine = ts[src == mac] - t0
        if len(mine) < 10:
            continue
        counts, _ = np.histogram(mine, bins=bins)
        ax.plot(bins[:-1], np.maximum(counts / bin_seconds, 0.5), label=names.get(int(mac), f"{int(mac):012x}"),
                lw=1.2)
    previous_end = -np.inf
    level = 0
    for w, r in zip(result.windows, rows):
        ax.axvspan(w.start - t0, w.end - t0, color="tab:red", alpha=0.08)
        level = level + 1 if w.start < previous_end else 0    # overlapping windows: labels one below the other
        previous_end = max(previous_end, w.end) if level else w.end
        ax.text(w.start - t0 + 0.2, 0.97 - 0.05 * (level % 6), w.kind, transform=ax.get_xaxis_transform(),
                fontsize=8, va="top")
        if r.detected:
            ax.axvline(r.detected - t0, color="tab:orange", ls="--", lw=1)
        if r.blocked:
            ax.axvline(r.blocked - t0, color="black", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the background traffic started")
    ax.set_ylabel("packets/s at the monitor port (log)")
    ax.set_title(f"iadm scenario {result.outdir.name}: red = attack window, dashed = detected, "
                 f"solid = drop rule on the switch", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def delay_table(result: RunResult, rows: list[AttackOutcome], span: float = 10.0) -> str:
    """The victim's delay before, during and after each attack, from the mirror's capture: the
    server side of benign TCP handshakes to it (synack) and its answers to benign UDP requests
    (answer), and the one-way delay its own stamped reports show (owd, as their source), median in
    ms (and how many), over `span` s before the first attack packet, from it to the block (or the
    window's end), and `span` s after. A host slowed by a flood answers later."""
    import pandas as pd

    from iadm.flows.pipeline import FeaturePipeline
    from iadm.scenario.spec import host_ip
    if not result.pcap or not Path(result.pcap).exists():
        return ""
    pipe = FeaturePipeline(kind="flow", status_interval=1.0)
    frames = [f for batch in read_pcap(str(result.pcap)) for f in pipe.push(batch)] + pipe.finish()
    if not frames:
        return ""
    records = pd.concat(frames, ignore_index=True)
    attackers = {int(m.replace(":", ""), 16) for w in result.windows for m in w.macs}
    benign = records[~records["smac"].astype("uint64").isin(attackers)]
    daddr, stime = benign["daddr"].astype(str).to_numpy(), benign["stime"].to_numpy()
    saddr = benign["saddr"].astype(str).to_numpy()

    def cell(victim, lo, hi, column):
        about = saddr if column == "owd" else daddr   # owd is the sender's own delay
        values = benign[column].to_numpy()[(about == victim) & (stime >= lo) & (stime < hi)]
        values = values[np.isfinite(values)]
        return f"{np.median(values) * 1000:7.2f} ({len(values):>3})" if len(values) else f"{'-':>7} (  0)"

    header = (f"{'attack':30} {'victim':10} {'synack ms (n): before':>22} {'during':>13} {'after':>13} "
              f"{'answer ms (n): before':>22} {'during':>13} {'after':>13} "
              f"{'owd ms (n): before':>22} {'during':>13} {'after':>13}")
    lines = [header, "-" * len(header)]
    for w, r in zip(result.windows, rows):
        if not r.first_packet:
            continue
        victim, end = host_ip(w.target), r.blocked or w.end
        windows = ((r.first_packet - span, r.first_packet), (r.first_packet, end), (end, end + span))
        cells = [cell(victim, lo, hi, column) for column in ("synack", "answer", "owd") for lo, hi in windows]
        if any(not c.endswith("(  0)") for c in cells):
            lines.append(f"{r.name[:30]:30} {victim:10} " + " ".join(
                f"{c:>{22 if i % 3 == 0 else 13}}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def _per_second_rate(doc: dict, spans: list[tuple[float, float]], inside: bool) -> tuple[float, int]:
    """A device's answered requests per second over the whole seconds of its run that lie inside
    (or, with inside False, outside) the given spans; and how many seconds that was."""
    per_second, started = doc.get("per_second", []), doc.get("started_at")
    if not per_second or started is None:
        return float("nan"), 0
    picked = []
    for k, (answered, _bytes) in enumerate(per_second[:-1]):   # the last second is cut short
        lo, hi = started + k, started + k + 1
        hit = any(lo < b and hi > a for a, b in spans)
        if hit == inside:
            picked.append(answered)
    return (float(np.mean(picked)) if picked else float("nan")), len(picked)


def benign_during(result: RunResult, rows: list[AttackOutcome], uplink_only: bool = True) -> dict:
    """Per benign device talking to Host2: answered requests/s during the (uplink) floods, from
    their first packet to their window's end, against the same run's baseline: the seconds outside
    every attack window (stretched by GRACE)."""
    floods = [(r.first_packet or w.start, w.end + GRACE) for w, r in zip(result.windows, rows)
              if r.uplink or not uplink_only]
    every = [(w.start - 0.5, w.end + GRACE) for w in result.windows]
    out = {}
    for host, doc in sorted(result.devices.items()):
        base, base_n = _per_second_rate(doc, every, inside=False)
        during, during_n = _per_second_rate(doc, floods, inside=True)
        failed = np.array(doc.get("failed_at", []), dtype=float)
        lost = int(sum(((failed >= a) & (failed <= b)).sum() for a, b in floods))
        out[host] = {"baseline_per_s": base, "baseline_seconds": base_n, "during_per_s": during,
                     "during_seconds": during_n, "share": during / base if base and base == base else float("nan"),
                     "unanswered_during": lost}
    return out


def uplink_blocks(result: RunResult) -> list[dict]:
    """Every mitigation the run installed (alert log and the controller's list at the end) that
    blocks the router r1's MAC, or its whole port: the gateway cut off its uplink. Should be []."""
    router = host_mac("r1")
    port = int(result.uplink_port.rsplit("eth", 1)[1]) if result.uplink_port else None
    events = list(read_events(str(result.alert_log))) if result.alert_log and result.alert_log.exists() else []
    seen = [e["verdict"] for e in events if e.get("verdict", {}).get("installed_on")] + list(result.blocks)
    bad = []
    for v in seen:
        m = v.get("match") or {}
        whole_port = port is not None and m.get("in_port") == port and set(m) <= {"in_port"}
        if v.get("action") in ("block", "rate_limit") and (m.get("eth_src") == router or whole_port):
            bad.append(v)
    return bad


def _drop_figures(result: RunResult, r: AttackOutcome) -> tuple[int | None, int, float | None]:
    """(flood packets the switch dropped after the mitigation, read back from its entry or meter;
    flood packets that still reached the victim after it; the share dropped)."""
    dropped = None
    for block_id in r.block_ids:
        c = result.switch.get(block_id) or result.switch.get(str(block_id))
        if c is None:
            continue
        dropped = (dropped or 0) + (c["meter_dropped"] if "meter_dropped" in c else c["n_packets"] if c["drop"] else 0)
    share = dropped / (dropped + r.after) if dropped is not None and dropped + r.after else None
    return dropped, r.after, share


def uplink_table(result: RunResult, rows: list[AttackOutcome]) -> str:
    """The floods through the uplink and the LAN attackers side by side: which mitigation, how fast
    after the first flood packet at the victim, what the switch dropped after it (its counters),
    Host2's benign traffic during the floods against its baseline, and whether r1 was ever blocked."""
    header = (f"{'attack':36} {'mitigation':11} {'match on the switch':44} {'to mitigation':>13} "
              f"{'dropped after (switch)':>22} {'reached after':>13} {'dropped %':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        if not r.uplink and r.mitigation != "MAC block":
            continue
        m = r.block_matches[0] if r.block_matches else {}
        where = (_shape({k: v for k, v in m.items() if k != "eth_type"}) if r.uplink
                 else f"{m.get('eth_src')} port {m.get('in_port')}") if m else "-"
        dropped, after, share = _drop_figures(result, r)
        lines.append(f"{r.name[:36]:36} {r.mitigation or '-':11} {where[:44]:44} {_ms(r.time_to_block):>13} "
                     f"{'-' if dropped is None else f'{dropped:,}':>22} {after:>13,} "
                     f"{'-' if share is None else f'{100 * share:.2f}':>9}")
    uplink_rows = [r for r in rows if r.uplink]
    if uplink_rows:
        times = [r.time_to_block for r in uplink_rows if r.time_to_block is not None]
        shares = [s for s in (_drop_figures(result, r)[2] for r in uplink_rows) if s is not None]
        lines.append(f"\nuplink floods: mitigated {len(times)}/{len(uplink_rows)}, time to mitigation median "
                     f"{_ms(float(np.median(times))) if times else '-'} (target <= 500 ms); dropped after it "
                     f"{'min ' + format(100 * min(shares), '.2f') + '%' if shares else '-'} (target >= 99%)")
        for host, b in benign_during(result, rows).items():
            lines.append(f"benign {host} -> Host2 during the uplink floods: {b['during_per_s']:.2f} answered/s over "
                         f"{b['during_seconds']} s vs {b['baseline_per_s']:.2f}/s baseline ({b['baseline_seconds']} s "
                         f"outside attacks): {100 * b['share']:.0f}% (target >= 90%), {b['unanswered_during']} "
                         f"unanswered")
        bad = uplink_blocks(result)
        lines.append(f"uplink (r1 {host_mac('r1')}, port {result.uplink_port}) blocked: "
                     + ("never" if not bad else "YES: " + "; ".join(str(v.get("match")) for v in bad)))
    return "\n".join(lines)
