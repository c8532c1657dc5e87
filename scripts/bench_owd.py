"""What reading sensor send-time stamps costs (iadm.flows.owd).

    .venv/bin/python scripts/bench_owd.py [PCAP ...]

1. The reader alone on a dense batch of 1,000,000 frames (a quarter stamped CoAP, a quarter
   stamped TCP reports, the rest unstamped UDP and TCP): ns per packet.
2. The whole feature pipeline (decode, reader, flow table, records, window) over each capture
   (default: the shared spoofed SYN flood, the densest capture there), with the reader and
   without it (owd_window=0), the capture read into memory first, best of five: the slowdown.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from iadm.capture.batch import Batch
from iadm.capture.decode import decode
from iadm.capture.pcapfile import read_pcap
from iadm.flows.owd import OwdReader, stamp
from iadm.flows.pipeline import FeaturePipeline
from iadm.synth import frame

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "pcaps")


def dense_batch(n: int = 1_000_000) -> Batch:
    kinds = []
    for k in range(64):
        src = f"10.0.0.{10 + k}"
        coap = bytearray(frame(src, "10.0.0.2", 17, 40000 + k, 5683, payload=30))
        coap[-20:] = stamp(1_718_000_000_000_000 + k)
        tcp = frame(src, "10.0.0.2", 6, 41000 + k, 1883, 0x18) + b"17 temp=21 " + stamp(1_718_000_000_000_000) + b"\n"
        kinds += [bytes(coap), tcp, frame(src, "10.0.0.2", 17, 42000 + k, 53, payload=30),
                  frame(src, "10.0.0.2", 6, 43000 + k, 80, 0x10, payload=30)]
    frames = [kinds[i % len(kinds)] for i in range(n)]
    # the TCP reports carry their payload past the IP length the synthetic frame says: fine here
    return Batch.from_frames(frames, 1_718_000_000.0 + np.arange(n) * 1e-5)


def reader_cost() -> None:
    batch = dense_batch()
    decoded = decode(batch)
    reader = OwdReader()
    reader(batch, decoded)     # compile / load
    best = min(_time(lambda: OwdReader()(batch, decoded)) for _ in range(5))
    found = int(np.isfinite(OwdReader()(batch, decoded)).sum())
    print(f"reader alone: {len(decoded):,} packets ({found:,} stamped) in {best * 1e3:.1f} ms: "
          f"{best / len(decoded) * 1e9:.1f} ns/packet")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pipeline_cost(path: str) -> None:
    batches = list(read_pcap(path))
    packets = sum(len(b) for b in batches)

    def run(window):
        pipe = FeaturePipeline(kind="flow", owd_window=window)
        for b in batches:
            pipe.push(b)
        pipe.finish()

    run(300.0), run(0)
    times = {w: [] for w in (300.0, 0)}
    for _ in range(5):
        for w, spent in times.items():
            spent.append(_time(lambda w=w: run(w)))
    on, off = min(times[300.0]), min(times[0])
    print(f"{os.path.basename(path)}: {packets:,} packets, pipeline {off * 1e3:.1f} ms without the reader, "
          f"{on * 1e3:.1f} ms with it: x{on / off:.3f} ({(on - off) / packets * 1e9:+.1f} ns/packet)")


def main() -> int:
    reader_cost()
    paths = sys.argv[1:] or [os.path.join(SHARED, "pkt.TCP.synflood.spoofed.pcap"),
                             os.path.join(SHARED, "amp.dns.RRSIG.fragmented.pcap")]
    for path in paths:
        if os.path.exists(path):
            pipeline_cost(path)
        else:
            print(f"{path}: not here (../shared is absent), skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
