"""A one-line progress bar and status line on stderr (no dependency for one line of text)."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total_bytes: int, label: str, stream=None, every: float = 0.2):
        self.total = max(1, total_bytes)
        self.label = label
        self.stream = stream = stream or sys.stderr   # the stderr of now, not of import time
        self.every = every
        self.start = self.last = time.monotonic()
        self.enabled = stream.isatty()
        self.done_bytes = 0
        self.packets = 0

    def update(self, done_bytes: int | None = None, packets: int | None = None) -> None:
        if done_bytes is not None:
            self.done_bytes = done_bytes
        if packets is not None:
            self.packets = packets
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(1.0, self.done_bytes / self.total)
        bar = "#" * int(frac * 30)
        rate = self.packets / max(1e-9, now - self.start)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac:4.0%} {self.packets:,} packets {rate:,.0f}/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
