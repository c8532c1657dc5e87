"""Packets to feature records: decode -> flow table -> sliding-window aggregates."""
from __future__ import annotations

import numpy as np
import pandas as pd

from iadm.capture.decode import COUNTERS, decode
from iadm.flows.owd import OwdReader
from iadm.flows.records import RECORD_COLUMNS
from iadm.flows.table import FlowTable
from iadm.flows.window import WindowAggregator


class FeaturePipeline:
    """Feed batches in, get Bot-IoT-shaped record frames out (in emission order). gateway: the
    name of the gateway whose mirror the packets came from, a column of every record (none if "").
    owd_window: seconds of the sensors' clock-offset estimate (iadm.flows.owd); 0 reads no stamps."""

    def __init__(self, status_interval: float = 5.0, idle_timeout: float = 30.0, max_flows: int = 1 << 18,
                 kind: str = "running", flow_timeout: float | None = None, inspectors=(), gateway: str = "",
                 owd_window: float = 300.0):
        self.owd = OwdReader(owd_window) if owd_window else None
        self.table = FlowTable(status_interval, idle_timeout, max_flows, kind=kind, flow_timeout=flow_timeout)
        aggregate = WindowAggregator()
        self.window = aggregate if not gateway else lambda frame: _named(aggregate(frame), gateway)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.inspectors = list(inspectors)   # callables(batch, decoded) -> findings, before the flows
        self.findings: list = []             # what they found, until the caller takes them

    def push(self, batch) -> list[pd.DataFrame]:
        decoded = decode(batch, self.counters)
        if self.owd is not None:
            decoded.owd = self.owd(batch, decoded)
        for inspect in self.inspectors:
            self.findings += inspect(batch, decoded)
        return [self.window(f) for f in self.table.add(decoded)]

    def advance(self, now: float) -> list[pd.DataFrame]:
        """Records that came due by `now` on a quiet link (live)."""
        return [self.window(f) for f in self.table.advance(now)]

    def finish(self) -> list[pd.DataFrame]:
        return [self.window(f) for f in self.table.flush()]

    def stats(self) -> dict:
        owd = {"owd_stamped": self.owd.stats["stamped"]} if self.owd is not None else {}
        return {**self.counters, **self.table.stats, "flows_active": len(self.table), **owd}


def _named(frame: pd.DataFrame, gateway: str) -> pd.DataFrame:
    frame["gateway"] = pd.Categorical.from_codes(np.zeros(len(frame), dtype=np.int8), [gateway])
    return frame


def warm_up() -> float:
    """Run a few crafted packets through every compiled kernel (decode, flow table, records,
    window); returns the seconds it took. Numba compiles on first use (about 8 s the very
    first time, then from its cache): a live monitor does this before it opens the capture,
    so that the first attack it sees does not wait for a compiler."""
    import dataclasses
    import time

    from iadm.capture.batch import Batch
    from iadm.synth import frame
    start = time.monotonic()
    from iadm.flows.owd import stamp
    stamped = bytearray(frame("10.0.0.3", "10.0.0.2", 17, 40002, 5683, payload=21))
    stamped[-21:] = b"x" + stamp(1_000_000_000_000)
    frames = [frame("10.0.0.1", "10.0.0.2", 6, 40000, 80, 0x02), frame("10.0.0.2", "10.0.0.1", 6, 80, 40000, 0x12),
              frame("10.0.0.1", "10.0.0.2", 17, 40001, 53, payload=20), frame("10.0.0.1", "10.0.0.2", 1, 7),
              bytes(stamped)]
    pipe = FeaturePipeline(status_interval=0.1)
    for t0 in (0.0, 0.5, 1.0):
        batch = Batch.from_frames(frames, [1_000_000.0 + t0 + 0.01 * i for i in range(len(frames))])
        # numba compiles per array type, and a read-only buffer (bytes, as here) is another type
        # than the live ring's writable one: warm both, or the first live batch compiles again
        pipe.push(batch if t0 < 1.0 else dataclasses.replace(batch, buf=batch.buf.copy()))
    pipe.finish()
    return time.monotonic() - start


def records_from_pcap(path: str, kind: str = "running", **options) -> tuple[pd.DataFrame, dict]:
    """All records of a capture file (for tests and small files), with the counters."""
    from iadm.capture.pcapfile import read_pcap
    pipe = FeaturePipeline(kind=kind, **options)
    frames = []
    for batch in read_pcap(path):
        frames += pipe.push(batch)
    frames += pipe.finish()
    frames = [f for f in frames if len(f)]
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RECORD_COLUMNS)
    return records, pipe.stats()
