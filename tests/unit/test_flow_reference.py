"""The compiled flow table against tests/reference_flows.py, record by record: generated traffic
here, and every capture of ../shared/data/pcaps/ when it is beside the project."""
import glob
import os

import numpy as np
import pandas as pd
import pytest

from iadm.capture.decode import COUNTERS, decode
from iadm.capture.pcapfile import read_pcap
from iadm.flows.pipeline import FeaturePipeline
from iadm.synth import frame
from iadm.capture.batch import Batch
from tests.reference_flows import reference

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "pcaps")
CAPTURES = sorted(glob.glob(os.path.join(SHARED, "**", "*.pcap*"), recursive=True))
COLUMNS = ["proto", "saddr", "sport", "daddr", "dport", "stime", "ltime", "spkts", "dpkts", "sbytes", "dbytes",
           "state", "sum", "mean", "stddev", "min", "max"]


def _packets(batches):
    """Decoded packets as the reference's dicts; addresses as (hi, lo) pairs."""
    counters = dict.fromkeys(COUNTERS, 0)
    out = []
    for batch in batches:
        d = decode(batch, counters)
        cols = [d.ts, d.src_hi, d.src_lo, d.dst_hi, d.dst_lo, d.sport, d.dport, d.proto, d.tcp_flags, d.wirelen,
                d.icmp_type, d.icmp_code]
        for ts, sh, sl, dh, dl, sp, dp, pr, fl, wl, it, ic in zip(*(c.tolist() for c in cols)):
            out.append({"ts": ts, "src": (sh, sl), "dst": (dh, dl), "sport": sp, "dport": dp, "proto": pr,
                        "flags": fl, "wirelen": wl, "itype": it, "icode": ic})
    return out


def _text(pairs):
    from iadm.flows.records import addresses
    hi = np.array([p[0] for p in pairs], dtype=np.uint64)
    lo = np.array([p[1] for p in pairs], dtype=np.uint64)
    return addresses(hi, lo).astype(str).tolist()


def _frame_of(rows):
    frame = pd.DataFrame(rows)
    frame["saddr"], frame["daddr"] = _text(frame.saddr), _text(frame.daddr)
    if "dur" not in frame:
        frame["dur"] = frame.ltime - frame.stime
    if "sum" not in frame:   # a status record: the statistics of its own duration
        frame["sum"] = frame["mean"] = frame["min"] = frame["max"] = frame.dur
        frame["stddev"] = 0.0
    return frame


def _table(batches, kind, **options):
    pipe = FeaturePipeline(kind=kind, **options)
    frames = []
    for batch in batches:
        frames += pipe.push(batch)
    frames += pipe.finish()
    return pd.concat(frames, ignore_index=True)


def _same(ours, ref):
    from iadm.flows.records import proto_name
    ref = ref.assign(proto=[proto_name(p) for p in ref.proto])
    ours = ours.assign(proto=ours.proto.astype(str), state=ours.state.astype(str),
                       saddr=ours.saddr.astype(str), daddr=ours.daddr.astype(str))
    keys = ["proto", "saddr", "sport", "daddr", "dport", "stime"]
    a = ours[COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)
    b = ref[COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)
    assert len(a) == len(b)
    for col in COLUMNS:
        if a[col].dtype.kind == "f":
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col


def _check(batches, **options):
    status, flows = reference(_packets(batches), options.get("status_interval", 5.0),
                              options.get("idle_timeout", 30.0))
    _same(_table(batches, "status", **options), _frame_of(status))
    _same(_table(batches, "flow", **options), _frame_of(flows))


def test_generated_traffic_matches_the_reference():
    """Many flows, handshakes, pauses past the idle timeout, a table small enough to evict."""
    rng = np.random.default_rng(3)
    frames, times = [], []
    t = 1_700_000_000.0
    for _ in range(6000):
        a, b = f"10.0.{rng.integers(3)}.{rng.integers(1, 40)}", f"10.1.0.{rng.integers(1, 5)}"
        proto = int(rng.choice([6, 17, 1]))
        sport, dport = int(rng.integers(1024, 1100)), int(rng.choice([80, 53, 443]))
        flags = int(rng.choice([0x02, 0x12, 0x10, 0x18, 0x11, 0x04]))
        forward = rng.random() < 0.6
        src, dst = (a, b) if forward else (b, a)
        sp, dp = (sport, dport) if forward else (dport, sport)
        frames.append(frame(src, dst, proto, sp, dp, flags, payload=int(rng.integers(0, 200))))
        t += float(rng.exponential(0.4)) if rng.random() < 0.995 else 50.0
        times.append(t)
    batches = [Batch.from_frames(frames[i:i + 700], times[i:i + 700]) for i in range(0, len(frames), 700)]
    _check(batches, status_interval=2.0, idle_timeout=20.0)
    with pytest.raises(AssertionError):   # the check can fail: a table that must evict splits flows
        _check(batches, status_interval=2.0, idle_timeout=20.0, max_flows=16)


@pytest.mark.parametrize("path", CAPTURES, ids=[os.path.relpath(p, SHARED) for p in CAPTURES])
def test_every_shared_capture_matches_the_reference(path):
    batches = list(read_pcap(path))
    _check(batches)
