"""Limits every traffic generator enforces: the topology's own hosts only, bounded rate and time."""
from __future__ import annotations

import ipaddress
import os

TOPOLOGY_NET = ipaddress.IPv4Network("10.0.0.0/24")
# Source prefixes a generator may forge: the topology's own, and the documentation and
# benchmarking prefixes that the uplink router r1 stands for (they exist only in the namespaces).
FORGEABLE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/24", "192.0.2.0/24", "198.51.100.0/24",
                                                "203.0.113.0/24", "198.18.0.0/15")]
MAX_RATE, MAX_DURATION = 500_000, 120.0
MAX_SERVE = 900.0   # passive roles (servers, sinks) only answer, so they may outlive a generator


def check(parser, dst: str | None = None, rate: float | None = None, duration: float | None = None,
          iface: str | None = None, max_rate: float = MAX_RATE, max_duration: float = MAX_DURATION,
          src_net: str | None = None) -> None:
    """parser.error() (exit 2) on anything outside the limits."""
    if src_net is not None:
        try:
            net = ipaddress.IPv4Network(src_net)
        except ValueError:
            parser.error(f"{src_net} is not an IPv4 prefix")
        if not any(net.subnet_of(allowed) for allowed in FORGEABLE):
            parser.error(f"{src_net} is not inside {', '.join(map(str, FORGEABLE))}: refused")
    if dst is not None and ipaddress.IPv4Address(dst) not in TOPOLOGY_NET:
        parser.error(f"{dst} is outside the topology's {TOPOLOGY_NET}: refused")
    if iface is not None and os.path.exists(f"/sys/class/net/{iface}/device"):
        parser.error(f"{iface} is a physical interface: refused")
    if rate is not None and not 0 < rate <= max_rate:
        parser.error(f"rate must be in (0, {max_rate:,}]")
    if duration is not None and not 0 < duration <= max_duration:
        parser.error(f"duration must be in (0, {max_duration:.0f}] seconds")


class Pacer:
    """Spreads `rate` events a second over `duration` seconds: yields how many are due now."""

    def __init__(self, rate: float, duration: float, clock):
        self.rate, self.clock = rate, clock
        self.start = clock()
        self.end = self.start + duration
        self.done = 0

    def due(self) -> int:
        now = self.clock()
        if now >= self.end:
            return -1
        return int((now - self.start) * self.rate) - self.done
