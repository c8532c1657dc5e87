"""Limits every traffic generator enforces: the topology's own hosts only, bounded rate and time."""
from __future__ import annotations

import ipaddress
import os

TOPOLOGY_NET = ipaddress.IPv4Network("10.0.0.0/24")
MAX_RATE, MAX_DURATION = 500_000, 120.0
MAX_SERVE = 900.0   # passive roles (servers, sinks) only answer, so they may outlive a generator


def check(parser, dst: str | None = None, rate: float | None = None, duration: float | None = None,
          iface: str | None = None, max_rate: float = MAX_RATE, max_duration: float = MAX_DURATION) -> None:
    """parser.error() (exit 2) on anything outside the limits."""
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
