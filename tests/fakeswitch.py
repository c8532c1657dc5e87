"""A fake OpenFlow 1.3 switch for unit tests (after Faucet's FakeOFTable).

It takes the pipeline operations of iadm.sdn.pipeline and answers the one
question that matters: a packet enters at port P; which ports does it leave
by? It implements the subset of OpenFlow the pipeline uses: priorities,
exact and masked matches, apply-actions outputs (FLOOD, CONTROLLER), goto,
meters (counted; the rate-limit blocks' meters also drop what exceeds their rate per second of
the fake clock, the packet-in meter never does), hard and idle timeouts on a fake clock,
cookie-masked and match-filtered deletes, and per-entry packet counters.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from iadm.sdn import pipeline
from iadm.sdn.blockstore import BlockStore
from iadm.sdn.core import GatewayController
from iadm.sdn.verdicts import Allowlist


@dataclass
class Installed:
    entry: pipeline.FlowEntry
    installed_at: float
    last_hit: float
    packets: int = 0


def _field_matches(field: str, want, have) -> bool:
    if have is None:
        return False
    if field == "ipv4_src" or field == "ipv4_dst":
        value, mask = (want if isinstance(want, tuple) else (want, "255.255.255.255"))
        net = ipaddress.IPv4Network(f"{value}/{mask}", strict=False)
        return ipaddress.IPv4Address(have) in net
    if isinstance(want, tuple):
        value, mask = want
        if field.startswith("eth_"):
            to_int = lambda m: int(m.replace(":", ""), 16)
            return to_int(have) & to_int(mask) == to_int(value) & to_int(mask)
        return have & mask == value & mask
    if isinstance(want, str):
        return want.lower() == str(have).lower()
    return want == have


class FakeSwitch:
    def __init__(self, ports, clock):
        self.ports = list(ports)
        self.clock = clock
        self.flows: list[Installed] = []
        self.meters: dict[int, pipeline.MeterEntry] = {}
        self.meter_hits: dict[int, int] = {}
        self._meter_second: dict[int, list] = {}   # meter -> [second, packets in it]

    # --- installing ----------------------------------------------------
    def apply(self, ops) -> None:
        for op in ops:
            if isinstance(op, pipeline.FlowEntry):
                self._add(op)
            elif isinstance(op, pipeline.FlowDelete):
                self.flows = [f for f in self.flows if not self._deleted_by(f.entry, op)]
            elif isinstance(op, pipeline.MeterEntry):
                self.meters[op.meter_id] = op
            elif isinstance(op, pipeline.MeterDelete):
                if any(f.entry.meter == op.meter_id for f in self.flows):
                    raise AssertionError(f"meter {op.meter_id} deleted while a flow still uses it")
                self.meters.pop(op.meter_id, None)
            else:
                raise TypeError(op)

    def _add(self, entry: pipeline.FlowEntry) -> None:
        if entry.meter is not None and entry.meter not in self.meters:
            raise AssertionError(f"flow uses meter {entry.meter}, which is not installed")
        for port in (p for kind, p in entry.actions if kind == "output"):
            if port not in (pipeline.FLOOD, pipeline.CONTROLLER) and port not in self.ports:
                raise AssertionError(f"output to port {port}, which the switch does not have")
        # ADD with the same table, priority and match replaces (counters reset).
        self.flows = [f for f in self.flows
                      if not (f.entry.table == entry.table and f.entry.priority == entry.priority
                              and f.entry.match == entry.match)]
        now = self.clock()
        self.flows.append(Installed(entry, now, now))

    @staticmethod
    def _deleted_by(entry: pipeline.FlowEntry, op: pipeline.FlowDelete) -> bool:
        if op.table is not None and entry.table != op.table:
            return False
        if entry.cookie & op.cookie_mask != op.cookie & op.cookie_mask:
            return False
        # Non-strict delete: every field of the delete's match is in the entry's, equal.
        return all(entry.match.get(k) == v for k, v in op.match.items())

    def _expire(self) -> None:
        now = self.clock()
        self.flows = [f for f in self.flows
                      if not (f.entry.hard_timeout and now - f.installed_at >= f.entry.hard_timeout)
                      and not (f.entry.idle_timeout and now - f.last_hit >= f.entry.idle_timeout)]

    # --- asking --------------------------------------------------------
    def table(self, table_id: int) -> list[pipeline.FlowEntry]:
        self._expire()
        return [f.entry for f in self.flows if f.entry.table == table_id]

    def counter(self, cookie: int) -> int:
        self._expire()
        return sum(f.packets for f in self.flows if f.entry.cookie == cookie)

    def process(self, in_port: int, **headers) -> list:
        """Outputs of a packet entering at in_port: a list of port numbers and "controller".

        A list, not a set, so that a test can see a port reached twice.
        """
        self._expire()
        packet = dict(headers, in_port=in_port)
        outputs = []
        table_id = 0
        while table_id is not None:
            candidates = [f for f in self.flows if f.entry.table == table_id
                          and all(_field_matches(k, v, packet.get(k)) for k, v in f.entry.match.items())]
            if not candidates:
                break  # no table-miss entry: drop
            best = max(candidates, key=lambda f: f.entry.priority)
            top = [f for f in candidates if f.entry.priority == best.entry.priority]
            assert len(top) == 1, f"ambiguous match in table {table_id}: {[f.entry for f in top]}"
            best.packets += 1
            best.last_hit = self.clock()
            if best.entry.meter is not None:
                self.meter_hits[best.entry.meter] = self.meter_hits.get(best.entry.meter, 0) + 1
                if best.entry.meter >= pipeline.BLOCK_METER_BASE and self._over_rate(best.entry.meter):
                    return []   # the meter's drop band: the packet goes nowhere
            for kind, port in best.entry.actions:
                if port == pipeline.FLOOD:
                    outputs += [p for p in self.ports if p != in_port]
                elif port == pipeline.CONTROLLER:
                    outputs.append("controller")
                elif port != in_port:  # OpenFlow never sends back out of in_port without IN_PORT
                    outputs.append(port)
            table_id = best.entry.goto
        return outputs


    def _over_rate(self, meter_id: int) -> bool:
        meter = self.meters[meter_id]
        second = int(self.clock())
        window = self._meter_second.get(meter_id)
        if window is None or window[0] != second:
            window = self._meter_second[meter_id] = [second, 0]
        window[1] += 1
        return window[1] > meter.rate_pps


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


H1, H2, MON, H3 = 1, 2, 3, 4
MAC = {H1: "00:00:00:00:00:01", H2: "00:00:00:00:00:02", MON: "00:00:00:00:00:fd", H3: "00:00:00:00:00:04"}
IP = {H1: "10.0.0.1", H2: "10.0.0.2", MON: "10.0.0.253", H3: "10.0.0.4"}
DPID = 1


class Gateway:
    """A GatewayController wired to one fake switch (ports 1-4, monitor on 3)."""

    def __init__(self, tmp_path, allowlist=("10.0.0.253",), monitor_port="s1-eth3", uplink_port=None):
        self.clock = FakeClock()
        self.switch = FakeSwitch([H1, H2, MON, H3], self.clock)
        self.sent = []
        self.confirming = True  # False: the switch stops answering barriers
        self.store_path = str(tmp_path / "blocks.sqlite")
        self.core = GatewayController(
            store=BlockStore(self.store_path, clock=self.clock), allowlist=Allowlist(allowlist),
            send=self._send, confirm=lambda dpid: self.confirming, monitor_port=monitor_port, packet_in_rate=100, clock=self.clock,
            uplink_port=uplink_port)
        self.ports = {f"s1-eth{p}": p for p in (H1, H2, MON, H3)}
        self.core.switch_connected(DPID, self.ports)

    def _send(self, dpid, ops):
        self.sent.append((dpid, list(ops)))
        self.switch.apply(ops)

    def send_packet(self, in_port, dst_port=None, eth_dst=None, ipv4=True, src_ip=None, eth_src=None,
                    dst_ip=None, ip_proto=None, tcp_dst=None, udp_dst=None):
        """A packet through the fake switch, with the controller learning from its packet-ins."""
        headers = {"eth_src": eth_src or MAC[in_port],
                   "eth_dst": eth_dst or (MAC[dst_port] if dst_port else "ff:ff:ff:ff:ff:ff")}
        if ipv4:
            headers.update(eth_type=0x0800, ipv4_src=src_ip or IP.get(in_port, "10.0.0.99"),
                           ipv4_dst=dst_ip or (IP.get(dst_port) if dst_port else None))
            for name, value in (("ip_proto", ip_proto), ("tcp_dst", tcp_dst), ("udp_dst", udp_dst)):
                if value is not None:
                    headers[name] = value
        else:
            headers.update(eth_type=0x0806)
        outputs = self.switch.process(in_port, **headers)
        if "controller" in outputs:
            self.core.packet_in(DPID, in_port, headers["eth_src"], headers["eth_dst"])
        return outputs

    def learn_all(self):
        for port in (H1, H2, MON, H3):
            self.send_packet(port)
