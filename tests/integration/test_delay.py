"""Delay as evidence, measured for real: 50 ms added on a device's path (a userspace delay line,
scripts/traffic/delayline.py: this kernel has no netem) shows in the records' handshake split by
50 +- 10 ms, on the server side (synack) and not on the client side (ackdat), and in the one-way
delay (owd) that the monitor reads from a sensor's send-time stamps.

A bridge of its own (standalone OVS, userspace datapath): client dc, the delay host dl, the device
dv behind it; the capture is taken on the switch's port toward the client, where a mirror would be.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from iadm.testbed import ROOT, load_topology, topology_lock

CLIENT, DEVICE = "10.0.0.211", "10.0.0.212"   # the topology's subnet (the generators refuse others)
DEVICE_MAC = "00:00:00:00:0d:0c"
CONNECTIONS = 20
SERVER = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',8080));s.listen(64);s.settimeout(1)\nend=time.time()+{seconds}\n"
          "while time.time()<end:\n try:\n  c,_=s.accept();c.close()\n except OSError:\n  pass\n")
CLIENTS = ("import socket,time\nfor _ in range({n}):\n c=socket.create_connection(('{dst}',8080),timeout=5)\n"
           " c.close();time.sleep(0.05)\n")


@pytest.fixture(scope="module")
def delay_lab(tmp_path_factory):
    from mininet.log import setLogLevel
    from mininet.net import Mininet
    setLogLevel("warning")
    topo = load_topology()
    with topology_lock():
        net = Mininet(controller=None, autoSetMacs=False, build=False, waitConnected=False)
        try:
            switch = net.addSwitch("sdl", cls=topo.UserspaceOVS, failMode="standalone", protocols=None,
                                   dpid="00000000000000d1")
            dc = net.addHost("dc", cls=topo.OffloadOffHost, ip=f"{CLIENT}/24", mac="00:00:00:00:0d:0b")
            dl = net.addHost("dl", cls=topo.OffloadOffHost, ip=None)
            dv = net.addHost("dv", cls=topo.OffloadOffHost, ip=f"{DEVICE}/24", mac=DEVICE_MAC)
            net.addLink(dc, switch)   # sdl-eth1: where the capture is taken
            net.addLink(dl, switch)   # dl-eth0: the delay line's switch side
            net.addLink(dl, dv)       # dl-eth1: its device side
            net.build()
            switch.start([])
            for iface in ("dl-eth0", "dl-eth1"):
                dl.cmd(f"ip addr flush dev {iface}; ip link set {iface} promisc on")
            yield net, tmp_path_factory.mktemp("delay")
        finally:
            net.stop()
            subprocess.run(["ovs-vsctl", "--if-exists", "del-br", "sdl"], check=False)


def _handshakes(net, workdir, delay_ms: float, flood=None) -> pd.DataFrame:
    """CONNECTIONS TCP handshakes from dc to dv through a delay line of delay_ms (and, with
    `flood`, a UDP flood from dc to dv meanwhile: argv of flood.py's bounds); their records."""
    from iadm.capture.pcapfile import read_pcap
    from iadm.flows.pipeline import FeaturePipeline
    dc, dl, dv = net.get("dc"), net.get("dl"), net.get("dv")
    pcap = workdir / f"delay-{delay_ms:g}.pcap"
    line = dl.popen([sys.executable, str(ROOT / "scripts" / "traffic" / "delayline.py"), "--device", "dl-eth1",
                     "--switch", "dl-eth0", "--delay-ms", str(delay_ms), "--seconds", "15"])
    server = dv.popen([sys.executable, "-c", SERVER.format(seconds=12)])
    capture = subprocess.Popen(["tcpdump", "-i", "sdl-eth1", "-w", str(pcap), "-U", "-s", "128", "tcp port 8080"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        flooding = dc.popen([sys.executable, str(ROOT / "scripts" / "traffic" / "flood.py"), *flood]) if flood else None
        out = dc.cmd(f"{sys.executable} -c \"{CLIENTS.format(n=CONNECTIONS, dst=DEVICE)}\" && echo done")
        assert "done" in out, out
        if flooding:
            flooding.wait(30)
        time.sleep(0.5)
    finally:
        capture.terminate()
        capture.wait(5)
        for proc in (server, line):
            proc.terminate()
            proc.wait(5)
    pipe = FeaturePipeline(kind="flow", status_interval=5.0)
    records = pd.concat([f for b in read_pcap(str(pcap)) for f in pipe.push(b)] + pipe.finish(), ignore_index=True)
    return records[records.dport == 8080]


SENSOR = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range({n}):\n"
          " s.sendto(b'\\x40\\x02\\x00\\x01\\xb4temp\\xff21.5~ts=%016d' % (time.time_ns() // 1000), ('{dst}', 5683))\n"
          " time.sleep(0.05)\n")   # a CoAP sensor's stamped reports (docs/features.md), 20 a second
REPORTS = 40


def _reports(net, workdir, delay_ms: float):
    """REPORTS stamped CoAP reports from the device dv to dc through a delay line of delay_ms: the
    capture's batches (taken where the mirror would be)."""
    from iadm.capture.pcapfile import read_pcap
    dl, dv = net.get("dl"), net.get("dv")
    pcap = workdir / f"owd-{delay_ms:g}.pcap"
    line = dl.popen([sys.executable, str(ROOT / "scripts" / "traffic" / "delayline.py"), "--device", "dl-eth1",
                     "--switch", "dl-eth0", "--delay-ms", str(delay_ms), "--seconds", "8"])
    capture = subprocess.Popen(["tcpdump", "-i", "sdl-eth1", "-w", str(pcap), "-U", "-s", "256", "udp port 5683"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        sensor = dv.popen([sys.executable, "-c", SENSOR.format(n=REPORTS, dst=CLIENT)])
        sensor.wait(20)
        time.sleep(0.5)
    finally:
        capture.terminate()
        capture.wait(5)
        line.terminate()
        line.wait(5)
    return list(read_pcap(str(pcap)))


def test_a_slower_device_path_raises_the_owd_its_stamps_show(delay_lab):
    """The same monitor sees the device before and after 50 ms are added: its offset estimate
    (the least raw delay in the window) comes from the first run, so the second reads +50 ms."""
    from iadm.capture.decode import decode
    from iadm.flows.owd import OwdReader
    from iadm.flows.pipeline import FeaturePipeline
    net, workdir = delay_lab
    runs = [_reports(net, workdir, 0), _reports(net, workdir, 50)]
    reader = OwdReader()
    owd = [np.concatenate([reader(b, decode(b)) for b in batches]) for batches in runs]
    before, after = (np.nanmedian(o) * 1000 for o in owd)
    print(f"owd median {before:.2f} ms -> {after:.2f} ms (+{after - before:.1f} ms) over "
          f"{np.isfinite(owd[0]).sum()} and {np.isfinite(owd[1]).sum()} stamped reports")
    assert min(np.isfinite(o).sum() for o in owd) >= REPORTS - 4   # the first may wait for ARP
    assert 40 <= after - before <= 60
    # the records' owd column: one flow per run (a socket each), its mean owd
    pipe = FeaturePipeline(kind="flow", status_interval=5.0)
    records = pd.concat([f for batches in runs for b in batches for f in pipe.push(b)] + pipe.finish(),
                        ignore_index=True)
    sensors = records[(records.saddr == DEVICE) & (records.dport == 5683)].sort_values("stime")
    assert len(sensors) == 2 and sensors.owd.notna().all()
    assert 40 <= (sensors.owd.iloc[1] - sensors.owd.iloc[0]) * 1000 <= 60, sensors.owd


def test_a_slower_device_path_shows_in_the_server_side_of_its_handshakes(delay_lab):
    net, workdir = delay_lab
    before = _handshakes(net, workdir, 0)
    after = _handshakes(net, workdir, 50)
    for records in (before, after):   # the first may lose its SYN to the ARP exchange before it
        assert len(records) >= CONNECTIONS - 2 and records.synack.notna().sum() >= CONNECTIONS - 2, records.synack
    added = (np.nanmedian(after.synack) - np.nanmedian(before.synack)) * 1000
    print(f"synack median {np.nanmedian(before.synack) * 1000:.2f} ms -> {np.nanmedian(after.synack) * 1000:.2f} ms "
          f"(+{added:.1f} ms); ackdat {np.nanmedian(before.ackdat) * 1000:.2f} -> {np.nanmedian(after.ackdat) * 1000:.2f} ms")
    assert 40 <= added <= 60, (before.synack.describe(), after.synack.describe())
    # the client side (SYN-ACK to ACK, between the mirror and the client) did not move
    assert abs(np.nanmedian(after.ackdat) - np.nanmedian(before.ackdat)) * 1000 < 10


def test_a_shaped_device_link_queues_under_a_flood_and_its_handshakes_show_it(delay_lab):
    """The realistic case: the device's link is shaped (tbf, 1 Mbit/s, a deep queue) and a UDP flood
    a little above that rate fills the queue toward it: the SYNs behind it wait, so synack grows."""
    net, workdir = delay_lab
    dl = net.get("dl")
    quiet = _handshakes(net, workdir, 0)
    dl.cmd("tc qdisc add dev dl-eth1 root tbf rate 1mbit burst 10kb latency 5s")
    try:
        flooded = _handshakes(net, workdir, 0, flood=["--iface", "dc-eth0", "--dst", DEVICE, "--dst-mac",
                                                      DEVICE_MAC, "--udp", "--dport", "9", "--rate", "3000",
                                                      "--duration", "2"])
    finally:
        dl.cmd("tc qdisc del dev dl-eth1 root")
    during = flooded[flooded.stime < flooded.stime.min() + 2.0]   # the connections made while it floods
    print(f"synack median quiet {np.nanmedian(quiet.synack) * 1000:.2f} ms, under the flood "
          f"{np.nanmedian(during.synack) * 1000:.2f} ms over {during.synack.notna().sum()} handshakes")
    assert during.synack.notna().sum() >= 5
    assert np.nanmedian(during.synack) >= max(0.020, 10 * np.nanmedian(quiet.synack))
