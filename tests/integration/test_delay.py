"""Delay as evidence, measured for real: 50 ms added on a device's path (a userspace delay line,
scripts/traffic/delayline.py: this kernel has no netem) shows in the records' handshake split by
50 +- 10 ms, on the server side (synack) and not on the client side (ackdat).

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

CLIENT, DEVICE = "10.0.9.11", "10.0.9.12"
CONNECTIONS = 20
SERVER = ("import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
          "s.bind(('0.0.0.0',8080));s.listen(64);s.settimeout(1)\nend=time.time()+{seconds}\n"
          "while time.time()<end:\n try:\n  c,_=s.accept();c.close()\n except OSError:\n  pass\n")
CLIENTS = ("import socket,time\nfor _ in range({n}):\n c=socket.create_connection(('{dst}',8080),timeout=2)\n"
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
            dv = net.addHost("dv", cls=topo.OffloadOffHost, ip=f"{DEVICE}/24", mac="00:00:00:00:0d:0c")
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


def _handshakes(net, workdir, delay_ms: float) -> pd.DataFrame:
    """CONNECTIONS TCP handshakes from dc to dv through a delay line of delay_ms; their records."""
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
        out = dc.cmd(f"{sys.executable} -c \"{CLIENTS.format(n=CONNECTIONS, dst=DEVICE)}\" && echo done")
        assert "done" in out, out
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
