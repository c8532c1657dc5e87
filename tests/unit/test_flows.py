"""Flow records checked field by field against values computed by hand."""
import numpy as np
import pandas as pd
import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, Raw

from iadm.capture.batch import Batch
from iadm.flows.pipeline import FeaturePipeline
from iadm.flows.records import STATE_NUMBERS
from iadm.flows.window import WindowAggregator

A, B = "10.0.0.1", "10.0.0.2"
E = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")


def records(packets, batch_size=None, **options):
    """packets: [(ts, scapy packet)] -> all records, in emission order."""
    pipe = FeaturePipeline(**({"status_interval": 5.0, "idle_timeout": 30.0} | options))
    out = []
    size = batch_size or len(packets)
    for i in range(0, len(packets), size):
        chunk = packets[i:i + size]
        out += pipe.push(Batch.from_frames([bytes(p) for _, p in chunk], [t for t, _ in chunk]))
    out += pipe.finish()
    return pd.concat(out, ignore_index=True), pipe


def test_tcp_handshake_data_and_close():
    syn = E / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="S")
    synack = E / IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="SA")
    ack = E / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A")
    data = E / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="PA") / Raw(b"x" * 100)
    fin_a = E / IP(src=A, dst=B) / TCP(sport=40000, dport=80, flags="FA")
    fin_b = E / IP(src=B, dst=A) / TCP(sport=80, dport=40000, flags="FA")
    trace = [(1000.0, syn), (1000.1, synack), (1000.2, ack), (1000.5, data), (1001.0, fin_a), (1001.1, fin_b),
             (1001.2, ack)]
    recs, _ = records(trace)
    assert len(recs) == 1
    r = recs.iloc[0]
    assert (r.saddr, r.sport, r.daddr, r.dport, r.proto) == (A, 40000, B, 80, "tcp")
    assert (r.pkts, r.spkts, r.dpkts) == (7, 5, 2)
    assert r.sbytes == 4 * 54 + 154 and r.dbytes == 2 * 54 and r.bytes == r.sbytes + r.dbytes
    assert r.stime == 1000.0 and r.ltime == pytest.approx(1001.2) and r.dur == pytest.approx(1.2)
    assert r.state == "FIN" and r.state_number == STATE_NUMBERS["FIN"]
    assert (r["mean"], r.stddev, r["sum"], r["min"], r["max"]) == pytest.approx((1.2, 0, 1.2, 1.2, 1.2))
    assert r.rate == pytest.approx(6 / 1.2)
    assert r.srate == pytest.approx(4 / 1.2)      # (spkts - 1) / dur
    assert r.drate == pytest.approx(1 / 1.2)      # (dpkts - 1) / dur, as Argus
    assert r.smac == 1


def test_udp_exchange_across_two_status_intervals():
    out = E / IP(src=A, dst=B) / UDP(sport=5683, dport=5683) / Raw(b"t=21.5")
    back = E / IP(src=B, dst=A) / UDP(sport=5683, dport=5683) / Raw(b"ok")
    trace = [(1000.0, out), (1000.5, back), (1006.0, out), (1006.2, back)]
    recs, _ = records(trace, batch_size=1)
    assert len(recs) == 2                          # the first interval closes at 1005, the second at the end
    first, last = recs.iloc[0], recs.iloc[1]
    assert (first.pkts, first.dur, first["mean"]) == (2, 0.5, 0.5)
    assert first.state == "CON" and first.seq < last.seq
    assert (last.pkts, last.spkts, last.dpkts) == (4, 2, 2)
    assert last.dur == pytest.approx(6.2)
    # two interval segments lasting 0.5 and 0.2 seconds
    assert (last["mean"], last.stddev, last["sum"], last["min"], last["max"]) == pytest.approx(
        (0.35, 0.15, 0.7, 0.2, 0.5))
    assert last.srate == pytest.approx(1 / 6.2) and last.drate == pytest.approx(1 / 6.2)
    status, _ = records(trace, batch_size=1, kind="status")   # Argus's own records: each interval alone
    assert status.pkts.tolist() == [2, 2] and status.stime.tolist() == [1000.0, 1006.0]
    assert status.dur.tolist() == pytest.approx([0.5, 0.2]) and (status["mean"] == status.dur).all()
    flow, _ = records(trace, batch_size=1, kind="flow")       # racluster's: one per flow
    assert len(flow) == 1 and flow.iloc[0][["pkts", "sum", "stddev"]].tolist() == pytest.approx([4, 0.7, 0.15])


def test_icmp_echo_request_and_reply_form_one_flow():
    trace = [(1000.0, E / IP(src=A, dst=B) / ICMP(type=8, id=5)),
             (1000.01, E / IP(src=B, dst=A) / ICMP(type=0, id=5)),
             (1000.02, E / IP(src=A, dst=B) / ICMP(type=8, id=6))]
    recs, _ = records(trace)
    assert len(recs) == 2
    r = recs[recs.pkts == 2].iloc[0]
    assert (r.saddr, r.daddr, r.proto, r.sport, r.dport, r.state) == (A, B, "icmp", 8, 0, "ECO")
    assert (r.spkts, r.dpkts) == (1, 1)


def test_syn_flood_records_and_window_counts():
    trace = [(1000.0 + i * 0.001, E / IP(src=f"198.51.{i // 250}.{i % 250 + 1}", dst=B)
              / TCP(sport=1024 + i, dport=80, flags="S")) for i in range(150)]
    recs, pipe = records(trace, batch_size=40)
    assert len(recs) == 150 and set(recs.state) == {"REQ"}
    assert (recs.pkts == 1).all() and (recs.dpkts == 0).all() and (recs.srate == 0).all()
    # The window holds the last 100 records: all of them share the destination.
    assert recs.N_IN_Conn_P_DstIP.tolist() == [min(k, 100) for k in range(1, 151)]
    assert recs.TnP_PDstIP.tolist() == [min(k, 100) for k in range(1, 151)]
    assert (recs.N_IN_Conn_P_SrcIP == 1).all()
    assert recs.TnBPDstIP.iloc[-1] == 100 * recs.bytes.iloc[0]
    assert pipe.table.stats["flows_created"] == 150


def test_a_second_sender_reusing_a_flow_key_takes_the_flow_over():
    """Forged floods repeat (source, port) pairs; the host sending now answers for the flow."""
    forged = IP(src="198.51.100.7", dst=B) / TCP(sport=5555, dport=80, flags="S")
    first = Ether(src="00:00:00:00:00:65", dst="00:00:00:00:00:02") / forged
    second = Ether(src="00:00:00:00:00:69", dst="00:00:00:00:00:02") / forged
    answer = Ether(src="00:00:00:00:00:02", dst="00:00:00:00:00:69") / IP(src=B, dst="198.51.100.7") / \
        TCP(sport=80, dport=5555, flags="R")
    trace = [(1000.0, first), (1000.2, first), (1006.0, second), (1006.1, answer), (1006.2, second)]
    recs, _ = records(trace, batch_size=2)
    assert [hex(m) for m in recs.smac] == ["0x65", "0x69"]   # the answer does not count as the source


def test_a_silent_flow_record_ends_and_a_later_packet_opens_a_new_one():
    p = E / IP(src=A, dst=B) / UDP(sport=1, dport=2)
    recs, pipe = records([(1000.0, p), (1040.0, p)], batch_size=1, idle_timeout=10.0, flow_timeout=10.0)
    assert len(recs) == 2 and recs.pkts.tolist() == [1, 1]
    assert recs.stime.tolist() == [1000.0, 1040.0]
    assert pipe.table.stats["flows_expired"] == 1
    # Offline (no flow timeout) the key's records fold into one flow record, as racluster's do.
    recs, _ = records([(1000.0, p), (1040.0, p)], batch_size=1, idle_timeout=10.0, kind="flow")
    assert recs.pkts.tolist() == [2] and recs["sum"].tolist() == [0.0]


def test_spoofed_flood_keeps_the_table_bounded():
    pipe = FeaturePipeline(max_flows=64)
    template = bytearray(bytes(E / IP(src="0.0.0.0", dst=B) / TCP(sport=1024, dport=80, flags="S")))
    rng = np.random.default_rng(1)
    total = 0
    for round_ in range(20):
        frames = []
        for source in rng.integers(1 << 24, 224 << 24, 500):
            template[26:30] = int(source).to_bytes(4, "big")   # a forged IPv4 source per packet
            frames.append(bytes(template))
        for f in pipe.push(Batch.from_frames(frames, 1000.0 + round_ + np.arange(500) * 1e-4)):
            total += len(f)
        assert len(pipe.table) <= 64
    total += sum(len(f) for f in pipe.finish())
    assert pipe.table.stats["flows_created"] == 10_000
    assert pipe.table.stats["evicted"] >= 10_000 - 64
    assert total == 10_000   # every flow was reported exactly once, none lost


def brute_force_window(frame, column, by, how, window=100):
    out = []
    rows = frame.to_dict("records")
    for i, row in enumerate(rows):
        span = [r for r in rows[max(0, i - window + 1):i + 1] if all(r[b] == row[b] for b in by)]
        values = [1.0 if column is None else r[column] for r in span]
        out.append(sum(values) / len(values) if how == "mean" else sum(values))
    return out


def test_window_aggregates_match_a_brute_force_loop():
    rng = np.random.default_rng(3)
    n = 450
    frame = pd.DataFrame({
        "saddr": rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"], n), "daddr": rng.choice(["10.0.0.7", "10.0.0.8"], n),
        "proto": rng.choice(["tcp", "udp"], n), "sport": rng.integers(1, 5, n), "dport": rng.integers(1, 4, n),
        "state": rng.choice(["CON", "REQ", "INT"], n), "bytes": rng.integers(60, 1500, n),
        "pkts": rng.integers(1, 10, n), "rate": rng.random(n) * 100})
    agg = WindowAggregator()
    got = pd.concat([agg(frame.iloc[i:i + 70].reset_index(drop=True)) for i in range(0, n, 70)], ignore_index=True)
    from iadm.flows.window import _AGGREGATES
    for name, (by, value, how) in _AGGREGATES.items():
        assert np.allclose(got[name], brute_force_window(frame, value, by, how)), name


def test_a_table_that_grows_gives_the_records_of_one_made_at_full_size(monkeypatch):
    """The table starts small and doubles as flows arrive; slots are handed out as a full-size table
    hands them out, so every record (and its order) is the same, evictions at the cap included."""
    import os
    from iadm.capture.pcapfile import read_pcap
    from iadm.flows.pipeline import FeaturePipeline
    from iadm.flows.table import FlowTable
    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "pcaps",
                        "pkt.TCP.synflood.spoofed.pcap")
    if not os.path.exists(path):
        pytest.skip(f"{path}: the shared captures are not beside the checkout")

    def records(initial, max_flows):
        monkeypatch.setattr(FlowTable, "INITIAL_FLOWS", initial)
        pipe = FeaturePipeline(kind="status", status_interval=1.0, max_flows=max_flows)
        frames = [f for batch in read_pcap(path) for f in pipe.push(batch)] + pipe.finish()
        return pd.concat(frames, ignore_index=True), pipe.table

    for max_flows in (1 << 16, 3000):   # room for every flow; a cap that evicts
        grown, table = records(16, max_flows)
        full, _ = records(max_flows, max_flows)
        assert table.capacity > 16 and len(grown) > 1000
        pd.testing.assert_frame_equal(grown, full)


def test_the_handshake_is_split_at_the_mirror_and_empty_where_not_seen():
    """synack: SYN to SYN-ACK (server side), ackdat: SYN-ACK to ACK (client side), on every record
    of the flow; a retransmitted SYN keeps the first; a flow met mid-way, UDP and ICMP: empty.
    answer: a UDP request's first answer."""
    syn = E / IP(src=A, dst=B) / TCP(sport=40001, dport=80, flags="S")
    synack = E / IP(src=B, dst=A) / TCP(sport=80, dport=40001, flags="SA")
    ack = E / IP(src=A, dst=B) / TCP(sport=40001, dport=80, flags="A")
    data = E / IP(src=A, dst=B) / TCP(sport=40001, dport=80, flags="PA") / Raw(b"x" * 10)
    midway = E / IP(src=A, dst=B) / TCP(sport=40002, dport=80, flags="PA") / Raw(b"y" * 10)
    udp = E / IP(src=A, dst=B) / UDP(sport=5000, dport=53)
    answer = E / IP(src=B, dst=A) / UDP(sport=53, dport=5000)
    trace = [(2000.0, syn), (2000.5, syn), (2000.530, synack), (2000.545, ack), (2000.6, data), (2001.0, midway),
             (2001.1, udp), (2001.112, answer), (2001.2, udp), (2001.3, answer), (2007.0, data)]
    recs, _ = records(trace, kind="status", status_interval=5.0)
    shook = recs[recs.sport == 40001]
    assert len(shook) == 2   # two status records of one flow: both carry its handshake
    np.testing.assert_allclose(shook.synack, 0.530, atol=1e-6)
    np.testing.assert_allclose(shook.ackdat, 0.015, atol=1e-6)
    assert recs[recs.sport != 40001][["synack", "ackdat"]].isna().all().all()
    np.testing.assert_allclose(recs[recs.sport == 5000].answer, 0.012, atol=1e-6)   # the first answer counts
    assert recs[recs.proto.astype(str) == "tcp"].answer.isna().all()
