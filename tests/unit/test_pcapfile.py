import os

import numpy as np
import pytest
from pcaptools import write_pcap, write_pcapng
from scapy.all import IP, UDP, Ether

from iadm.capture.batch import CaptureError
from iadm.capture.decode import decode
from iadm.capture.pcapfile import read_pcap
from iadm.flows.pipeline import records_from_pcap

SHARED_PCAPS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "pcaps")
FRAMES = [(1_600_000_000.123456 + i * 0.5, bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2")
                                                 / UDP(sport=1000 + i, dport=53))) for i in range(5)]


def read_all(path):
    batches = list(read_pcap(path))
    ts = np.concatenate([b.ts for b in batches])
    sports = np.concatenate([decode(b).sport for b in batches])
    return ts, sports


FORMATS = [("x.pcap", write_pcap, {"nano": False}), ("x.pcap", write_pcap, {"nano": True}),
           ("x.pcapng", write_pcapng, {"tsresol": 6}), ("x.pcapng", write_pcapng, {"tsresol": 9})]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("name, writer, options", FORMATS, ids=["pcap-us", "pcap-ns", "pcapng-us", "pcapng-ns"])
def test_both_formats_byte_orders_and_time_units(tmp_path, order, name, writer, options):
    path = tmp_path / name
    writer(path, FRAMES, order=order, **options)
    ts, sports = read_all(path)
    assert sports.tolist() == [1000, 1001, 1002, 1003, 1004]
    assert np.allclose(ts, [t for t, _ in FRAMES], atol=1e-6)


def test_small_chunks_give_the_same_packets(tmp_path):
    path = tmp_path / "x.pcap"
    write_pcap(path, FRAMES * 20)
    whole = sum(len(b) for b in read_pcap(str(path)))
    chunked = sum(len(b) for b in read_pcap(str(path), chunk=97))
    assert whole == chunked == 100


def test_truncated_pcap_names_the_offset_and_keeps_what_came_before(tmp_path):
    path = tmp_path / "cut.pcap"
    write_pcap(path, FRAMES)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    seen = []
    with pytest.raises(CaptureError) as err:
        for batch in read_pcap(str(path), chunk=64):
            seen.append(len(batch))
    record = len(FRAMES[0][1]) + 16
    assert f"byte {24 + 4 * record}" in str(err.value) and str(path) in str(err.value)
    assert sum(seen) == 4


def test_truncated_pcap_keeps_records_emitted_before(tmp_path):
    from iadm.flows.pipeline import FeaturePipeline
    path = tmp_path / "cut.pcap"
    write_pcap(path, FRAMES)
    path.write_bytes(path.read_bytes()[:-10])
    pipe = FeaturePipeline(status_interval=1.0)
    records = []
    with pytest.raises(CaptureError):
        for batch in read_pcap(str(path)):
            records += pipe.push(batch)
    records += pipe.finish()
    assert sum(len(r) for r in records) == 4  # four complete packets, four flows


@pytest.mark.parametrize("payload, words", [
    (b"", "empty"), (b"\x00" * 30, "not a pcap"), (b"\xd4\xc3\xb2\xa1" + b"\x00" * 10, "cut short"),
])
def test_not_a_capture(tmp_path, payload, words):
    path = tmp_path / "bad.pcap"
    path.write_bytes(payload)
    with pytest.raises(CaptureError, match=words):
        list(read_pcap(str(path)))


def test_corrupt_record_length(tmp_path):
    path = tmp_path / "bad.pcap"
    write_pcap(path, FRAMES[:2])
    data = bytearray(path.read_bytes())
    data[24 + 16 + len(FRAMES[0][1]) + 8:24 + 16 + len(FRAMES[0][1]) + 12] = (10**7).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match=r"claims 10000000 captured bytes"):
        list(read_pcap(str(path)))


SHARED = {"pkt.TCP.synflood.spoofed.pcap": 37841, "dosattack.pcap": 100, "synscan.pcapng": 2011,
          "activeosfingerprinting.pcapng": 48}


@pytest.mark.parametrize("name, packets", SHARED.items())
def test_shared_real_captures(name, packets):
    path = os.path.join(SHARED_PCAPS, name)
    if not os.path.exists(path):
        pytest.skip("../shared/data/pcaps is not beside the project")
    records, stats = records_from_pcap(path)
    assert stats["packets"] == packets
    assert stats["decoded"] == packets  # every frame of these captures is well-formed
    # Records carry running totals: each flow's last record holds all its packets.
    last = records.groupby(["saddr", "sport", "daddr", "dport", "proto"])["pkts"].max()
    assert last.sum() == packets
