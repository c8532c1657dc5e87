"""What the controller decides, with no OpenFlow framework in sight.

The app layer (iadm.sdn.app) turns switch events into calls here and sends
back the pipeline operations these calls hand to `send(dpid, ops)`. The
verdict API calls `apply_verdict`. Tests drive this class against a fake
flow table.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from iadm.sdn import pipeline, sharing
from iadm.sdn.blockstore import Block, BlockStore
from iadm.sdn.verdicts import UPLINK, Allowlist, Verdict, VerdictError

log = logging.getLogger("iadm.controller")
SEEN_MACS = 4096   # new MACs whose port is remembered, learned or not


@dataclass
class SwitchState:
    monitor_port: int | None
    mac_ports: dict = field(default_factory=dict)
    uplink_port: int | None = None
    new_macs: dict = field(default_factory=dict)    # port -> deque of times a new MAC was learned there
    guarded: dict = field(default_factory=dict)     # port -> time its learning was stopped (a MAC flood)
    # MAC -> port of the latest new MACs, learned or not (a flood's MACs after the guard stopped
    # learning): where a guard verdict's MAC entered
    seen_at: OrderedDict = field(default_factory=OrderedDict)


class GatewayController:
    def __init__(self, *, store: BlockStore, allowlist: Allowlist, send, confirm=None,
                 monitor_port: int | str | None, packet_in_rate: int = 1000,
                 default_block_seconds: int = 300, max_hosts: int = 4096, alert_only: bool = False,
                 clock=time.time, uplink_port: int | str | None = None, port_new_macs: int = 50,
                 port_new_macs_seconds: float = 10.0, guard_seconds: int = 300, events=None,
                 gateway_id: str = "", shared_blocks: str = "off", shared_block_seconds: int = 600):
        self.store = store
        # events(doc): the fleet publisher (iadm.fleet.publisher), which never blocks; None: no fleet.
        # Another gateway's offers come in through apply_shared, under this gateway's policy.
        self.events = events
        self.gateway_id = gateway_id
        if shared_blocks not in sharing.POLICIES:
            raise ValueError(f"shared_blocks must be one of {', '.join(sharing.POLICIES)}, not {shared_blocks!r}")
        self.shared_blocks = shared_blocks
        self.shared_block_seconds = shared_block_seconds
        self.allowlist = allowlist
        self.send = send
        # confirm(dpid) -> bool waits until the switch has applied everything
        # sent so far (an OpenFlow barrier); None when send is synchronous.
        self.confirm = confirm
        self.monitor_port = monitor_port
        # the port toward the upstream router: every packet from outside enters there, with the
        # router's MAC, so neither that MAC nor the whole port is ever blocked (shapes are)
        self.uplink_port = uplink_port
        # Port guard: a port that brings more than port_new_macs new MACs within the window is
        # flooding the MAC table (macof): learning stops there for guard_seconds, and frames from
        # MACs it has not learned are dropped at that port; the MACs it knew keep working.
        self.port_new_macs = port_new_macs
        self.port_new_macs_seconds = port_new_macs_seconds
        self.guard_seconds = guard_seconds
        self.packet_in_rate = packet_in_rate
        self.default_block_seconds = default_block_seconds
        self.max_hosts = max_hosts
        self.alert_only = alert_only
        self.clock = clock
        self.switches: dict[int, SwitchState] = {}
        self.counts = {"verdicts": {}, "packet_ins": 0}   # read by the metrics
        self._lock = threading.RLock()

    # --- switch events -------------------------------------------------
    def resolve_monitor_port(self, ports: dict) -> int | None:
        """The monitor port number, given the switch's {name: number} ports."""
        return self._resolve(self.monitor_port, ports, "monitor port", "mirroring is off")

    @staticmethod
    def _resolve(port, ports: dict, what: str, consequence: str) -> int | None:
        if port is None or isinstance(port, int):
            return port
        if port in ports:
            return ports[port]
        log.error("%s %r is not on the switch (ports: %s); %s", what, port, ", ".join(sorted(ports)) or "none",
                  consequence)
        return None

    def switch_connected(self, dpid: int, ports: dict, meters: bool = True) -> None:
        """A switch (re)connected: give it a clean pipeline and every block still due."""
        if not meters:
            log.warning("switch %016x has no meters: packet-ins are not rate-limited", dpid)
        with self._lock:
            state = SwitchState(self.resolve_monitor_port(ports),
                                uplink_port=self._resolve(self.uplink_port, ports, "uplink port",
                                                          "router MACs are not protected by port"))
            self.switches[dpid] = state
            ops = pipeline.base_pipeline(self.packet_in_rate if meters else None)
            blocks = self.store.active()
            ops += [op for b in blocks for op in self._entries(b)]
        log.info("switch %016x connected: monitor port %s, %d block(s) restored",
                 dpid, state.monitor_port, len(blocks))
        self.send(dpid, ops)
        self._publish({"event_type": "health", "health": {"switch": f"{dpid:016x}", "state": "connected",
                                                          "blocks": len(blocks)}})

    def switch_disconnected(self, dpid: int) -> None:
        with self._lock:
            self.switches.pop(dpid, None)
        log.info("switch %016x disconnected", dpid)
        self._publish({"event_type": "health", "health": {"switch": f"{dpid:016x}", "state": "disconnected"}})

    def _publish(self, event: dict) -> None:
        if self.events is None:
            return
        try:
            self.events(event)
        except Exception:   # the fleet never stands in the way of blocking
            log.exception("fleet publisher failed; the block itself is in place")

    def packet_in(self, dpid: int, in_port: int, eth_src: str, eth_dst: str) -> None:
        """Learn where eth_src lives; the switch itself already forwarded the packet."""
        self.counts["packet_ins"] += 1
        eth_src = eth_src.lower()
        if int(eth_src[:2], 16) & 1:
            return  # a group address is never a source
        with self._lock:
            state = self.switches.get(dpid)
            if state is None:
                return
            previous = state.mac_ports.get(eth_src)
            if previous == in_port:
                return  # packet-ins queued before the learn entry landed
            if previous is None:
                state.seen_at[eth_src] = in_port
                state.seen_at.move_to_end(eth_src)
                if len(state.seen_at) > SEEN_MACS:
                    state.seen_at.popitem(last=False)
            if previous is None and len(state.mac_ports) >= self.max_hosts:
                log.warning("switch %016x: %d hosts learned, not learning %s", dpid, self.max_hosts, eth_src)
                return
            if self._guarding(state, in_port):
                return
            if previous is None and self._flooding(state, in_port):
                log.warning("switch %016x port %d: over %d new MACs in %g s: a MAC flood; learning stops there "
                            "for %d s and unknown sources are dropped at that port", dpid, in_port,
                            self.port_new_macs, self.port_new_macs_seconds, self.guard_seconds)
                state.guarded[in_port] = self.clock()
                self.counts["ports_guarded"] = self.counts.get("ports_guarded", 0) + 1
                ops = [pipeline.port_guard_entry(in_port, self.guard_seconds)]
            else:
                state.mac_ports[eth_src] = in_port
                ops = pipeline.learn_entries(in_port, eth_src, state.monitor_port, previous)
        self.send(dpid, ops)

    def _guarding(self, state: SwitchState, port: int) -> bool:
        since = state.guarded.get(port)
        if since is None:
            return False
        if self.clock() - since < self.guard_seconds:
            return True
        del state.guarded[port]
        return False

    def _flooding(self, state: SwitchState, port: int) -> bool:
        """One more new MAC at `port`: does it make the port a MAC flood? (never the uplink: a
        router brings no new MACs; never the monitor's port)"""
        if port in (state.uplink_port, state.monitor_port):
            return False
        times = state.new_macs.setdefault(port, deque())
        now = self.clock()
        times.append(now)
        while times and times[0] < now - self.port_new_macs_seconds:
            times.popleft()
        return len(times) > self.port_new_macs

    def flow_removed(self, dpid: int, cookie: int, reason: str, packets: int) -> None:
        if cookie & pipeline.COOKIE_KIND_MASK == pipeline.COOKIE_BLOCK:
            log.info("switch %016x: block %d removed (%s) after %d packets",
                     dpid, cookie & pipeline.COOKIE_ID_MASK, reason, packets)

    def where_is(self, mac: str) -> dict:
        """{dpid: port} where a MAC was learned (MAC-only verdicts are pinned to it)."""
        mac = mac.lower()
        with self._lock:
            return {dpid: s.mac_ports[mac] for dpid, s in self.switches.items() if mac in s.mac_ports}

    # --- verdicts ------------------------------------------------------
    def _entries(self, block: Block) -> list:
        left = block.remaining(self.clock())
        if block.action == "guard":
            return [pipeline.port_guard_entry(block.match["in_port"], left, pipeline.block_cookie(block.block_id))]
        if block.action == "rate_limit":
            return pipeline.rate_limit_ops(block.block_id, block.match, left, block.rate, block.kbps)
        return [pipeline.block_entry(block.block_id, block.match, left, drop=block.action == "block")]

    def _removal(self, block: Block) -> list:
        if block.action == "guard":
            with self._lock:
                for state in self.switches.values():
                    state.guarded.pop(block.match["in_port"], None)   # the port learns again
            return [pipeline.unguard(block.block_id)]
        ops = [pipeline.unblock(block.block_id)]
        if block.action == "rate_limit":
            ops.append(pipeline.MeterDelete(pipeline.block_meter_id(block.block_id)))
        return ops

    def _uplink_port(self) -> int:
        """in_port "uplink": the one uplink port of the switches (the same on each)."""
        with self._lock:
            ports = {s.uplink_port for s in self.switches.values() if s.uplink_port is not None}
        if len(ports) != 1:
            raise VerdictError(409, "no uplink port is configured (openflow.uplink_port)" if not ports else
                               f"the switches' uplink ports differ ({sorted(ports)}): give in_port", "in_port")
        return ports.pop()

    def _uplink_refusal(self, verdict: Verdict, in_port: int | None) -> VerdictError | None:
        """A block that would cut the gateway off its uplink: the router's MAC, or the whole port."""
        with self._lock:
            uplinks = {dpid: s.uplink_port for dpid, s in self.switches.items() if s.uplink_port is not None}
        if not uplinks:
            return None
        if verdict.src_mac and any(self.where_is(verdict.src_mac).get(d) == p for d, p in uplinks.items()):
            return VerdictError(403, f"{verdict.src_mac} is learned on the uplink port: the upstream router's MAC, "
                                     "which every packet from outside carries; send the attack's shape instead "
                                     "(dst_ip, ip_proto, dst_port, action rate_limit or block)", "src_mac")
        if in_port in uplinks.values() and verdict.src_mac is None and verdict.dst_ip is None:
            return VerdictError(403, f"in_port {in_port} is the uplink: all of it would cut the gateway off; "
                                     "narrow it with dst_ip (and ip_proto, dst_port)", "in_port")
        return None

    def _broadcast(self, ops: list) -> list[str]:
        """Send ops to every switch; the switches that confirmed them, as hex dpids."""
        with self._lock:
            dpids = list(self.switches)
        for dpid in dpids:
            self.send(dpid, ops)
        # Answer a verdict only once the entries are on the switch, so that the
        # sender's "blocked" means blocked and its timestamp is the block's.
        return [f"{dpid:016x}" for dpid in dpids if self.confirm is None or self.confirm(dpid)]

    def apply_verdict(self, verdict: Verdict) -> tuple[int, dict]:
        """Act on a validated verdict; returns (HTTP status, JSON document)."""
        result = (self._unblock(verdict) if verdict.action == "unblock" else
                  self._guard(verdict) if verdict.action == "guard" else self._block(verdict))
        counts = self.counts["verdicts"]
        counts[verdict.action] = counts.get(verdict.action, 0) + 1
        return result

    def _block(self, verdict: Verdict) -> tuple[int, dict]:
        protected_by = self.allowlist.covers(verdict)
        if protected_by:
            target = verdict.src_ip or verdict.src_mac
            log.warning("refused %s of allowlisted %s (entry %s), source %r, reason %r",
                        verdict.action, target, protected_by, verdict.source, verdict.reason)
            raise VerdictError(403, f"{target} is allowlisted ({protected_by}) and is never blocked",
                               "src_ip" if verdict.src_ip else "src_mac")
        inside = self.allowlist.covers_destination(verdict) if verdict.action == "block" else None
        if inside and verdict.src_ip is None and verdict.src_mac is None:
            raise VerdictError(403, f"dst_ip {verdict.dst_ip} holds allowlisted {inside}: traffic to it may be "
                                    "rate-limited (action rate_limit), never dropped", "dst_ip")
        action = "alert" if self.alert_only else verdict.action
        in_port = self._uplink_port() if verdict.in_port == UPLINK else verdict.in_port
        if verdict.src_mac and in_port is None:
            # Pin a MAC block to the port the MAC was learned on: a forger
            # cannot move the block onto another host's port by copying its MAC.
            ports = set(self.where_is(verdict.src_mac).values())
            in_port = ports.pop() if len(ports) == 1 else None
        refusal = self._uplink_refusal(verdict, in_port)
        if refusal is not None:
            log.warning("refused %s: %s (source %r)", verdict.action, refusal, verdict.source)
            raise refusal
        match = pipeline.block_match(verdict.src_ip, verdict.src_mac, in_port, verdict.dst_ip, verdict.ip_proto,
                                     verdict.src_port, verdict.dst_port)
        seconds = verdict.duration or self.default_block_seconds
        rate = verdict.rate_pps or verdict.rate_kbps or 0
        with self._lock:
            # A repeated verdict for the same target replaces the old block, so
            # it extends (or shortens) the block instead of stacking entries.
            replaced = self.store.find(match)
            for old in replaced:
                self.store.remove(old.block_id)
            block = self.store.add(action, match, seconds, verdict.reason, verdict.source, rate,
                                   kbps=verdict.rate_kbps is not None)
        ops = [op for old in replaced for op in self._removal(old)] + self._entries(block)
        installed_on = self._broadcast(ops)
        log.info("%s %s for %ds (block %d) on %s, source %r, reason %r", action, match, seconds,
                 block.block_id, installed_on or "no switch", verdict.source, verdict.reason)
        doc = block.as_json(self.clock())
        self._publish(sharing.mitigation_event(action, doc, verdict, sharing.offerable(verdict, self.allowlist)
                                               and action == "block", installed_on))
        return 201, {"block": doc, "replaced": [b.block_id for b in replaced],
                     "installed_on": installed_on, "installed_at": self.clock()}

    def _guard(self, verdict: Verdict) -> tuple[int, dict]:
        """A MAC flood's ingress port guarded (the port guard of packet_in, asked for by the
        monitor): learning stops there, frames from sources it has not learned are dropped at it,
        the hosts learned there keep working. The port: in_port, or where src_mac (a MAC the flood
        sent) was seen new. Never the uplink's or the monitor's; listed, persisted and unblocked
        by id like a block."""
        port = verdict.in_port
        with self._lock:
            if port is None:
                mac = verdict.src_mac
                ports = {p for s in self.switches.values() for p in (s.mac_ports.get(mac), s.seen_at.get(mac))
                         if p is not None}
                if len(ports) != 1:
                    raise VerdictError(404 if not ports else 409,
                                       f"{mac} was not seen at any port" if not ports else
                                       f"{mac} was seen at ports {sorted(ports)}: give in_port", "src_mac")
                port = ports.pop()
            if any(port in (s.uplink_port, s.monitor_port) for s in self.switches.values()):
                raise VerdictError(403, f"port {port} is the uplink's or the monitor's: never guarded", "in_port")
        if self.allowlist.covers(verdict):
            raise VerdictError(403, f"{verdict.src_mac} is allowlisted and is never acted on", "src_mac")
        action = "alert" if self.alert_only else "guard"
        match = {"in_port": port}
        seconds = verdict.duration or self.guard_seconds
        with self._lock:
            replaced = [b for b in self.store.find(match) if b.action == action]
            for old in replaced:
                self.store.remove(old.block_id)
            block = self.store.add(action, match, seconds, verdict.reason, verdict.source)
            if action == "guard":
                for state in self.switches.values():
                    state.guarded[port] = self.clock()
        ops = [op for old in replaced for op in self._removal(old)] + self._entries(block)
        installed_on = self._broadcast(ops)
        log.info("%s port %d for %ds (block %d) on %s, source %r, reason %r", action, port, seconds, block.block_id,
                 installed_on or "no switch", verdict.source, verdict.reason)
        doc = block.as_json(self.clock())
        self._publish(sharing.mitigation_event(action, doc, verdict, False, installed_on))
        return 201, {"block": doc, "replaced": [b.block_id for b in replaced],
                     "installed_on": installed_on, "installed_at": self.clock()}

    def _unblock(self, verdict: Verdict) -> tuple[int, dict]:
        with self._lock:
            if verdict.block_id is not None:
                targets = [b for b in self.store.active() if b.block_id == verdict.block_id]
            elif verdict.src_mac and verdict.in_port is None:
                # Whatever port a MAC block was pinned to.
                mac = verdict.src_mac.lower()
                targets = [b for b in self.store.active() if b.match.get("eth_src") == mac]
            else:
                targets = self.store.find(
                    pipeline.block_match(verdict.src_ip, verdict.src_mac, verdict.in_port))
            for block in targets:
                self.store.remove(block.block_id)
        if not targets:
            raise VerdictError(404, "no active block matches", "block_id" if verdict.block_id else None)
        removed_on = self._broadcast([op for b in targets for op in self._removal(b)])
        log.info("unblocked %s", [b.block_id for b in targets])
        self._publish(sharing.unblock_event(targets, removed_on))
        return 200, {"unblocked": [b.block_id for b in targets], "removed_on": removed_on}

    def apply_shared(self, event: dict) -> str:
        """One event of the fleet's offers stream, under this gateway's policy; what was done, for the log."""
        what, detail = sharing.decide(event, self.gateway_id, self.shared_blocks, self.allowlist,
                                      self.shared_block_seconds)
        if what == "ignore":
            return f"ignored: {detail}"
        if what == "revoke":
            with self._lock:
                ids = [b.block_id for b in self.store.active() if b.source.startswith(sharing.FLEET_SOURCE)
                       and b.match.get("ipv4_src") in detail and set(b.match) == {"eth_type", "ipv4_src"}]
            for block_id in ids:
                self.apply_verdict(Verdict("unblock", block_id=block_id))
            log.info("fleet: %s revoked %s: shared block(s) %s withdrawn", event.get("host"), detail, ids)
            return f"revoked {ids}"
        with self._lock:
            own = [b for b in self.store.find(pipeline.block_match(detail.src_ip))
                   if not b.source.startswith(sharing.FLEET_SOURCE)]
        if own:
            return f"ignored: {detail.src_ip} is already blocked here by {own[0].source or 'this gateway'}"
        try:
            _, doc = self.apply_verdict(detail)
        except VerdictError as exc:
            log.warning("fleet: offer of %s from %s refused: %s", detail.src_ip, event.get("host"), exc)
            return f"refused: {exc}"
        log.info("fleet: %s's offer of %s applied as %s for %ds (block %d)", event.get("host"), detail.src_ip,
                 detail.action, detail.duration, doc["block"]["block_id"])
        return f"applied block {doc['block']['block_id']}"

    def blocks(self) -> list[dict]:
        now = self.clock()
        return [b.as_json(now) for b in self.store.active()]
