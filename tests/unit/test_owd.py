"""Sensor one-way delay: send-time stamps in payloads, the per-device offset estimate, the owd column."""
import numpy as np
import pandas as pd
import pytest
from scapy.all import IP, TCP, UDP, Ether, Raw

from iadm.capture.batch import Batch
from iadm.capture.decode import decode
from iadm.flows.owd import OwdReader, stamp
from iadm.flows.pipeline import FeaturePipeline

SENSOR, OTHER, BROKER = "10.0.0.11", "10.0.0.12", "10.0.0.2"
E = Ether(src="00:00:00:00:00:11", dst="00:00:00:00:00:02")
T0 = 1_718_000_000.0


def coap(src, sent_us, sport=40000):
    """A confirmable CoAP POST of a reading, the stamp after the payload marker."""
    return E / IP(src=src, dst=BROKER) / UDP(sport=sport, dport=5683) / Raw(
        b"\x40\x02\x12\x34\xb4temp\xff21.50" + stamp(sent_us))


def report(src, sent_us, sport=41000):
    """An MQTT-like report line over TCP, the stamp before its line feed."""
    return E / IP(src=src, dst=BROKER) / TCP(sport=sport, dport=1883, flags="PA") / Raw(
        b"17 temp=21.30 hum=44 " + stamp(sent_us) + b"\n")


def trace_of(device, offset_us, delays_us, make, start=T0, step=1.0):
    """Packets sent every `step` s by a sensor whose clock is `offset_us` ahead, each arriving
    delays_us[k] after it was sent: [(arrival, packet)]."""
    out = []
    for k, delay in enumerate(delays_us):
        arrival_us = round((start + k * step) * 1e6)
        out.append((arrival_us / 1e6, make(device, arrival_us - delay + offset_us)))
    return out


def per_packet(trace, **options):
    reader = OwdReader(**options)
    batch = Batch.from_frames([bytes(p) for _, p in trace], [t for t, _ in trace])
    return reader(batch, decode(batch)), reader


@pytest.mark.parametrize("make", [coap, report])
def test_known_stamps_and_arrivals_give_known_delays_to_the_microsecond(make):
    delays = [4_000, 2_517, 2_500, 9_999, 52_503, 2_501]          # true one-way delays, microseconds
    trace = trace_of(SENSOR, offset_us=-123_456_789, delays_us=delays, make=make)
    owd, reader = per_packet(trace)
    # raw = delay - offset; the running least raw (this packet included) is the baseline
    expected = [d - min(delays[:k + 1]) for k, d in enumerate(delays)]
    assert np.round(owd * 1e6).astype(int).tolist() == expected
    assert reader.stats["stamped"] == len(delays)


def test_each_device_has_its_own_offset():
    a = trace_of(SENSOR, 5_000_000, [1_000, 1_200, 1_000], coap)
    b = trace_of(OTHER, -7_000_000, [3_000, 3_000, 53_000], coap, start=T0 + 0.5)
    owd, reader = per_packet(sorted(a + b, key=lambda p: p[0]))
    assert np.round(owd * 1e6).astype(int).tolist() == [0, 0, 200, 0, 0, 50_000]
    assert reader.stats["devices"] == 2


def test_the_baseline_forgets_what_left_the_window():
    # window 10 s in 10 one-second buckets: the 1 ms minimum at t0 is forgotten after ~10 s
    delays = [1_000] + [5_000] * 14
    owd, _ = per_packet(trace_of(SENSOR, 0, delays, coap), window=10.0, buckets=10)
    us = np.round(owd * 1e6).astype(int)
    assert us[1:10].tolist() == [4_000] * 9 and us[-1] == 0


def test_payloads_that_are_not_stamps_give_nothing():
    good = stamp(T0_US := int(T0 * 1e6))
    udp = E / IP(src=SENSOR, dst=BROKER) / UDP(sport=40000, dport=5683)
    tcp = E / IP(src=SENSOR, dst=BROKER) / TCP(sport=41000, dport=1883, flags="PA")
    bad = [udp / Raw(good[:-1]),                       # 15 digits
           udp / Raw(good + b"x"),                     # something after the digits
           udp / Raw(good.replace(b"~ts=", b"~tz=")),  # another tag
           udp / Raw(good[:-3] + b"a12"),              # not a digit
           udp / Raw(good + b"\n\n"),                  # one line feed at most
           tcp / Raw(b"17 temp=21 " + good[:10]),      # a report cut inside its stamp
           udp / Raw(b"\x00" * 40)]
    owd, reader = per_packet([(T0 + i, p) for i, p in enumerate(bad)])
    assert np.isnan(owd).all() and reader.stats["stamped"] == 0
    # a UDP stamp past the UDP length (trailing bytes of the frame) is not the payload's
    padded = bytes(coap(SENSOR, T0_US)) + b"\x00" * 8
    owd, _ = per_packet([(T0, Ether(padded))])
    assert not np.isnan(owd).any()
    owd, _ = per_packet([(T0, Ether(bytes(udp / Raw(b"abc")) + good))])
    assert np.isnan(owd).all()


def test_a_tcp_segment_cut_by_the_snapshot_length_hides_its_stamp():
    frame = bytes(report(SENSOR, int(T0 * 1e6)))
    reader = OwdReader()
    whole = Batch.from_frames([frame], [T0])
    cut = Batch.from_frames([frame[:-1]], [T0], wirelen=[len(frame)])
    assert not np.isnan(reader(whole, decode(whole))).any()
    assert np.isnan(OwdReader()(cut, decode(cut))).all()


def _records(trace, **options):
    pipe = FeaturePipeline(**({"status_interval": 5.0, "idle_timeout": 30.0} | options))
    out = pipe.push(Batch.from_frames([bytes(p) for _, p in trace], [t for t, _ in trace])) + pipe.finish()
    return pd.concat(out, ignore_index=True), pipe


def test_the_owd_column_is_the_records_stamped_source_packets():
    delays = [2_000, 2_000, 2_300, 52_000, 62_000]
    sensor = trace_of(SENSOR, 900_000_000, delays, report, step=2.0)       # one flow, t0 .. t0 + 8
    reply = E / IP(src=BROKER, dst=SENSOR) / TCP(sport=1883, dport=41000, flags="PA") / Raw(
        b"ACK 17 " + stamp(1) + b"\n")                                     # the destination's: not counted
    trace = sorted(sensor + [(T0 + 0.001, reply)], key=lambda p: p[0])
    status, pipe = _records(trace, kind="status", status_interval=1.0)
    mine = status[status.saddr == SENSOR]
    got = np.round(mine.owd.to_numpy() * 1e6)
    np.testing.assert_array_equal(got, [0, 0, 300, 50_000, 60_000])      # one status record per report
    assert pipe.stats()["owd_stamped"] == len(trace)
    flow, _ = _records(trace, kind="flow", status_interval=1.0)
    assert flow.owd.iloc[0] == pytest.approx(np.mean([0, 0, 300, 50_000, 60_000]) / 1e6, abs=1e-12)


def test_a_capture_without_stamps_leaves_owd_empty_not_zero():
    from iadm.synth import benign
    trace = benign(T0, 20.0, devices=3)
    recs, pipe = _records(trace, kind="running", status_interval=1.0)
    assert len(recs) > 10 and "owd" in recs and recs.owd.isna().all()
    assert pipe.stats()["owd_stamped"] == 0
    off, _ = _records([(T0, coap(SENSOR, 1))], owd_window=0)   # reading switched off: empty too
    assert off.owd.isna().all()


def test_a_running_record_says_which_delays_it_is_the_first_to_carry():
    """new_delay: bit 0 on the first running record of a flow that carries synack (here the second:
    the SYN-ACK came late), bit 1 likewise for answer; later records of the flow carry none."""
    syn = E / IP(src=SENSOR, dst=BROKER) / TCP(sport=40001, dport=80, flags="S")
    synack = E / IP(src=BROKER, dst=SENSOR) / TCP(sport=80, dport=40001, flags="SA")
    ack = E / IP(src=SENSOR, dst=BROKER) / TCP(sport=40001, dport=80, flags="A")
    ask = E / IP(src=SENSOR, dst=BROKER) / UDP(sport=5000, dport=53)
    reply = E / IP(src=BROKER, dst=SENSOR) / UDP(sport=53, dport=5000)
    trace = [(T0, syn), (T0 + 0.01, ask), (T0 + 0.02, reply), (T0 + 1.5, synack), (T0 + 1.51, ack),
             (T0 + 3.0, ack), (T0 + 3.1, ask)]
    recs, _ = _records(trace, kind="running", status_interval=1.0)
    tcp = recs[recs.dport == 80]
    udp = recs[recs.dport == 53]
    assert tcp.new_delay.tolist() == [0, 1, 0] and tcp.synack.isna().tolist() == [True, False, False]
    assert udp.new_delay.tolist() == [2, 0]


def test_the_device_table_grows_then_starts_afresh_when_full():
    trace = [(T0 + k * 0.01, coap(f"10.0.{k // 200}.{k % 200 + 1}", int(T0 * 1e6) + k)) for k in range(150)]
    owd, reader = per_packet(trace, max_devices=200)
    assert reader.stats == {"stamped": 150, "devices": 150, "resets": 0} and reader.capacity == 200
    assert (owd == 0).all()    # each device's first stamp is its own baseline
    _, full = per_packet(trace, max_devices=100)
    assert full.stats["resets"] == 1
